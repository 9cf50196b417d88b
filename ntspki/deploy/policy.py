"""Where a deploy may write: destinations that are not symlinks, in directories only root can
write, readable by the server's user, and the very files the server's config makes it read; and how
the server must load them (restart or reload, and what to warn about before a restart)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ntspki.deploy.deployconfig import Target
from ntspki.deploy.source import Pair
from ntspki.errors import NtspkiError
from ntspki.servers import services
from ntspki.store import access

log = logging.getLogger("ntspki.deploy")


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


def load_command(
    target: Target, command: list[str], current: Pair | None, new: Pair, owed: str | None
) -> tuple[list[str], bool, str | None]:
    """(command, whether it must be a full restart, a warning) to make the server load `new` over
    `current`: the service's own action, unless it reloads and this change needs a restart
    (services.needs_restart; also when an interrupted run owes one). A configured command is
    the operator's: it is kept, with a warning that it must restart."""
    t = target
    if t.service.action != "reload" or (current is None and owed != "restart"):
        return command, False, None
    old_type = current.key_type if current is not None else None
    if owed != "restart" and not services.needs_restart(t.service, old_type, new.key_type):
        return command, False, None
    why = (
        "an interrupted deploy changed the key type"
        if owed == "restart"
        else f"the key type changes from {old_type} to {new.key_type}"
    ) + f", which {t.service.name} loads only on a restart"
    if t.restart_command:
        msg = f"WARNING {t.name}: {why}: the configured restart_command must restart it, not reload it"
        log.warning(msg)
        return command, True, msg
    log.info("%s: %s: restarting instead of reloading", t.name, why)
    return services.action_command(t.service, None, restart=True), True, None


def restart_warning(target: Target) -> str | None:
    """What to say before restarting chronyd when its configuration keeps no cookie keys."""
    t = target
    if t.service.name != "chrony" or t.service.action != "restart":
        return None
    facts = services.chrony_conf_facts(t.service_conf)
    if not facts["readable"]:
        return (
            f"{t.name}: cannot read chrony's configuration ({t.service_conf or 'not found'}) to check "
            "ntsdumpdir: set service_conf"
        )
    if not facts["ntsdumpdir"]:
        return (
            f"WARNING {t.name}: chronyd has no ntsdumpdir in {t.service_conf}: this restart makes "
            "new cookie keys, so every client's NTS cookies are rejected (NTSN) and all clients "
            f"must redo NTS-KE. Fix: add `ntsdumpdir /var/lib/chrony` to {t.service_conf}"
        )
    return None
