"""How live/NAME moves from one version of a lineage to the next in one step, and how it is read.

    HOME/live/NAME -> .NAME.vN                       one symlink: all a switch changes
    HOME/live/.NAME.vN/{privkey,cert,chain,fullchain}.pem -> ../../archive/NAME/{kind}N.pem

The paths live/NAME/{kind}.pem and what they hold stay certbot's; only live/NAME itself became a
link. A version directory is complete (and fsynced, when durable) before anything refers to it and
never changes afterwards; the switch renames one new symlink over live/NAME. So a reader that
enters live/NAME once (a directory fd, as `read_live_dir` does, or a shell's `cd`) gets the four
files of one version, and a SIGKILL at any moment leaves live/NAME at the old version or the new.
certbot switches its four links one by one; its live directories are still read here, and a read
that overlaps such a switch is retried or reported (`InconsistentLineage`), never mixed.

A home of the earlier layout (live/NAME a real directory of four links) is converted by its next
write: renameat2(RENAME_EXCHANGE) swaps the directory and the new link in one step. Where the file
system cannot, the directory is renamed aside (.NAME.old) for the instant before the link takes its
place; a run killed in that instant is undone by the next write (`settle`).

The next write of a lineage removes what a killed one left (`tidy`): the temp link, version
directories other than the live one, and archive versions that are incomplete or never went live
(newer than both live/ and the ledger's newest row). Every step is announced to `on_step` (a
no-op; the crash tests stop the process there and SIGKILL it).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ntspki.errors import NtspkiError
from ntspki.store import fsutil

FILES = ("privkey", "cert", "chain", "fullchain")
STEPS = (
    "archive-privkey",
    "archive-cert",
    "archive-chain",
    "archive-fullchain",  # the archive version is complete (not live yet)
    "version-dir",
    "version-linked",  # live/.NAME.vN is complete
    "switch-link",  # live/.NAME.tmp -> .NAME.vN exists
    "set-aside",  # earlier layout, no RENAME_EXCHANGE: live/NAME is missing for this instant
    "exchanged",  # earlier layout: live/NAME is the new link, the old directory is at .NAME.tmp
    "switched",  # live/NAME is the new version
)
# The largest file a lineage holds: a key or a chain of a few certificates is a few KiB.
MAX_FILE = 1 << 20
_ARCHIVE_FILE = re.compile(r"(privkey|cert|chain|fullchain)(\d+)\.pem")


def _no_step(name: str) -> None:
    pass


on_step: Callable[[str], None] = _no_step


def version_dir(name: str, version: int) -> str:
    return f".{name}.v{version}"


def _is_version_dir(name: str, entry: str) -> bool:
    return re.fullmatch(rf"\.{re.escape(name)}\.v\d+", entry) is not None


def _temp_link(name: str) -> str:
    return f".{name}.tmp"  # one writer at a time (the home lock): a fixed name, found by `tidy`


def _aside(name: str) -> str:
    return f".{name}.old"


def archive_numbers(archive: Path) -> dict[int, set[str]]:
    """Version number -> the kinds of file archive/NAME holds for it (complete: all of FILES)."""
    found: dict[int, set[str]] = {}
    try:
        entries = os.listdir(archive)
    except FileNotFoundError:
        return found
    for entry in entries:
        if m := _ARCHIVE_FILE.fullmatch(entry):
            found.setdefault(int(m.group(2)), set()).add(m.group(1))
    return found


def linked_version(target: str) -> int | None:
    m = re.search(r"(\d+)\.pem$", target)
    return int(m.group(1)) if m else None


def live_version(live: Path, name: str) -> int | None:
    """The version live/NAME shows: its link's version directory, or (earlier layout, certbot) the
    newest version its four links name. None when there is no live/NAME."""
    link = f"{os.fspath(live)}/{name}"
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        return None
    except OSError:  # not a link: a directory of links
        found = {linked_version(t) for t in _links(Path(link)).values()}
        return max((v for v in found if v is not None), default=None)
    m = re.fullmatch(rf"\.{re.escape(name)}\.v(\d+)", target)
    return int(m.group(1)) if m else None


def _links(directory: Path) -> dict[str, str]:
    out = {}
    for kind in FILES:
        with contextlib.suppress(OSError):
            out[kind] = os.readlink(directory / f"{kind}.pem")
    return out


def _remove(path: Path) -> None:
    """Remove a link, file or (symlink-only) directory a killed run left; never follows links."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _create(path: str, data: bytes, mode: int, durable: bool) -> None:
    """A new file that nothing refers to yet: created 0600 (O_EXCL), then given `mode`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if mode != 0o600:
            os.fchmod(fd, mode)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def settle(live: Path, name: str) -> int | None:
    """Undo a conversion killed while live/NAME was set aside; the version live/NAME shows."""
    version = live_version(live, name)
    base = os.fspath(live)  # strings: a batch settles every lineage it writes
    if version is None and not os.path.lexists(f"{base}/{name}"):
        aside = f"{base}/{_aside(name)}"
        if os.path.isdir(aside) and not os.path.islink(aside):
            os.rename(aside, f"{base}/{name}")
            version = live_version(live, name)
    return version


def tidy(live: Path, archive: Path, name: str, keep: set[int], newest_recorded: int | None) -> None:
    """Remove what killed writes of NAME left. `keep`: versions in use (live, or being written
    by this process); archive versions above every kept one and the ledger's newest never went
    live. Version directories go before archive files, so no link ever dangles into a removal."""
    link = live / name
    if os.path.lexists(link):
        _remove(live / _aside(name))
    _remove(live / _temp_link(name))
    numbers = archive_numbers(archive)
    current = live_version(live, name)
    for v in numbers:
        if v != current and v not in keep:
            _remove(live / version_dir(name, v))
    limit = max([*keep, newest_recorded or 0])
    for v, kinds in numbers.items():
        if v not in keep and (kinds != set(FILES) or v > limit):
            for kind in kinds:
                os.unlink(archive / f"{kind}{v}.pem")
    with contextlib.suppress(FileNotFoundError):
        for entry in os.listdir(archive):
            if entry.startswith(".") and entry.endswith(".tmp"):  # atomic_write's, killed
                os.unlink(archive / entry)


def prepare(live: Path, archive: Path, name: str, version: int, files: dict[str, bytes], durable: bool) -> None:
    """Version `version`'s archive files and its complete version directory; live/ unchanged."""
    # Created in place: nothing refers to them before the version directory does, and a version
    # that never went live is removed by the next write (`tidy`), however far it got. (Plain
    # strings here: a batch does this a thousand times, and pathlib's joins cost more than the calls.)
    arch, vdir = os.fspath(archive), f"{os.fspath(live)}/{version_dir(name, version)}"
    for kind in FILES:
        _create(f"{arch}/{kind}{version}.pem", files[kind], 0o600 if kind == "privkey" else 0o644, durable)
        on_step(f"archive-{kind}")
    if durable:
        fsutil.fsync_dir(archive)
    os.mkdir(vdir, 0o700)
    on_step("version-dir")
    for kind in FILES:
        os.symlink(f"../../archive/{name}/{kind}{version}.pem", f"{vdir}/{kind}.pem")
    if durable:
        fsutil.fsync_dir(Path(vdir))
        fsutil.fsync_dir(live)
    on_step("version-linked")


