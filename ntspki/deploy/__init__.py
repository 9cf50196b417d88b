"""The deploy engine: copy a lineage to where the NTS server reads it, make the server load it,
prove it is served, and put the previous pair back if it is not.

One run, under one lock (timer, certbot hook and watcher may fire together):

    1. finish any deploy a crash interrupted (see "journal" below)
    2. validate every source before touching anything: key matches the leaf, chain leaf-first,
       complete and verifying, names covered, not expired, key unencrypted and of a type the
       server loads; destinations that are symlinks or sit in directories others can write, or
       that the server's user could not read, are refused
    3. unchanged (same key and certificate at the destination AND served): nothing to do
    4. keep the current pair as NAME.previous, write the new pair next to the destinations with
       final owner and mode, journal it, rename key first and certificate last
    5. run each distinct restart/reload command once, however many targets it covers
    6. probe: the server must serve the new certificate (fingerprint) within probe_timeout;
       if not, restore the previous pair, restart again, probe again, and fail (exit 3; 4 when
       even the previous pair is not served)

Journal: two files cannot be replaced in one atomic step, so between the key rename and the
certificate rename the destinations hold the new key and the old certificate. Both new files are
complete on disk (as hidden `.NAME.ntspki-new` files) before a journal file says "install these";
whoever takes the lock next (deploy, watcher, certbot hook) finishes the renames first. A crash
before the journal leaves the old pair untouched; after it, the new pair is completed.

Every step in STEPS is announced to `on_step` (a no-op): the crash tests replace it, in a
process of their own, to stop at a step and SIGKILL the deploy exactly there.

Also in this package: target configuration (`deployconfig`) and the watcher (`watch`).
Layer: orchestration. May import `store`, `pki`, `servers`, `nts` (the served-certificate check, trust anchors)
and `errors`; never `cli` or `issuing`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ntspki import pki
from ntspki.deploy import deployconfig
from ntspki.deploy.deployconfig import Target
from ntspki.errors import NtspkiError
from ntspki.pki import keys, names, verify
from ntspki.servers import services
from ntspki.store import Home, access, fsutil, ledger, read_live_dir

log = logging.getLogger("ntspki.deploy")
# Each target's outcome: the watcher logs it; `ntspki deploy` prints it itself and turns this off.
results = logging.getLogger("ntspki.deploy.result")

STEPS = (
    "locked",
    "validated",
    "previous-saved",
    "staged",
    "key-installed",
    "installed",
    "restarted",
    "probed",
    "restored",
    "restarted-again",
)


def _no_step_hook(name: str) -> None:
    pass


on_step: Callable[[str], None] = _no_step_hook

# exit codes (also in man/ntspki-deploy.1)
OK, REFUSED, ROLLED_BACK, BROKEN = 0, 1, 3, 4


def _step(name: str, detail: str = "") -> None:
    log.debug("step %s%s", name, f": {detail}" if detail else "")
    on_step(name)


# ---- a key and its certificate chain ----------------------------------------------------------


@dataclass
class Pair:
    key_pem: bytes
    cert_pem: bytes  # the full chain, leaf first: what `ntsservercert` needs
    # (uid, gid, mode) of key and cert when read from a destination: a rollback restores those
    # too, since a changed owner or mode can be what made the new pair unloadable.
    key_meta: tuple[int, int, int] | None = None
    cert_meta: tuple[int, int, int] | None = None

    @cached_property
    def chain(self):
        return pki.load_certs(self.cert_pem)

    @property
    def leaf(self):
        return self.chain[0]

    @cached_property
    def fingerprint(self) -> str:
        return pki.fingerprint(self.leaf)

    def matches(self) -> bool:
        try:
            key = keys.load_private_pem(self.key_pem)
            return keys.key_matches_cert(key, self.leaf)
        except (NtspkiError, IndexError):
            return False


def load_source(target: Target) -> Pair:
    """Read the target's lineage and check everything the server will need. Raises NtspkiError."""
    src = target.source_dir
    lineage = read_live_dir(src, target.source)
    try:
        key = keys.load_private_pem(lineage.privkey, what=f"{src}/privkey.pem")
    except keys.EncryptedKey:
        raise NtspkiError(
            f"{src}/privkey.pem is encrypted: {target.service.name} cannot load an "
            "encrypted key (it fails with 'Decryption has failed')"
        )
    chain = verify.load_chain(lineage.fullchain, f"{src}/fullchain.pem")
    if not keys.key_matches_cert(key, chain[0]):
        where = next((i for i, c in enumerate(chain) if keys.key_matches_cert(key, c)), None)
        if where is not None:
            raise NtspkiError(
                f"{src}/fullchain.pem is not leaf first: the key's certificate is number {where + 1} of {len(chain)}"
            )
        raise NtspkiError(f"{src}/privkey.pem does not match the certificate in {src}/fullchain.pem")
    key_type = keys.key_type_of(key)
    if key_type not in target.service.key_types:
        raise NtspkiError(
            f"{src}: {target.service.name} cannot load a {key_type} key "
            f"(it loads {', '.join(target.service.key_types)})"
        )
    ledger.refuse_revoked(src, *chain)
    leaf = chain[0]
    wanted = list(target.names) if target.names else None
    if target.probe_name:
        wanted = (wanted or pki.san_strings(leaf)) + [target.probe_name]
    general = names.unique_sans(wanted) if wanted else None
    from ntspki.nts.probe import trust_store

    try:
        # Order, validity, every CA rule and the names: the verifier probe, check and issue use.
        verify.verify_chain(trust_store(target.ca), chain, general)
    except verify.ChainError as e:
        hint = (
            ""
            if target.ca or e.rule not in ("unknown-issuer", "untrusted")
            else " (set `ca` / --ca to the root that issued it)"
        )
        raise NtspkiError(f"{src}: {e}{hint}")
    except NtspkiError as e:  # an unreadable CA file, no system trust store
        raise NtspkiError(f"{src}: {e}")
    return Pair(lineage.privkey, lineage.fullchain)


