"""Where a deploy may write: destinations that are not symlinks, in directories only root can
write, readable by the server's user, and the very files the server's config makes it read."""

from __future__ import annotations

import os
from pathlib import Path

from ntspki.deploy.deployconfig import Target
from ntspki.errors import NtspkiError
from ntspki.servers import services
from ntspki.store import access


def _reader(target: Target) -> access.Reader:
    """Who the server reads its files as (root, who reads anything, when none of the service's
    users exists here)."""
    user = target.server_user or target.service.user()
    if user.isdigit() and target.group.isdigit():
        # A container's uid: its groups are unknown here, except a numeric target group, which is
        # how a container's gid is given (examples/docker/deploy.toml).
        gid = int(target.group)
        return access.Reader(user, int(user), gid, frozenset({gid}))
    try:
        return access.Reader.named(user)
    except access.UnknownUser:
        raise NtspkiError(f"target {target.name!r}: no such user {user!r} (server_user)")


def _existing(path: Path) -> Path:
    """`path` or its nearest ancestor that exists."""
    while not path.exists():
        path = path.parent
    return path


def check_destination(target: Target) -> None:
    """Refuse what would be unsafe or could not work, before anything is written."""
    for path in (target.key, target.cert):
        if path.is_symlink():
            raise NtspkiError(f"{path} is a symlink: refusing to write through it (point the target at the real file)")
        if path.exists() and not path.is_file():
            raise NtspkiError(f"{path} exists and is not a regular file")
        d = _existing(path.parent)
        st = d.stat()
        if st.st_mode & 0o002 or (st.st_mode & 0o020 and st.st_gid != 0):
            raise NtspkiError(
                f"{d} is writable by other users: they could replace the "
                f"{'key' if path == target.key else 'certificate'}; use a directory only "
                "root can write (e.g. /etc/chrony/nts)"
            )
        if st.st_uid not in (0, os.geteuid()):
            raise NtspkiError(
                f"{d} belongs to uid {st.st_uid}, who could replace the files; use a directory owned by root"
            )
    who = _reader(target)
    for path, mode in ((target.key, target.key_mode), (target.cert, target.cert_mode)):
        blocked = who.blocked_dir(path)
        if blocked is not None:
            raise NtspkiError(
                f"{target.service.name} reads {path} as {who.name}, who cannot enter {blocked[0]}: "
                "use a directory it can traverse (e.g. /etc/chrony/nts)"
            )
        if not who.may(target.uid, target.gid, mode, access.READ):
            raise NtspkiError(
                f"{target.service.name} reads {path.name} as {who.name}, who could not read it as "
                f"{target.owner}:{target.group} {mode:04o} (chronyd fails with 'Could not set credentials : "
                f"Error while reading file'); use group {target.service.group()} and mode 0640"
            )


def _same_file(a: Path, b: Path) -> bool:
    return a == b or os.path.realpath(a) == os.path.realpath(b)


def check_server_reads(target: Target) -> None:
    """Refuse a target whose key and certificate are not the files the server's config makes it
    read: the restart would load something else, the probe would fail and the run roll back."""
    found = services.files_read(target.service, target.service_conf)
    if found is None:
        return  # no config to hold the target to (a copy, or none found): the probe decides
    if any(_same_file(k, target.key) and _same_file(c, target.cert) for k, c, _ in found):
        return
    lines = "; ".join(services.conf_lines(target.service, target.key, target.cert)[:3])
    if not found:
        raise NtspkiError(
            f"{target.service_conf} makes {target.service.name} read no NTS key and certificate (it serves no "
            f"NTS): add `{lines}` to it, or set service_conf if the server reads another file"
        )
    key, cert, where = found[0]
    raise NtspkiError(
        f"{target.service.name} reads its key {key} and certificate {cert} ({where}), but target "
        f"{target.name!r} writes {target.key} and {target.cert}: point the target's key and cert at the files "
        f"the server reads, or change {where} to `{lines}`"
    )
