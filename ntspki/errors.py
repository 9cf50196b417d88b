"""The one exception type the CLI turns into a one-line error, and the one wording of an OSError."""

import errno
import re


class NtspkiError(Exception):
    """A user-facing failure: the message is printed as one line, exit status `exit_code`."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


# The last call that failed -> what it was doing, for "cannot OPERATION PATH: REASON (FIX)".
_OPERATIONS = {
    "mkdir": "create directory",
    "makedirs": "create directory",
    "open": "open",
    "read_bytes": "read",
    "read_text": "read",
    "write_bytes": "write",
    "write_text": "write",
    "replace": "replace",
    "rename": "rename",
    "chmod": "change the mode of",
    "fchmod": "change the mode of",
    "chown": "change the owner of",
    "fchown": "change the owner of",
    "unlink": "remove",
    "rmdir": "remove",
    "symlink": "create the link",
    "listdir": "list",
    "iterdir": "list",
    "scandir": "list",
    "stat": "look at",
    "touch": "create",
    "fsync": "sync",
    "connect": "connect to",
}
_FIXES = {
    errno.EACCES: "run it as root or as the owner of that path, or give a --home you can write",
    errno.EPERM: "run it as root or as the owner of that path, or give a --home you can write",
    errno.EROFS: "the file system is read-only: remount it read-write, or give a --home elsewhere",
    errno.ENOSPC: "free some space on that file system",
    errno.EDQUOT: "free some space (the disk quota is full)",
    errno.ENOENT: "check the path (a parent directory may be missing)",
    errno.ENOTDIR: "a part of the path is a file, not a directory: check the path",
    errno.EEXIST: "something is already there: remove it or choose another path",
}


def describe_os_error(e: OSError) -> str:
    """One line for an OSError nothing below caught: the operation, the path, why, and what to do."""
    import traceback

    operation = "use"
    frames = traceback.extract_tb(e.__traceback__)
    if frames:
        last = frames[-1]
        if last.name in _OPERATIONS and "ntspki" not in last.filename:
            operation = _OPERATIONS[last.name]
        else:
            called = re.findall(r"\.(\w+)\(", last.line or "")
            operation = next((_OPERATIONS[c] for c in reversed(called) if c in _OPERATIONS), operation)
    path = f" {e.filename}" if getattr(e, "filename", None) else ""
    if getattr(e, "filename2", None):
        path += f" to {e.filename2}"
    fix = _FIXES.get(e.errno or 0)
    return f"cannot {operation}{path}: {e.strerror or e}" + (f" ({fix})" if fix else "")