# ---- destinations -----------------------------------------------------------------------------


def _staged(path: Path) -> Path:
    return path.parent / f".{path.name}.ntspki-new"


def _previous(path: Path) -> Path:
    return path.with_name(path.name + ".previous")


def _journal(target: Target) -> Path:
    return target.cert.parent / f".{target.cert.name}.ntspki-journal"


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


def _meta(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid, st.st_mode & 0o7777


def read_pair(key_path: Path, cert_path: Path) -> Pair | None:
    """The pair at these paths (with owners and modes) if both exist and match, else None."""
    try:
        pair = Pair(key_path.read_bytes(), cert_path.read_bytes(), _meta(key_path), _meta(cert_path))
    except OSError:
        return None
    return pair if pair.matches() else None


def recover(target: Target) -> str | None:
    """Finish a deploy that a crash interrupted; drop staged files no journal asked for."""
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
    """Put `pair` at the destinations: staged with final owner/mode, journalled, key then cert."""
    for p in (target.key, target.cert):
        _mkdirs(p.parent)
    (kuid, kgid, kmode), (cuid, cgid, cmode) = _owners_modes(target, pair)
    fsutil.atomic_write(_staged(target.key), pair.key_pem, kmode, kuid, kgid)
    fsutil.atomic_write(_staged(target.cert), pair.cert_pem, cmode, cuid, cgid)
    journal = {"key": str(target.key), "cert": str(target.cert), "sha256": pair.fingerprint}
    fsutil.atomic_write(_journal(target), json.dumps(journal).encode(), 0o600)
    _step("staged", target.name)
    os.replace(_staged(target.key), target.key)
    fsutil.fsync_dir(target.key.parent)
    _step("key-installed", target.name)
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


# ---- is the server serving it? ----------------------------------------------------------------


def check_served(
    target: Target, fingerprint: str, name: str, timeout: float, verify: bool = True
) -> tuple[bool, str | None, str]:
    """Probe until the server serves `fingerprint` or `timeout` passes: (ok, served sha256, detail).
    verify=False only pins the fingerprint: for a restored pair, whose chain and names may not
    be what the target now asks for, but which is exactly what was served before."""
    deadline = time.monotonic() + timeout
    while True:
        attempt = min(3.0, max(0.5, deadline - time.monotonic()))
        if verify:
            ok, served, detail = _probe_once(target, fingerprint, name, attempt)
        else:
            ok, served, detail = _pinned_once(target, fingerprint, name, attempt)
        if ok or time.monotonic() >= deadline:
            return ok, served, detail
        time.sleep(0.1)


def _pinned_once(target: Target, fingerprint: str, name: str, timeout: float) -> tuple[bool, str | None, str]:
    from ntspki.nts.ntske import ProtocolError
    from ntspki.nts.probe import parse_target, served_fingerprint

    assert target.probe is not None  # only called for targets that probe
    host, port = parse_target(target.probe)
    try:
        served = served_fingerprint(host, port, name, timeout)
    except ProtocolError as e:
        return False, None, f"no TLS handshake with {target.probe}: {e}"
    if served != fingerprint:
        return False, served, f"serves sha256 {served}, not {fingerprint}"
    return True, served, "served"


def _probe_once(target: Target, fingerprint: str, name: str, timeout: float = 3.0) -> tuple[bool, str | None, str]:
    """`ntspki probe` up to NTS-KE: chain and name checked, this fingerprint expected.
    (passed, sha256 of the served leaf or None, what was seen)."""
    from ntspki.nts.probe import probe

    assert target.probe is not None  # only called for targets that probe
    res = probe(
        target.probe,
        ca_files=tuple(str(c) for c in target.ca),
        name=name,
        timeout=timeout,
        expect_fingerprint=fingerprint,
        ntp=False,
    )
    served = res.chain[0].get("sha256") if res.chain else None
    return res.ok, served, "served" if res.ok else (res.error or "probe failed")


# ---- a run ------------------------------------------------------------------------------------


@dataclass
class TargetResult:
    name: str
    status: str  # unchanged | deployed | would-deploy | refused | rolled-back | failed
    message: str = ""
    new_sha256: str | None = None
    previous_sha256: str | None = None
    served_sha256: str | None = None
    exit_code: int = OK

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class DeployReport:
    targets: list[TargetResult] = field(default_factory=list)
    actions: list[dict] = field(default_factory=list)  # restart/reload commands run
    warnings: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def exit_code(self) -> int:
        return max((t.exit_code for t in self.targets), default=OK)

    @property
    def ok(self) -> bool:
        return self.exit_code == OK

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "targets": [t.to_dict() for t in self.targets],
            "actions": self.actions,
            "warnings": self.warnings,
            "note": self.note,
        }


