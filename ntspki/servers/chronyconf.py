"""Reading chrony.conf the way chronyd does: `include` globs, `confdir` (*.conf, first directory
wins for a file name, alphabetical order) and `sourcedir` (*.sources, source lines only)."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

from ntspki.errors import NtspkiError
from ntspki.nts import NTP_PORT, NTSKE_PORT

# Debian/Ubuntu first, then RHEL/Fedora/SUSE/Arch.
DEFAULT_PATHS = ("/etc/chrony/chrony.conf", "/etc/chrony.conf")
COMMENT_STARTS = "#%;!"
# Options of server/pool/peer that take a value (so that a value is never mistaken for `nts`).
SOURCE_OPTIONS_WITH_VALUE = {
    "minpoll",
    "maxpoll",
    "key",
    "port",
    "ntsport",
    "certset",
    "maxdelay",
    "maxdelayratio",
    "maxdelaydevratio",
    "mindelay",
    "asymmetry",
    "offset",
    "minsamples",
    "maxsamples",
    "filter",
    "polltarget",
    "version",
    "presend",
    "extfield",
    "minstratum",
    "maxsources",
}
SOURCE_DIRECTIVES = ("server", "pool", "peer")


@dataclass
class Directive:
    name: str
    args: list[str]
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Source:
    """A `server`/`pool`/`peer` line."""

    kind: str
    host: str
    nts: bool
    ntsport: int
    certset: int
    port: int
    directive: Directive


@dataclass
class ChronyConf:
    path: str
    directives: list[Directive] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # unreadable included files and the like
    # included paths that are there but no regular file (a FIFO, a device): chronyd -p would block
    not_files: list[str] = field(default_factory=list)

    def all(self, name: str) -> list[Directive]:
        return [d for d in self.directives if d.name == name]

    def last(self, name: str) -> Directive | None:
        found = self.all(name)
        return found[-1] if found else None

    def value(self, name: str, default: str | None = None) -> str | None:
        d = self.last(name)
        return d.args[0] if d and d.args else default

    def ntsport(self) -> int:
        """The NTS-KE port chronyd listens on (4460 unless set to a number)."""
        port = self.value("ntsport")
        return int(port) if port and port.isdigit() else NTSKE_PORT

    def sources(self) -> list[Source]:
        out = []
        for d in self.directives:
            if d.name not in SOURCE_DIRECTIVES or not d.args:
                continue
            opts: dict[str, int] = {"nts": False, "ntsport": NTSKE_PORT, "certset": 0, "port": NTP_PORT}
            tokens = d.args[1:]
            i = 0
            while i < len(tokens):
                tok = tokens[i]
                if tok in SOURCE_OPTIONS_WITH_VALUE:
                    if tok in ("ntsport", "certset", "port") and i + 1 < len(tokens) and tokens[i + 1].isdigit():
                        opts[tok] = int(tokens[i + 1])
                    i += 2
                    continue
                if tok == "nts":
                    opts["nts"] = True
                i += 1
            out.append(Source(d.name, d.args[0], bool(opts["nts"]), opts["ntsport"], opts["certset"], opts["port"], d))
        return out


def default_path() -> str:
    for path in DEFAULT_PATHS:
        if os.path.exists(path):
            return path
    return DEFAULT_PATHS[0]


MAX_CONF_BYTES = 4 << 20


def _read(path: str) -> str:
    """Bounded, and never blocking on a FIFO or device; bytes chronyd would skip in comments may
    be anything, so they are replaced rather than refused."""
    from ntspki.store import fsutil

    if os.path.realpath(path) == os.devnull:
        return ""  # an empty configuration, as chronyd reads it (the one device that is a file)
    return fsutil.read_bounded(path, MAX_CONF_BYTES, "chrony config", binary=True).decode(errors="replace")


def parse(path: str | Path | None = None) -> ChronyConf:
    path = str(path or default_path())
    conf = ChronyConf(path)
    try:
        text = _read(path)
    except NtspkiError as e:
        raise NtspkiError(str(e), 3) from None
    _parse_text(conf, text, path, depth=0)
    return conf


def _parse_file(conf: ChronyConf, path: str, depth: int, sources_only: bool = False) -> None:
    try:
        text = _read(path)
    except NtspkiError as e:
        conf.problems.append(str(e))
        if os.path.exists(path) and not os.path.isfile(path):
            conf.not_files.append(path)
        return
    _parse_text(conf, text, path, depth, sources_only)


def _parse_text(conf: ChronyConf, text: str, path: str, depth: int, sources_only: bool = False) -> None:
    if depth > 10:
        conf.problems.append(f"{path}: includes nested more than 10 deep (a loop?)")
        return
    conf.files.append(path)
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in COMMENT_STARTS:
            continue
        name, *args = line.split()
        name = name.lower()
        if sources_only and name not in SOURCE_DIRECTIVES:
            conf.problems.append(f"{path}:{lineno}: {name} is not allowed in a sources file")
            continue
        d = Directive(name, args, path, lineno)
        if name == "include" and args:
            for included in sorted(glob.glob(args[0])):
                _parse_file(conf, included, depth + 1)
        elif name == "confdir":
            for included in _dir_files(args, ".conf"):
                _parse_file(conf, included, depth + 1)
        elif name == "sourcedir":
            for included in _dir_files(args, ".sources"):
                _parse_file(conf, included, depth + 1, sources_only=True)
        conf.directives.append(d)


def _dir_files(dirs: list[str], suffix: str) -> list[str]:
    """Files ending in `suffix` from `dirs`, a name seen in an earlier directory shadowing later ones,
    in alphabetical order of file name (chrony.conf(5), confdir)."""
    chosen: dict[str, str] = {}
    for d in dirs:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in names:
            if n.endswith(suffix) and n not in chosen and os.path.isfile(os.path.join(d, n)):
                chosen[n] = os.path.join(d, n)
    return [chosen[n] for n in sorted(chosen)]


def chronyd_verdict(path: str, timeout: float = 10.0) -> str | None:
    """chronyd's own parser on `path` (`chronyd -p`, which parses, prints and exits): "ok",
    "refused: <chronyd's words>", "unknown: <why>", or None when chronyd is not installed."""
    import shutil
    import subprocess

    chronyd = shutil.which("chronyd") or next(
        (p for p in ("/usr/sbin/chronyd", "/sbin/chronyd") if os.path.exists(p)), None
    )
    if chronyd is None:
        return None
    try:
        proc = subprocess.run(
            [chronyd, "-p", "-f", str(path)],
            capture_output=True,
            text=True,
            errors="replace",  # chronyd echoes the bytes of the file it parsed, whatever they are
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return f"unknown: chronyd -p took more than {timeout:.0f} s"
    except OSError as e:
        return f"unknown: {chronyd}: {e.strerror}"
    if proc.returncode == 0:
        return "ok"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    words = lines[-1] if lines else f"exit status {proc.returncode}"
    # "2026-...Z Fatal error : Invalid directive at line 2 in file x.conf" -> from "Fatal error" on
    return "refused: " + words[words.find("Fatal error") :] if "Fatal error" in words else "refused: " + words
