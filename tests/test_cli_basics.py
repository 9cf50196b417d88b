"""CLI-wide promises: fast start, --help everywhere, man pages that render, and the demo."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ntspki.cli import COMMANDS
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("acme", "josepy", "watchdog", "OpenSSL")

# Runs the CLI in-process with argv[2:], then names the modules loaded from the comma-separated
# prefixes in argv[1] (a prefix matches itself and its submodules).
PROBE_IMPORTS = """
import sys
from ntspki.cli import main
try:
    main(sys.argv[2:])
except SystemExit:
    pass
wanted = sys.argv[1].split(',')
loaded = sorted(m for m in sys.modules if any(m == w or m.startswith(w + '.') for w in wanted))
sys.stderr.write('LOADED=' + ','.join(loaded) + '\\n')
"""


def _loaded_modules(args, home, prefixes) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE_IMPORTS, ",".join(prefixes), "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("LOADED=")]
    assert line, proc.stderr
    return [m for m in line[-1][7:].split(",") if m]


def _heavy_modules(args, home) -> list[str]:
    return sorted({m.split(".")[0] for m in _loaded_modules(args, home, HEAVY)})


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["ca", "--help"],
        ["issue", "--help"],
        ["list", "--help"],
        ["ca", "create", "--no-passphrase"],
        ["issue", "ntpserver", "--san", "::1"],
        ["list"],
        ["show", "ntpserver"],
    ],
)
def test_fast_start_never_imports_heavy_modules(args, tmp_path):
    home = tmp_path / "home"
    if args[0] in ("issue", "list", "show") and "--help" not in args:
        run_cli("ca", "create", "--no-passphrase", home=home, check=True)
        if args[0] != "issue":
            run_cli("issue", "ntpserver", home=home, check=True)
    assert _heavy_modules(args, home) == []


def test_help_lists_the_commands_without_loading_cryptographys_key_modules(tmp_path):
    """`ntspki --help` imports every command module for its one-line help: they must not pull in
    ntspki.pki (cryptography's key and serialization modules), which is start-up cost
    (benchmarks/startup.py) a hook or timer pays on every call."""
    light = ("ntspki.pki", "cryptography.hazmat.primitives.serialization")
    assert _loaded_modules(["--help"], tmp_path / "home", light) == []


def test_every_command_is_there_with_help_and_a_man_page():
    man_text = "\n".join(p.read_text() for p in (ROOT / "man").glob("*.1"))
    for name in COMMANDS:
        proc = run_cli(name, "--help")
        assert proc.returncode == 0, (name, proc.stderr)
        assert "Usage:" in proc.stdout
        has_page = (ROOT / "man" / f"ntspki-{name}.1").exists() or re.search(rf'^\.SS "ntspki {name}\b', man_text, re.M)
        assert has_page, f"no man page section for {name}"


def test_man_pages_render_without_warnings():
    pages = sorted((ROOT / "man").glob("*.1"))
    assert pages
    for page in pages:
        proc = subprocess.run(
            ["man", "--warnings", "-l", str(page)],
            capture_output=True,
            text=True,
            env={**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": "0"},
            timeout=60,
        )
        assert proc.returncode == 0, (page, proc.stderr)
        assert proc.stderr.strip() == "", f"{page.name}: {proc.stderr}"
        assert "NAME" in re.sub(".\b", "", proc.stdout)


def test_unknown_command_and_bad_option_are_usage_errors():
    proc = run_cli("frobnicate")
    assert proc.returncode == 2 and "No such command" in proc.stderr
    proc = run_cli("issue", "--days", "x", "a")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_demo_end_to_end(workdir):
    """The README's first command: demo CA + cert, real chronyd, real chrony clients by every name."""
    proc = run_cli("demo", "--dir", workdir / "demo", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] is True
    assert result["clients"] == {"ntpserver": True, "ntpserver-ipv6": True, "127.0.0.1": True}
    key = Path(result["key"])
    assert oct(key.stat().st_mode & 0o777) == "0o640"
    assert any(line.startswith("ntsservercert ") for line in result["server_conf"])
    # A second run reuses the demo CA and makes a new version.
    again = run_cli("demo", "--dir", workdir / "demo")
    assert again.returncode == 0, again.stderr
    assert "RESULT: every client synchronised over NTS" in again.stdout
    assert "Using the demo CA" in again.stdout