@dataclass
class _Plan:
    target: Target
    new: Pair
    old: Pair | None  # what to restore if the new pair is not served
    write: bool  # False: already on disk, only the restart is missing
    command: list[str]
    name: str  # the name the probe checks
    result: TargetResult


def _home(home) -> Home:
    """A Home from a Home, a path, or None (the default home)."""
    return home if isinstance(home, Home) else Home(home)


def default_lock_path(home=None) -> Path:
    """One lock per host for root (every home, hook and watcher restarts the same server)."""
    if os.geteuid() == 0 and os.access("/run", os.W_OK):
        return Path("/run/ntspki-deploy.lock")
    path = _home(home).path
    path.mkdir(parents=True, exist_ok=True)
    return path / ".deploy.lock"


def deploy(
    targets: list[Target], *, dry_run: bool = False, force: bool = False, lock_path: Path | None = None
) -> DeployReport:
    report = DeployReport()
    if not targets:
        report.note = "no targets"
        return report
    lock_path = lock_path or default_lock_path()
    with fsutil.locked(lock_path):
        _step("locked")
        plans = _plan(targets, report, dry_run, force)
        _step("validated")
        if dry_run or not plans:
            return report
        for plan in plans:
            if plan.write and plan.old is not None:
                save_previous(plan.target, plan.old)
        _step("previous-saved")
        for plan in plans:
            if plan.write:
                install(plan.target, plan.new)
        _step("installed")
        groups: dict[tuple, list[_Plan]] = {}
        for plan in plans:
            groups.setdefault(tuple(plan.command), []).append(plan)
        for command, group in groups.items():
            _apply(list(command), group, report)
    return report


