"""`make install` / `make uninstall` (packaging/install.py) and the wheel `pipx install` takes."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _make(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        ["make", "-C", str(ROOT), *args, f"PYTHON={sys.executable}"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


def test_make_install_puts_everything_where_it_is_found_and_uninstall_removes_exactly_that(tmp_path):
    prefix = tmp_path / "usr-local"
    other = prefix / "share" / "man" / "man1" / "someone-else.1"  # not ours: must survive uninstall
    other.parent.mkdir(parents=True)
    other.write_text(".TH X 1\n")
    _make("install", f"PREFIX={prefix}")
    ntspki = prefix / "bin" / "ntspki"
    # The installed command runs from anywhere with nothing but PATH (as systemd and cron run it),
    # and not from this checkout: an `ntspki` package in the working directory is ignored.
    decoy = tmp_path / "cwd" / "ntspki"
    decoy.mkdir(parents=True)
    (decoy / "__main__.py").write_text("raise SystemExit('decoy')\n")
    env = {"PATH": f"{prefix / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(["ntspki", "--version"], capture_output=True, text=True, env=env, cwd=decoy.parent)
    assert proc.returncode == 0 and "ntspki, version" in proc.stdout, proc.stderr
    home = tmp_path / "home"
    proc = subprocess.run(
        ["ntspki", "--home", str(home), "ca", "create", "--no-passphrase"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0 and (home / "ca" / "root.pem").exists(), proc.stderr
    # man finds every page; the units' Documentation=man: links point at them.
    for page in ("ntspki", "ntspki-deploy", "ntspki-renew", "ntspki-watch"):
        found = subprocess.run(["man", "-M", str(prefix / "share" / "man"), "-w", page], capture_output=True, text=True)
        assert found.returncode == 0 and found.stdout.strip().startswith(str(prefix)), (page, found.stderr)
    # bash completion is where bash-completion looks (XDG_DATA_DIRS/bash-completion/completions) and works.
    bash = prefix / "share" / "bash-completion" / "completions" / "ntspki"
    assert "_NTSPKI_COMPLETE" in bash.read_text()
    assert (prefix / "share" / "zsh" / "site-functions" / "_ntspki").exists()
    assert (prefix / "share" / "fish" / "vendor_completions.d" / "ntspki.fish").exists()
    words = subprocess.run(
        ["ntspki"],
        capture_output=True,
        text=True,
        env={**env, "COMP_WORDS": "ntspki dep", "COMP_CWORD": "1", "_NTSPKI_COMPLETE": "bash_complete"},
    )
    assert "plain,deploy" in words.stdout.splitlines(), words
    # The units call the installed command.
    for unit in ("ntspki-renew.service", "ntspki-watch.service"):
        text = (prefix / "lib" / "systemd" / "system" / unit).read_text()
        starts = [line for line in text.splitlines() if line.startswith("ExecStart=")]
        assert starts and all(line.startswith(f"ExecStart={ntspki} ") for line in starts), starts
    dropin = prefix / "share" / "doc" / "ntspki" / "examples" / "chrony.service.d" / "ntspki-recover.conf"
    assert f"ExecStartPre=-{ntspki} deploy" in dropin.read_text()

    _make("uninstall", f"PREFIX={prefix}")
    assert _files(tmp_path / "usr-local") == ["share/man/man1/someone-else.1"]
    assert not (prefix / "bin").exists() and not (prefix / "lib").exists()


def test_destdir_stages_an_install_for_prefix(tmp_path):
    dest = tmp_path / "stage"
    _make("install", f"DESTDIR={dest}", "PREFIX=/usr")
    wrapper = (dest / "usr" / "bin" / "ntspki").read_text()
    assert "/usr/lib/ntspki/venv/bin/python" in wrapper and str(dest) not in wrapper
    assert (dest / "usr" / "share" / "man" / "man1" / "ntspki.1").exists()
    assert (
        "ExecStart=/usr/bin/ntspki "
        in (dest / "usr" / "lib" / "systemd" / "system" / "ntspki-renew.service").read_text()
    )
    manifest = (dest / "usr" / "lib" / "ntspki" / "install-manifest").read_text().split()
    assert "/usr/bin/ntspki" in manifest and not any(str(dest) in line for line in manifest)
    _make("uninstall", f"DESTDIR={dest}", "PREFIX=/usr")
    assert _files(dest) == []


def test_the_wheel_carries_the_man_pages(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("ntspki-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    pages = sorted(p.name for p in (ROOT / "man").glob("*.1"))
    assert sorted(n.rsplit("/", 1)[1] for n in names if "/data/share/man/man1/" in n) == pages
    assert os.path.basename(wheel).startswith("ntspki-")
