"""Who may do what to a file: the one POSIX access model and user/group resolver.

deploy asks "can the server's user read the key I am about to write?", check asks "can chronyd's
user read the key that is there?": both must get the same answer, so both ask here. Directories
are walked as the kernel does for the reader, symbolic links followed (the link's directory and
the target's both need search permission).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from ntspki.errors import NtspkiError

READ, WRITE, SEARCH = 4, 2, 1
_MAX_LINKS = 40  # as the kernel's ELOOP limit


class UnknownUser(NtspkiError):
    """A user or group name that does not exist on this host."""


MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to chown: never a real owner


def _number(value: str, what: str) -> int | None:
    """The id a decimal number names (a container's ids need not exist here), else None."""
    if not (value.isascii() and value.isdigit()):
        return None
    if len(value) > 10 or int(value) > MAX_ID:
        raise UnknownUser(f"no such {what} {value!r}: ids are 0..{MAX_ID}", 2)
    return int(value)


def user_id(owner: str) -> int:
    """A user name or a number (a container's uid need not exist here) -> uid."""
    number = _number(owner, "user")
    if number is not None:
        return number
    try:
        return pwd.getpwnam(owner).pw_uid
    except (KeyError, ValueError):  # ValueError: a NUL in the name
        raise UnknownUser(f"no such user {owner!r}", 2) from None


def group_id(group: str) -> int:
    """A group name or a number -> gid."""
    number = _number(group, "group")
    if number is not None:
        return number
    try:
        return grp.getgrnam(group).gr_gid
    except (KeyError, ValueError):
        raise UnknownUser(f"no such group {group!r}", 2) from None


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def owner_text(st: os.stat_result) -> str:
    """`user:group 0640`, as ls shows it."""
    return f"{user_name(st.st_uid)}:{group_name(st.st_gid)} {stat.S_IMODE(st.st_mode):04o}"


@dataclass(frozen=True)
class Reader:
    """A user a server runs as: what it may do to a file is decided by uid and groups alone."""

    name: str
    uid: int
    gid: int
    gids: frozenset[int]

    @classmethod
    def named(cls, name: str) -> Reader:
        """By name, or by number for a uid that exists only inside a container (no groups known)."""
        number = _number(name, "user")
        if number is not None:
            return cls(name, number, -1, frozenset())
        try:
            pw = pwd.getpwnam(name)
        except (KeyError, ValueError):
            raise UnknownUser(f"no such user {name!r}", 2) from None
        return cls(name, pw.pw_uid, pw.pw_gid, frozenset(os.getgrouplist(name, pw.pw_gid)))

    @property
    def group(self) -> str:
        return group_name(self.gid)

    def may(self, owner: int, group: int, mode: int, want: int) -> bool:
        """Classic UNIX permission check of `want` (READ, WRITE, SEARCH, or'ed) on owner:group mode.
        Root may do anything (chronyd and NTPsec drop root before reading, so it rarely is)."""
        if self.uid == 0:
            return True
        if owner == self.uid:
            bits = mode >> 6
        elif group in self.gids:
            bits = mode >> 3
        else:
            bits = mode
        return bits & want == want

    def may_stat(self, st: os.stat_result, want: int) -> bool:
        return self.may(st.st_uid, st.st_gid, st.st_mode, want)

    def blocked_dir(self, path: str | Path, _depth: int = 0) -> tuple[str, os.stat_result] | None:
        """The first existing directory on the way to `path` that this user cannot search (symbolic
        links followed, both the link's directory and the target's), or None. Directories that do
        not exist yet are not judged (deploy creates them 0755)."""
        parts = Path(os.path.abspath(path)).parts
        cur = "/"
        for i, part in enumerate(parts[1:], 1):
            try:
                st = os.stat(cur)
            except FileNotFoundError:
                return None
            if not self.may_stat(st, SEARCH):
                return cur, st
            nxt = os.path.join(cur, part)
            if os.path.islink(nxt) and _depth < _MAX_LINKS:
                target = os.path.normpath(os.path.join(cur, os.readlink(nxt)))
                return self.blocked_dir(os.path.join(target, *parts[i + 1 :]), _depth + 1)
            cur = nxt
        return None