def recover_only(targets: list[Target], lock_path: Path | None = None) -> list[str]:
    """Finish interrupted deploys and nothing else: no restart, no probe.

    For the server's own start-up (`ExecStartPre=` in examples/), which closes the one window a
    crash can leave (new key, old certificate) before the server reads its files. A deploy holding
    the lock is the one restarting this server, with both files already in place: never wait for it
    (that would deadlock its restart); there is nothing to recover then."""
    try:
        with fsutil.locked(lock_path or default_lock_path(), wait=False):
            return [note for t in targets if (note := recover(t))]
    except BlockingIOError:
        return []


def _plan(targets, report, dry_run, force) -> list[_Plan]:
    plans = []
    for t in targets:
        result = TargetResult(t.name, "refused")
        report.targets.append(result)
        try:
            if not dry_run:
                note = recover(t)
                if note:
                    report.warnings.append(note)
            elif _journal(t).exists():
                report.warnings.append(f"{t.name}: an interrupted deploy will be finished first")
            new = load_source(t)
            check_destination(t)
            command = services.action_command(t.service, t.restart_command)
            check_server_reads(t)
        except NtspkiError as e:
            result.message, result.exit_code = str(e), REFUSED
            results.error("%s: refused: %s", t.name, e)
            continue
        result.new_sha256 = new.fingerprint
        current = read_pair(t.key, t.cert)
        result.previous_sha256 = current.fingerprint if current else None
        deployed = current is not None and current.fingerprint == new.fingerprint and current.key_pem == new.key_pem
        name = t.probe_name or pki.san_strings(new.leaf)[0]
        if deployed and not force:
            if not dry_run and _fix_metadata(t):
                log.info("%s: fixed owner/mode of %s and %s", t.name, t.key, t.cert)
            if t.probe is None:
                result.status, result.message = "unchanged", "already deployed (not probed)"
                continue
            served_ok, served, detail = _probe_once(t, new.fingerprint, name)
            result.served_sha256 = served
            if served_ok:
                result.status, result.message = "unchanged", "already deployed and served"
                results.info("%s: unchanged (sha256 %s deployed and served)", t.name, new.fingerprint[:16])
                continue
            log.info("%s: deployed but not served (%s): the server needs a restart", t.name, detail)
        # A rollback restores exactly what is in place now, byte for byte: when that already is the
        # new pair (forced, or installed by an interrupted run), it stays; `.previous` holds an older
        # pair that the server may not have served for months.
        plan = _Plan(t, new, current, not deployed, command, name, result)
        if dry_run:
            result.status = "would-deploy"
            writes = (
                f"write {t.key} and {t.cert} ({t.owner}:{t.group} {t.key_mode:04o}/{t.cert_mode:04o}), "
                if plan.write
                else ""
            )
            probe = f", then check {t.probe} serves sha256 {new.fingerprint[:16]}..." if t.probe else ""
            result.message = f"would {writes}run {' '.join(command)}{probe}"
            continue
        result.status = "pending"
        plans.append(plan)
    return plans


def _warn_ntsdumpdir(plans: list[_Plan], report: DeployReport) -> None:
    for plan in plans:
        t = plan.target
        if t.service.name != "chrony" or t.service.action != "restart":
            continue
        facts = services.chrony_conf_facts(t.service_conf)
        if not facts["readable"]:
            msg = (
                f"{t.name}: cannot read chrony's configuration ({t.service_conf or 'not found'}) to check "
                "ntsdumpdir: set service_conf"
            )
        elif not facts["ntsdumpdir"]:
            msg = (
                f"WARNING {t.name}: chronyd has no ntsdumpdir in {t.service_conf}: this restart makes "
                "new cookie keys, so every client's NTS cookies are rejected (NTSN) and all clients "
                f"must redo NTS-KE. Fix: add `ntsdumpdir /var/lib/chrony` to {t.service_conf}"
            )
        else:
            continue
        if msg not in report.warnings:
            report.warnings.append(msg)
            log.warning(msg)


def _run(command: list[str], report: DeployReport, why: str) -> bool:
    log.info("running %s (%s)", " ".join(command), why)
    ok, out = services.run_action(command)
    report.actions.append({"command": command, "why": why, "ok": ok, "output": out})
    if not ok:
        log.error("%s failed: %s", " ".join(command), out)
    return ok


