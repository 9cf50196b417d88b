"""The journalled install: the only code that changes a destination.

Two files cannot be replaced in one atomic step, so between the key rename and the certificate
rename the destinations hold the new key and the old certificate. Both new files are complete on
disk (as hidden `.NAME.ntspki-new` files) before a journal file says "install these"; whoever takes
the lock next (deploy, watcher, certbot hook) finishes the renames first (`recover`). A crash
before the journal leaves the old pair untouched; after it, the new pair is completed.

"Restart owed" (`.NAME.crt.ntspki-restart-owed`) is written before the destinations change and
removed only after the restart command succeeded: once both files are in place nothing else on disk
tells a later run, which may not probe, that the server still serves the old pair.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ntspki.deploy.deployconfig import Target
from ntspki.deploy.source import Pair
from ntspki.deploy.steps import step
from ntspki.errors import NtspkiError
from ntspki.store import fsutil

log = logging.getLogger("ntspki.deploy")


def _staged(path: Path) -> Path:
    return path.parent / f".{path.name}.ntspki-new"


def _previous(path: Path) -> Path:
    return path.with_name(path.name + ".previous")


def _journal(target: Target) -> Path:
    return target.cert.parent / f".{target.cert.name}.ntspki-journal"


def _owed(target: Target) -> Path:
    return target.cert.parent / f".{target.cert.name}.ntspki-restart-owed"


def owe_restart(target: Target, full: bool = False) -> None:
    """Record, durably and before the destinations change, that the server must be restarted
    (or reloaded) to load them: a run killed after installing, before its restart, leaves this for
    the next run, which then restarts even when it probes nothing and finds the pair in place.
    `full`: a reload will not do (services.needs_restart); once owed, that stays owed until paid."""
    for p in (target.key, target.cert):
        _mkdirs(p.parent)
    owed = restart_owed(target)
    if owed is None or (full and owed == "reload"):
        record = {"key": str(target.key), "cert": str(target.cert), "restart": full}
        fsutil.atomic_write(_owed(target), json.dumps(record).encode(), 0o600)


def restart_owed(target: Target) -> str | None:
    """None, "reload" (the service's own action will do) or "restart" (a reload will not)."""
    if not os.path.lexists(_owed(target)):
        return None
    try:
        record = json.loads(fsutil.read_bounded(_owed(target), 64 << 10, "restart record", binary=True))
    except (NtspkiError, ValueError, RecursionError):
        return "restart"  # unreadable: the safe side
    return "reload" if isinstance(record, dict) and record.get("restart") is False else "restart"


def restart_paid(target: Target) -> None:
    """The restart (or reload) after the last install succeeded."""
    owed = _owed(target)
    if owed.exists():
        owed.unlink()
        fsutil.fsync_dir(owed.parent)


def _written(target: Target) -> list[Path]:
    """Every file a deploy of `target` writes with fsutil.atomic_write."""
    paths = [target.key, target.cert, _staged(target.key), _staged(target.cert)]
    paths += [_previous(target.key), _previous(target.cert), _journal(target), _owed(target)]
    return paths


def _meta(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid, st.st_mode & 0o7777


def read_pair(key_path: Path, cert_path: Path) -> Pair | None:
    """The pair at these paths (with owners and modes) if both exist and match, else None."""
    try:
        key_pem = fsutil.read_bounded(key_path, fsutil.PEM_LIMIT, "key", binary=True)
        cert_pem = fsutil.read_bounded(cert_path, fsutil.PEM_LIMIT, "certificate", binary=True)
        pair = Pair(key_pem, cert_pem, _meta(key_path), _meta(cert_path))
    except (OSError, NtspkiError):
        return None
    return pair if pair.matches() else None


def recover(target: Target) -> str | None:
    """Finish a deploy that a crash interrupted; drop staged files no journal asked for, and the
    temp files of writes a kill cut short (copies of the private key among them). Under the deploy lock."""
    for path in _written(target):
        for tmp in fsutil.remove_stale_temps(path):
            log.warning("%s: removed %s, left by an interrupted run", target.name, tmp)
    journal = _journal(target)
    staged_key, staged_cert = _staged(target.key), _staged(target.cert)
    if journal.exists():
        for staged, dest in ((staged_key, target.key), (staged_cert, target.cert)):
            if staged.exists():
                os.replace(staged, dest)
                fsutil.fsync_dir(dest.parent)
        journal.unlink()
        fsutil.fsync_dir(journal.parent)
        msg = f"{target.name}: finished an interrupted deploy (journal {journal})"
        log.warning(msg)
        return msg
    for staged in (staged_key, staged_cert):
        if staged.exists():
            staged.unlink()
    return None


def _mkdirs(path: Path) -> None:
    # 0755: the server's user must traverse it; only root writes.
    missing = []
    d = path
    while not d.exists():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        d.mkdir(mode=0o755)
        os.chmod(d, 0o755)


def _owners_modes(target: Target, pair: Pair) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(uid, gid, mode) to write the key and the certificate with: the pair's own when it was read
    from a destination, else the target's. A key is never left readable by others, even restored."""
    uid, gid, mode = pair.key_meta or (target.uid, target.gid, target.key_mode)
    return (uid, gid, mode & ~0o007), pair.cert_meta or (target.uid, target.gid, target.cert_mode)


def install(target: Target, pair: Pair) -> None:
    """Put `pair` at the destinations: staged with final owner/mode, journalled, key then cert.
    The engine calls `owe_restart` first."""
    for p in (target.key, target.cert):
        _mkdirs(p.parent)
    (kuid, kgid, kmode), (cuid, cgid, cmode) = _owners_modes(target, pair)
    fsutil.atomic_write(_staged(target.key), pair.key_pem, kmode, kuid, kgid)
    fsutil.atomic_write(_staged(target.cert), pair.cert_pem, cmode, cuid, cgid)
    journal = {"key": str(target.key), "cert": str(target.cert), "sha256": pair.fingerprint}
    fsutil.atomic_write(_journal(target), json.dumps(journal).encode(), 0o600)
    step("staged", target.name)
    os.replace(_staged(target.key), target.key)
    fsutil.fsync_dir(target.key.parent)
    step("key-installed", target.name)
    os.replace(_staged(target.cert), target.cert)
    fsutil.fsync_dir(target.cert.parent)
    _journal(target).unlink()
    fsutil.fsync_dir(target.cert.parent)
    log.info("%s: installed %s and %s (sha256 %s)", target.name, target.key, target.cert, pair.fingerprint[:16])


def save_previous(target: Target, pair: Pair) -> None:
    """NAME.key.previous and NAME.crt.previous, with the owner and mode the pair had."""
    key_meta, cert_meta = _owners_modes(target, pair)
    for path, data, (uid, gid, mode) in ((target.key, pair.key_pem, key_meta), (target.cert, pair.cert_pem, cert_meta)):
        fsutil.atomic_write(_previous(path), data, mode, uid, gid)


def _fix_metadata(target: Target) -> bool:
    changed = False
    for path, mode in ((target.key, target.key_mode), (target.cert, target.cert_mode)):
        st = path.stat()
        if (st.st_uid, st.st_gid) != (target.uid, target.gid):
            os.chown(path, target.uid, target.gid)
            changed = True
        if st.st_mode & 0o7777 != mode:
            os.chmod(path, mode)
            changed = True
    return changed