def switch(live: Path, name: str, version: int, durable: bool) -> None:
    """Point live/NAME at version `version` in one rename, then drop the previous version's directory."""
    link, tmp = f"{os.fspath(live)}/{name}", f"{os.fspath(live)}/{_temp_link(name)}"
    try:
        previous: str | None = os.readlink(link)
        earlier = False
    except FileNotFoundError:
        previous, earlier = None, False
    except OSError:  # not a link: the earlier layout, a directory of links
        previous, earlier = None, True
    try:
        os.symlink(version_dir(name, version), tmp)
    except FileExistsError:  # a killed run's
        _remove(Path(tmp))
        os.symlink(version_dir(name, version), tmp)
    on_step("switch-link")
    if earlier:  # convert it
        if fsutil.exchange(Path(tmp), Path(link)):
            on_step("exchanged")
        else:
            aside = f"{os.fspath(live)}/{_aside(name)}"
            os.rename(link, aside)
            on_step("set-aside")
            os.rename(tmp, link)
            tmp = aside
        _remove(Path(tmp))  # the old directory of links
    else:
        os.replace(tmp, link)
    on_step("switched")
    if durable:
        fsutil.fsync_dir(live)
    if previous is not None and previous != version_dir(name, version) and _is_version_dir(name, previous):
        # Readers that entered it a moment ago retry on the new one (`read_live_dir`).
        _remove(live / previous)