def _apply(command: list[str], group: list[_Plan], report: DeployReport) -> None:
    """Restart once for the whole group, probe each target, roll back the ones not served."""
    _warn_ntsdumpdir(group, report)
    restarted = _run(command, report, f"load new certificate for {', '.join(p.target.name for p in group)}")
    _step("restarted")
    failed = []
    for plan in group:
        r = plan.result
        if not restarted:
            failed.append((plan, "the restart command failed"))
            continue
        if plan.target.probe is None:
            r.status, r.exit_code, r.message = "deployed", OK, "deployed (not probed)"
            continue
        ok, served, detail = check_served(plan.target, plan.new.fingerprint, plan.name, plan.target.probe_timeout)
        r.served_sha256 = served
        if ok:
            r.status, r.exit_code, r.message = "deployed", OK, f"deployed and served on {plan.target.probe}"
            results.info("%s: new certificate served on %s", plan.target.name, plan.target.probe)
        else:
            failed.append((plan, f"the new certificate is not served on {plan.target.probe}: {detail}"))
    _step("probed")
    if failed:
        _roll_back(command, failed, group, report)


def _roll_back(command, failed, group, report) -> None:
    restored = []
    for plan, why in failed:
        r = plan.result
        results.error("%s: %s", plan.target.name, why)
        if plan.old is None:
            r.status, r.exit_code = "failed", BROKEN
            r.message = (
                f"{why}; there is no previous pair to restore: the server is NOT serving this target's certificate"
            )
            continue
        if plan.old.leaf.not_valid_after_utc <= pki.now():
            r.status, r.exit_code = "failed", BROKEN
            r.message = f"{why}; the previous certificate has expired, so it was not restored: check the server"
            continue
        install(plan.target, plan.old)
        log.warning("%s: restored the previous pair (sha256 %s)", plan.target.name, plan.old.fingerprint[:16])
        restored.append((plan, why))
    _step("restored")
    if not restored:
        return
    again = _run(command, report, "roll back to the previous certificate")
    _step("restarted-again")
    for plan, why in restored:
        r = plan.result
        if plan.target.probe is None:
            ok, served = again, None
        else:
            # Served is what counts: a restart that failed again may have left the server running
            # with exactly the pair now back on disk.
            ok, served, _ = check_served(
                plan.target, plan.old.fingerprint, plan.name, plan.target.probe_timeout, verify=False
            )
        r.served_sha256 = served
        if ok:
            r.status, r.exit_code = "rolled-back", ROLLED_BACK
            same = (plan.old.key_pem, plan.old.cert_pem) == (plan.new.key_pem, plan.new.cert_pem)
            what = "the pair in place before this run (this same pair) is left byte for byte" if same else "rolled back"
            r.message = f"{why}; {what}: the previous certificate is served again"
        else:
            r.status, r.exit_code = "failed", BROKEN
            r.message = (
                f"{why}; restored the previous pair but it is not served either "
                f"(served sha256: {served or 'none'}): check the server"
            )
        results.error("%s: %s", plan.target.name, r.message)
    # Targets in the same group that were fine were restarted again too: check they still are.
    for plan in group:
        r = plan.result
        if r.status == "deployed" and plan.target.probe is not None:
            ok, served, detail = check_served(plan.target, plan.new.fingerprint, plan.name, plan.target.probe_timeout)
            if not ok:
                r.status, r.exit_code = "failed", BROKEN
                r.message = f"served before the rollback restart, not after it: {detail}"


# ---- entry points used by the watcher, the certbot hook and `ntspki renew` --------------------


def load_targets(home=None, config_path: Path | None = None) -> list[Target] | None:
    """The configured targets; None when there is no config at the default place."""
    home = _home(home)
    if config_path is None:
        config_path = deployconfig.default_config_path(home)
        if not config_path.exists():
            return None
    return deployconfig.load(Path(config_path), home)


def deploy_lineages(live_dirs: list[Path], home=None, config_path: Path | None = None) -> DeployReport:
    """Deploy every configured target whose source is one of `live_dirs` (after a renewal).
    No config: nothing to do. Config mistakes raise NtspkiError; deploy failures are in the report."""
    targets = load_targets(home, config_path)
    if targets is None:
        return DeployReport(note="no deploy config: nothing to deploy")
    chosen = deployconfig.by_source(targets, [Path(d) for d in live_dirs])
    if not chosen:
        return DeployReport(note=f"no target uses {', '.join(map(str, live_dirs))}")
    return deploy(chosen, lock_path=default_lock_path(home))


