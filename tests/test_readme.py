"""The README's commands and the demo's closing hint run as typed (see tests/readme_lab.py for the
lab they run in, and README "Development" for what it substitutes)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from ntspki.servers import lab

ROOT = Path(__file__).resolve().parent.parent


def typical_use_blocks() -> list[str]:
    """Every ```sh block of the README's "Typical use" section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Typical use\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)^```$", section, re.S | re.M)


def test_the_readme_typical_use_runs_as_typed():
    blocks = typical_use_blocks()
    assert len(blocks) >= 3 and any("ntspki acme issue" in b for b in blocks)
    work = lab.make_workdir("ntspki-readme-")
    try:
        (work / "blocks.json").write_text(json.dumps(blocks))
        proc = subprocess.run(
            [
                "unshare",
                "-m",
                "-n",
                "--propagation",
                "private",
                sys.executable,
                "-m",
                "tests.readme_lab",
                str(work),
                str(work / "blocks.json"),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run(["rm", "-rf", str(work)])
    for run in runs:
        assert run["returncode"] == 0, (
            f"README block failed:\n{run['block']}\n{run['stdout'][-3000:]}\n{run['stderr'][-3000:]}"
        )
    assert len(runs) == len(blocks)
    out = "\n".join(r["stdout"] for r in runs)
    # What the text says happens does: served, probed as a client, audited, listed.
    assert "ntspki deploy: " in out and "deployed and served on 127.0.0.1:4460" in out, out
    assert "ntsserverkey /etc/chrony/nts/ntpserver.key" in out  # what `issue` advised
    assert "OK: 0 critical" in out, out
    assert "time.example.net" in out


def test_the_demo_hint_is_a_command_the_readme_runs():
    """The demo's closing "for your own site" line names commands the README test runs."""
    from ntspki.cli import demo

    hint = demo.OWN_SITE_HINT
    readme = "\n".join(typical_use_blocks())
    for command in hint.split("; "):
        assert command.strip() in readme, command
