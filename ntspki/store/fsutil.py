"""Atomic, permission-safe file writes and an exclusive lock.

Every file ntspki writes goes through `atomic_write`: a temp file in the destination directory,
created 0600 so nobody else can read it even for an instant, given its final owner and mode while
it is still private, fsynced, then renamed over the destination and the directory fsynced.
With durable=False the two fsyncs are left out: a batch makes everything durable at once at its
end (`Home.sync`), and a reader still never sees a partial file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(path: Path | str) -> str:
    """A new name beside `path` for building a file that is then renamed or linked into place
    (the name `remove_stale_temps(path)` knows)."""
    head, slash, name = os.fspath(path).rpartition("/")
    return f"{head}{slash}.{name}.{secrets.token_hex(4)}.tmp"


_TEMP = re.compile(r"\.(.+)\.[0-9a-f]{8}\.tmp")


def temp_for(name: str) -> str | None:
    """The file name an `atomic_write`/`atomic_symlink` temp file called `name` was made for, or None."""
    m = _TEMP.fullmatch(name)
    return m.group(1) if m else None


def remove_stale_temps(path: Path | str) -> list[Path]:
    """Remove the temp files that `atomic_write(path)` or `atomic_symlink(..., path)` leaves when
    its process is killed before the rename (for a key: a complete private-key copy). Only for a
    caller that holds the lock every writer of `path` takes: a live writer's temp file looks the same."""
    path = Path(path)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if temp_for(entry.name) == path.name and not entry.is_dir(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    if removed:
        fsync_dir(path.parent)
    return removed


def atomic_write(
    path: Path | str,
    data: bytes,
    mode: int = 0o644,
    uid: int = -1,
    gid: int = -1,
    durable: bool = True,
) -> None:
    # Plain strings and os calls: a batch writes a thousand renewal files through here, and
    # pathlib and a buffered file object cost more than the system calls themselves.
    path = os.fspath(path)
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        if durable:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd != -1:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(Path(path).parent)


def atomic_symlink(target: str, link: Path) -> None:
    """Point `link` at `target`, replacing any existing link in one rename."""
    tmp = temp_path(link)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def make_private_dir(path: Path, mode: int = 0o700) -> None:
    """mkdir -p with `mode` on every directory created, and `mode` enforced on `path` itself
    when it already existed (a new one has it: the umask only ever removes bits). A symlink is
    left alone: chmod would change its target, which may be anywhere (keys are 0600 regardless)."""
    try:
        path.mkdir(mode=mode, parents=True)
    except FileExistsError:
        if not os.path.islink(path):
            os.chmod(path, mode)


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (renameat2 RENAME_EXCHANGE): nobody ever sees neither.
    False when the kernel or file system cannot (the caller then renames in two steps)."""
    import ctypes
    import errno

    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


@contextlib.contextmanager
def locked(lock_path: Path, shared: bool = False, wait: bool = True):
    """An flock on `lock_path`, held for the duration of the block (released on any exit, crash
    too). With wait=False a lock held elsewhere raises BlockingIOError at once."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        yield
    finally:
        os.close(fd)


# ---- bounded reads of input files ------------------------------------------------------------------

KIB, MIB = 1 << 10, 1 << 20
PEM_LIMIT = MIB  # a key, a certificate or a chain: a few KiB in practice


def read_bounded(
    path: Path | str, limit: int, what: str, *, binary: bool = False, exit_code: int = 2, dir_fd: int | None = None
) -> bytes:
    """The contents of the regular file `path`, at most `limit` bytes, or one clear NtspkiError.

    Every input file a user names goes through here: a device (/dev/zero), a FIFO or a directory
    is refused without blocking (opened O_NONBLOCK, then judged by fstat, so nothing can swap the
    file after the check), a file over `limit` is refused after reading at most limit+1 bytes, and
    unless `binary` the contents must be UTF-8 text without NUL bytes (the caller may .decode()).
    When the open itself failed, the OSError is the error's __cause__ (FileNotFoundError, ...).
    With `dir_fd`, `path` is relative to that open directory (a lineage read as one version)."""
    import stat

    from ntspki.errors import NtspkiError

    def refuse(why: str) -> NtspkiError:
        return NtspkiError(f"cannot read {what} {path}: {why}", exit_code)

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as e:
        raise refuse(e.strerror or str(e)) from e  # the cause tells missing from forbidden
    except ValueError:  # an embedded NUL in the path
        raise refuse("the path holds a NUL character") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise refuse("it is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise refuse("not a regular file (a device, FIFO or socket)")
        if st.st_size > limit:
            raise refuse(f"larger than {limit} bytes")
        chunks, size = [], 0
        while size <= limit:  # st_size can lie (/proc, a file still growing): the read decides
            chunk = os.read(fd, min(limit + 1 - size, MIB))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise refuse(e.strerror or str(e)) from None
    finally:
        os.close(fd)
    if size > limit:
        raise refuse(f"larger than {limit} bytes")
    data = b"".join(chunks)
    if not binary:
        if b"\0" in data:
            raise refuse("not a text file (it holds NUL bytes)")
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise refuse(f"not UTF-8 text (byte {e.start})") from None
    return data


def check_destination(path: Path | str, what: str, parents_made: bool = False) -> Path:
    """A file about to be written (atomic_write): a file name inside an existing directory (or
    one the caller makes: parents_made), not a directory itself. Checked before anything else is
    done, so a typo changes nothing."""
    from ntspki.errors import NtspkiError

    text = os.fspath(path)
    if not text or "\0" in text:
        raise NtspkiError(f"{what} {text!r}: not a usable file name", 2)
    p = Path(os.path.normpath(os.path.abspath(text)))
    if text.endswith("/") or os.path.isdir(p):
        raise NtspkiError(f"{what} {text!r} is a directory; name the file to write", 2)
    parent = next((q for q in p.parents if os.path.lexists(q)), None)
    if parent is not None and not os.path.isdir(parent):
        raise NtspkiError(f"{what} {text!r}: {parent} is not a directory", 2)
    if not parents_made and parent != p.parent:
        raise NtspkiError(f"{what} {text!r}: directory {p.parent} does not exist", 2)
    return p