def configure_logging(prog: str, level: int = logging.INFO, progress_on_stdout: bool = True) -> None:
    """Progress on stdout, problems (warnings and errors) on stderr: a certbot hook's stderr is
    logged as error output. With progress_on_stdout False (stdout carries JSON) both go to stderr.
    Under systemd both carry journald's `<N>` priority prefix."""
    if os.environ.get("JOURNAL_STREAM"):
        prio = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

        class Journal(logging.Formatter):
            def format(self, record):
                return f"<{prio.get(record.levelno, 6)}>{record.getMessage()}"

        formatter: logging.Formatter = Journal()
    else:
        formatter = logging.Formatter(f"{prog}: %(message)s")
    progress = logging.StreamHandler(sys.stdout if progress_on_stdout else sys.stderr)
    problems = logging.StreamHandler(sys.stderr)
    progress.addFilter(lambda record: record.levelno < logging.WARNING)
    problems.setLevel(logging.WARNING)
    for handler in (progress, problems):
        handler.setFormatter(formatter)
    root = logging.getLogger("ntspki")
    root.handlers[:] = [progress, problems]
    root.setLevel(level)
    root.propagate = False


# ---- the certbot deploy hook ------------------------------------------------------------------

CERTBOT_HOOK_DIR = Path("/etc/letsencrypt/renewal-hooks/deploy")
CERTBOT_HOOK_NAME = "ntspki"


def certbot_hook_script(ntspki_argv: list[str] | None = None) -> str:
    """The hook certbot runs after each renewal (hooks/ntspki-certbot-deploy-hook is this with
    the default command; `ntspki hook install certbot` bakes in the exact ntspki and home)."""
    import shlex

    command = shlex.quote(shlex.join(ntspki_argv)) if ntspki_argv else "ntspki"
    return f"""#!/bin/sh
# ntspki's certbot deploy hook. certbot runs it after every successful renewal, from
# renewal-hooks/deploy/ or as --deploy-hook, with RENEWED_LINEAGE (the live directory) and
# RENEWED_DOMAINS (space-separated) set. It deploys every ntspki deploy target whose source is
# that lineage: copies the pair with the server's owner and modes, restarts the server once,
# checks that the new certificate is served and rolls back if not (see ntspki-deploy(1)).
# Install with: ntspki hook install certbot
set -u
if [ -z "${{NTSPKI:-}}" ]; then NTSPKI={command}; fi
if [ -z "${{RENEWED_LINEAGE:-}}" ]; then
    echo "ntspki hook: RENEWED_LINEAGE is not set: certbot runs this hook, see ntspki-hook(1)" >&2
    exit 2
fi
echo "ntspki hook: certbot renewed ${{RENEWED_DOMAINS:-(no domains given)}} in $RENEWED_LINEAGE"
eval "set -- $NTSPKI"
exec "$@" deploy --source "$RENEWED_LINEAGE"
"""


def install_certbot_hook(
    directory: Path = CERTBOT_HOOK_DIR, ntspki_argv: list[str] | None = None, force: bool = False
) -> tuple[Path, bool]:
    """Write the hook into certbot's renewal-hooks/deploy/. (path, changed)."""
    script = certbot_hook_script(ntspki_argv).encode()
    if not Path(directory).is_dir():
        # Never create it: a mistyped --dir would "succeed" with a hook certbot never runs.
        raise NtspkiError(
            f"{directory} does not exist: give certbot's CONFIG_DIR/renewal-hooks/deploy with --dir "
            "(certbot creates it when it is installed)",
            2,
        )
    path = Path(directory) / CERTBOT_HOOK_NAME
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise NtspkiError(f"{path} exists and is not a regular file")
    if path.exists():
        if path.read_bytes() == script:
            os.chmod(path, 0o755)
            return path, False
        if not force:
            raise NtspkiError(f"{path} exists with other content: use --force to replace it")
    fsutil.atomic_write(path, script, 0o755)
    return path, True
