"""`make install` / `make uninstall`: ntspki in its own virtual environment, and everything an
operator reaches it by, recorded in a manifest so that uninstall removes exactly that.

    PREFIX/lib/ntspki/venv/                     the virtual environment (ntspki and its dependencies)
    PREFIX/lib/ntspki/install-manifest          every file and directory this install created
    PREFIX/bin/ntspki                           a wrapper (root's, systemd's and cron's `ntspki`)
    PREFIX/share/man/man1/ntspki*.1             `man ntspki`, `man ntspki-deploy`, ...
    PREFIX/share/bash-completion/completions/ntspki, PREFIX/share/zsh/site-functions/_ntspki,
    PREFIX/share/fish/vendor_completions.d/ntspki.fish
    PREFIX/lib/systemd/system/ntspki-{renew.service,renew.timer,watch.service}   (not enabled)
    PREFIX/share/doc/ntspki/examples/           deploy.toml, the chrony drop-in, the certbot hook

DESTDIR (staged installs, packaging) prefixes every path written but none written into a file.
Only the standard library: it runs with the system Python before anything is installed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MANIFEST = "install-manifest"
UNITS = ("ntspki-renew.service", "ntspki-renew.timer", "ntspki-watch.service")
EXAMPLE_BIN = "/usr/local/bin/ntspki"  # what the files in examples/ call
SHELLS = {  # shell -> (directory under PREFIX, file name)
    "bash": ("share/bash-completion/completions", "ntspki"),
    "zsh": ("share/zsh/site-functions", "_ntspki"),
    "fish": ("share/fish/vendor_completions.d", "ntspki.fish"),
}


class Layout:
    def __init__(self, prefix: str, destdir: str, unitdir: str | None):
        self.prefix = Path(prefix)
        if not self.prefix.is_absolute():
            sys.exit(f"install: PREFIX must be an absolute path, not {prefix!r}")
        self.destdir = Path(destdir) if destdir else None
        self.libdir = self.prefix / "lib" / "ntspki"
        self.venv = self.libdir / "venv"
        self.bin = self.prefix / "bin" / "ntspki"
        self.mandir = self.prefix / "share" / "man" / "man1"
        self.unitdir = Path(unitdir) if unitdir else self.prefix / "lib" / "systemd" / "system"
        self.docdir = self.prefix / "share" / "doc" / "ntspki" / "examples"

    def staged(self, path: Path) -> Path:
        """Where `path` (as the installed system sees it) is written now."""
        return self.destdir / path.relative_to("/") if self.destdir else path


class Installer:
    def __init__(self, layout: Layout):
        self.lay = layout
        self.created: list[Path] = []  # final paths, in creation order

    def mkdir(self, path: Path) -> None:
        missing = []
        while path != path.parent and not self.lay.staged(path).exists():
            missing.append(path)
            path = path.parent
        for d in reversed(missing):
            self.lay.staged(d).mkdir(mode=0o755)
            self.created.append(d)

    def write(self, path: Path, data: bytes, mode: int = 0o644) -> None:
        self.mkdir(path.parent)
        staged = self.lay.staged(path)
        tmp = staged.with_name(f".{staged.name}.tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, mode)
        os.replace(tmp, staged)
        self.created.append(path)
        print(f"  {path}")

    def run(self) -> None:
        lay = self.lay
        if lay.destdir:
            lay.destdir.mkdir(parents=True, exist_ok=True)
        if lay.staged(lay.libdir / MANIFEST).exists():
            uninstall(lay, quiet=True)  # a reinstall replaces the previous one completely
        self.mkdir(lay.libdir)
        venv = lay.staged(lay.venv)
        print(f"installing ntspki into {lay.venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        self.created.append(lay.venv)
        py = venv / "bin" / "python"
        with tempfile.TemporaryDirectory() as tmp:
            # A wheel, not the source tree: nothing in the venv refers back to this checkout.
            subprocess.run([str(py), "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp, str(REPO)], check=True)
            wheel = next(Path(tmp).glob("ntspki-*.whl"))
            subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True)
        # `python -I`: neither the caller's directory nor PYTHON* variables can change what runs
        # (it runs as root from timers and hooks).
        self.write(lay.bin, f'#!/bin/sh\nexec {lay.venv}/bin/python -I -m ntspki "$@"\n'.encode(), 0o755)
        for page in sorted((REPO / "man").glob("*.1")):
            self.write(lay.mandir / page.name, page.read_bytes())
        for shell, (subdir, name) in SHELLS.items():
            script = subprocess.run(
                [str(py), "-I", "-m", "ntspki"],
                env={**os.environ, "_NTSPKI_COMPLETE": f"{shell}_source"},
                capture_output=True,
                check=True,
            ).stdout
            self.write(lay.prefix / subdir / name, script)
        bin_path = str(lay.bin).encode()
        for unit in UNITS:
            self.write(
                lay.unitdir / unit, (REPO / "examples" / unit).read_bytes().replace(EXAMPLE_BIN.encode(), bin_path)
            )
        dropin = REPO / "examples" / "chrony.service.d" / "ntspki-recover.conf"
        self.write(
            lay.docdir / "chrony.service.d" / dropin.name, dropin.read_bytes().replace(EXAMPLE_BIN.encode(), bin_path)
        )
        self.write(lay.docdir / "deploy.toml", (REPO / "examples" / "deploy.toml").read_bytes())
        self.write(
            lay.docdir / "ntspki-certbot-deploy-hook",
            (REPO / "hooks" / "ntspki-certbot-deploy-hook").read_bytes(),
            0o755,
        )
        manifest = lay.libdir / MANIFEST
        lines = [str(p) for p in self.created] + [str(manifest)]
        self.write(manifest, ("\n".join(lines) + "\n").encode())
        print(f"done: {lay.bin} (man ntspki; uninstall with `make uninstall PREFIX={lay.prefix}`)")
        if str(lay.bin.parent) not in ("/usr/bin", "/bin"):
            print(f"note: cron's default PATH is /usr/bin:/bin: call {lay.bin} by its full path in crontabs")


def uninstall(lay: Layout, quiet: bool = False) -> None:
    manifest = lay.staged(lay.libdir / MANIFEST)
    try:
        entries = [Path(line) for line in manifest.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        sys.exit(
            f"uninstall: {manifest} does not exist: nothing installed with PREFIX={lay.prefix}"
            + (f" DESTDIR={lay.destdir}" if lay.destdir else "")
        )
    # Files and the venv first, then the directories this install created, deepest first, and
    # only when empty (something else may have been put there since).
    for path in reversed(entries):
        staged = lay.staged(path)
        if path == lay.venv:
            shutil.rmtree(staged, ignore_errors=True)
        elif staged.is_file() or staged.is_symlink():
            staged.unlink()
            if not quiet:
                print(f"  removed {path}")
    for path in sorted(entries, key=lambda p: len(p.parts), reverse=True):
        staged = lay.staged(path)
        if staged.is_dir() and not any(staged.iterdir()):
            staged.rmdir()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["install", "uninstall"])
    ap.add_argument("--prefix", default="/usr/local")
    ap.add_argument("--destdir", default="")
    ap.add_argument("--unitdir", default="")
    args = ap.parse_args()
    lay = Layout(args.prefix, args.destdir, args.unitdir or None)
    if args.action == "install":
        Installer(lay).run()
    else:
        uninstall(lay)


if __name__ == "__main__":
    main()
