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
before the journal leaves the old pair untouched; after it, the new pair is completed. A second
file says "restart owed" from before the first write until the restart command succeeded, so a run
killed in between leaves the next one to restart, probe or no probe; and the next run removes the
temp files of writes a kill cut short (private-key copies among them).

Every step in STEPS is announced to `on_step` (a no-op): the crash tests replace it, in a
process of their own, to stop at a step and SIGKILL the deploy exactly there.

The package is split along those lines: `source` (the pair and its validation), `policy` (where it
may be written; restart or reload), `journal` (the journalled install, recovery, `.previous`), `served` (the probe),
`report` (results and JSON), `certbot` (the hook script); this module plans, applies and rolls
back, and keeps every name importable from `ntspki.deploy`.

Also in this package: target configuration (`deployconfig`, its one-setting checks in `checks`) and the watcher (`watch`).
Layer: orchestration. May import `store`, `pki`, `servers`, `nts` (the served-certificate check, trust anchors)
and `errors`; never `cli` or `issuing`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ntspki import pki
from ntspki.deploy import deployconfig
from ntspki.deploy.certbot import CERTBOT_HOOK_DIR, CERTBOT_HOOK_NAME, certbot_hook_script, install_certbot_hook
from ntspki.deploy.deployconfig import Target
from ntspki.deploy.journal import (
    _fix_metadata,
    _journal,
    install,
    owe_restart,
    read_pair,
    recover,
    restart_owed,
    restart_paid,
    save_previous,
)
from ntspki.deploy.policy import check_destination, check_server_reads, load_command, restart_warning
from ntspki.deploy.report import BROKEN, OK, REFUSED, ROLLED_BACK, DeployReport, TargetResult
from ntspki.deploy.served import _probe_once, check_served
from ntspki.deploy.source import Pair, load_source
from ntspki.deploy.steps import STEPS
from ntspki.deploy.steps import step as _step
from ntspki.errors import NtspkiError
from ntspki.servers import services
from ntspki.store import Home, fsutil

__all__ = [
    "BROKEN",
    "CERTBOT_HOOK_DIR",
    "CERTBOT_HOOK_NAME",
    "OK",
    "REFUSED",
    "ROLLED_BACK",
    "STEPS",
    "DeployReport",
    "Pair",
    "Target",
    "TargetResult",
    "certbot_hook_script",
    "check_destination",
    "check_served",
    "check_server_reads",
    "default_lock_path",
    "deploy",
    "deploy_lineages",
    "install",
    "install_certbot_hook",
    "load_source",
    "load_targets",
    "on_step",
    "read_pair",
    "recover",
    "recover_only",
    "save_previous",
]

log = logging.getLogger("ntspki.deploy")
# Each target's outcome: the watcher logs it; `ntspki deploy` prints it itself and turns this off.
results = logging.getLogger("ntspki.deploy.result")


def _no_step_hook(name: str) -> None:
    pass


on_step: Callable[[str], None] = _no_step_hook


@dataclass
class _Plan:
    target: Target
    new: Pair
    old: Pair | None  # what to restore if the new pair is not served
    write: bool  # False: already on disk, only the restart is missing
    command: list[str]
    name: str  # the name the probe checks
    result: TargetResult
    full_restart: bool = False  # a reload will not load this pair (services.needs_restart)


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
            owe_restart(plan.target, plan.full_restart)  # cleared once its restart ran: a kill before that is caught up
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
        owed = restart_owed(t)
        try:
            command, full_restart, warning = load_command(t, command, current, new, owed)
        except NtspkiError as e:
            result.message, result.exit_code = str(e), REFUSED
            results.error("%s: refused: %s", t.name, e)
            continue
        if warning:
            report.warnings.append(warning)
        result.previous_sha256 = current.fingerprint if current else None
        deployed = current is not None and current.fingerprint == new.fingerprint and current.key_pem == new.key_pem
        name = t.probe_name or pki.san_strings(new.leaf)[0]
        if deployed and not force and owed:
            # Installed by a run that was killed before its restart: the server may still serve the
            # old pair, whatever a probe says (or without one): restart, then probe as usual.
            msg = f"{t.name}: restart owed: an interrupted deploy installed this pair but did not restart the server"
            log.warning(msg)
            report.warnings.append(msg)
        elif deployed and not force:
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
        plan = _Plan(t, new, current, not deployed, command, name, result, full_restart)
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
        msg = restart_warning(plan.target)
        if msg and msg not in report.warnings:
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
    if restarted:
        for plan in group:
            restart_paid(plan.target)
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
        owe_restart(plan.target, plan.full_restart)
        install(plan.target, plan.old)
        log.warning("%s: restored the previous pair (sha256 %s)", plan.target.name, plan.old.fingerprint[:16])
        restored.append((plan, why))
    _step("restored")
    if not restored:
        return
    again = _run(command, report, "roll back to the previous certificate")
    if again:
        for plan, _ in restored:
            restart_paid(plan.target)
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