def remove_version(live: Path, archive: Path, name: str, version: int) -> None:
    """Take back a prepared version that never went live (a batch that failed part-way)."""
    _remove(live / version_dir(name, version))
    for kind in FILES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(archive / f"{kind}{version}.pem")


# ---- reading ------------------------------------------------------------------------------------


@dataclass
class Lineage:
    """A consistent, readable version of a lineage's four files."""

    name: str
    version: int
    live_dir: Path
    privkey: bytes
    cert: bytes
    chain: bytes
    fullchain: bytes


class InconsistentLineage(NtspkiError):
    """live/ points at files from different versions, or a file is missing (e.g. mid-renewal)."""


class _Moved(Exception):
    """The directory read from stopped being the live one (a switch, or certbot relinking)."""


def read_live_dir(live_dir: Path, name: str | None = None, attempts: int = 20) -> Lineage:
    """Read a certbot-style live directory (ntspki's or certbot's) as one consistent version.

    The directory is opened once and the four files are opened relative to it, so all of them
    come from the version directory live/NAME named at that moment; a switch that removes that
    directory mid-read, or a certbot relink during the read, makes it start over."""
    live_dir = Path(live_dir)
    name = name or live_dir.name
    for _ in range(attempts):
        try:
            dfd = os.open(live_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NtspkiError(f"no lineage {name!r} (no {live_dir})")
        except OSError as e:
            raise NtspkiError(f"cannot read {live_dir}: {e.strerror}")
        try:
            return _read_at(dfd, live_dir, name)
        except _Moved:
            continue
        finally:
            os.close(dfd)
    raise InconsistentLineage(f"lineage {name!r}: {live_dir} kept changing while it was read")


def _still_live(dfd: int, live_dir: Path) -> bool:
    try:
        st, now = os.fstat(dfd), os.stat(live_dir)
    except FileNotFoundError:
        return False
    return st.st_nlink > 0 and (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)


def _readlink_at(dfd: int, entry: str) -> str | None:
    try:
        return os.readlink(entry, dir_fd=dfd)
    except OSError:  # a plain file (a copied lineage), or gone (the caller finds out on open)
        return None


def _read_at(dfd: int, live_dir: Path, name: str) -> Lineage:
    data: dict[str, bytes] = {}
    targets = {kind: _readlink_at(dfd, f"{kind}.pem") for kind in FILES}
    for kind in FILES:
        entry = f"{kind}.pem"
        try:
            data[kind] = fsutil.read_bounded(entry, MAX_FILE, f"lineage {name!r}", binary=True, exit_code=1, dir_fd=dfd)
        except NtspkiError as e:
            if not isinstance(e.__cause__, FileNotFoundError):
                raise
            if not _still_live(dfd, live_dir):
                raise _Moved from None
            raise InconsistentLineage(f"lineage {name!r}: {entry} is missing") from None
    if {kind: _readlink_at(dfd, f"{kind}.pem") for kind in FILES} != targets:
        raise _Moved  # relinked in place while read (certbot, or ntspki before version directories)
    versions = {linked_version(t) for t in targets.values() if t is not None}
    if len(versions) > 1:
        raise InconsistentLineage(
            f"lineage {name!r}: live/ links point at different versions {sorted(map(str, versions))}"
        )
    version = versions.pop() if versions else 0
    return Lineage(name, version or 0, live_dir, data["privkey"], data["cert"], data["chain"], data["fullchain"])
