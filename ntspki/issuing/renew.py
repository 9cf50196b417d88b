"""`ntspki renew`: keep every lineage fresh, internal and ACME alike, then deploy what changed.

A lineage is due when under a third of its lifetime is left (90-day certificates: 30 days
before expiry, as certbot), or, when its ACME directory offers ACME Renewal Information
(RFC 9773), once a random moment inside the CA's suggested window has come: the CA knows about
revocations and incidents that the certificate's dates cannot tell. The window only ever brings
a renewal forward. When ARI cannot be fetched,
the lifetime rule decides (and says so): a CA being down must not stop a due renewal, and must
not turn a timer red when nothing is due.

Each lineage renews with the parameters in renewal/NAME.json: "internal" re-issues from the site
CA (`ntspki.issuing.issue.issue`), "acme" orders again from the same directory, same names, key type,
profile and challenge (`ntspki.acme.acmeclient.obtain`). A "remote" lineage (`ntspki install`:
its key was made here, its CA is on another host) cannot renew here: when due it is reported as
needing the CA, which is no failure (the fleet's renew playbook does that round trip). One
failure does not stop the others: a renewal file that is unusable in any way is that lineage's
error. Runs hold HOME/.renew.lock, so two timers never renew the same lineage twice.

One module of ~450 lines on purpose: planning, renewing, rehearsing and the hand-over to deploy
share Plan and Outcome and read as one sequence.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography import x509

from ntspki import pki
from ntspki.errors import NtspkiError
from ntspki.issuing.remote import SOURCE as REMOTE
from ntspki.store import Home, fsutil, ledger

DUE_FRACTION = 1 / 3
RENEWABLE = ("internal", "acme", REMOTE)  # the renewal/NAME.json sources `plan` knows


@dataclass
class Plan:
    """What `renew` thinks of one lineage before touching it."""

    name: str
    source: str  # internal | acme | unknown
    version: int
    not_after: str | None
    due: bool
    reason: str
    renew_after: str | None = None  # when it becomes due (the lifetime rule or the ARI moment)
    ari_window: list[str] | None = None
    # What planning read, so renewing does not read it again: renewal/NAME.json and the current
    # leaf (None when unreadable), which an ACME order names as the certificate it replaces.
    params: dict = field(default_factory=dict, repr=False)
    leaf: x509.Certificate | None = field(default=None, repr=False)
    broken: str | None = None  # renewal/NAME.json is unusable: this lineage fails, the rest go on


@dataclass
class Outcome:
    name: str
    source: str
    due: bool
    reason: str
    renewed: bool = False
    version: int | None = None
    not_after: str | None = None
    error: str | None = None
    needs_ca: bool = False  # due, but its CA is on another host (source "remote")
    rehearsal: str | None = None  # --dry-run: what the rehearsal made and checked
    scratch: str | None = None  # --dry-run: the scratch live directory it made it in

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Report:
    outcomes: list[Outcome]
    deployed: object = None  # whatever the deploy engine reported
    deploy_error: str | None = None
    deploy_note: str | None = None  # why nothing was deployed, when that is not a failure
    dry_run: bool = False

    @property
    def renewed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.renewed]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.deploy_error

    def to_dict(self) -> dict:
        deployed = self.deployed
        if deployed is not None:
            deployed = deployed.to_dict() if hasattr(deployed, "to_dict") else str(deployed)
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "lineages": [o.to_dict() for o in self.outcomes],
            "deployed": deployed,
            "deploy_error": self.deploy_error,
            "deploy_note": self.deploy_note,
        }


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def select(home: Home, names: Sequence[str] = ()) -> list[str]:
    """The lineages to look at: the ones named (each must exist), else every lineage."""
    if not names:
        return home.lineage_names()
    for name in names:
        home.require_lineage(name)
    return list(dict.fromkeys(names))


class _Directories:
    """One directory fetch per ACME server per run, however many lineages use it."""

    def __init__(self):
        self.conns: dict[tuple, object] = {}

    def get(self, params: dict):
        from ntspki.acme import connection

        key = (connection.resolve_directory(params.get("directory")), params.get("ca_bundle"))
        if key not in self.conns:
            try:
                self.conns[key] = connection.Connection(*key)
            except NtspkiError as e:
                self.conns[key] = e
        conn = self.conns[key]
        if isinstance(conn, NtspkiError):
            raise conn
        return conn


def _revocation(home: Home, leaf: x509.Certificate, chain_pem: bytes) -> str | None:
    """Why the lineage must be re-issued now: its certificate, or the intermediate that issued it,
    is revoked in the ledger (a new key comes with every issuance)."""
    try:
        intermediates = pki.load_certs(chain_pem) if chain_pem.strip() else []
    except NtspkiError:
        intermediates = []
    for what, cert in [("revoked", leaf), *(("its intermediate was revoked", c) for c in intermediates)]:
        row = ledger.revoked(home.path, cert.serial_number)
        if row:
            return f"{what} on {row['revoked_at'][:10]} ({row['reason']})"
    return None


def plan(
    home: Home, name: str, force: bool = False, now: dt.datetime | None = None, directories: _Directories | None = None
) -> Plan:
    now = now or _now()
    try:
        params = home.read_renewal(name) or {}
        if params:
            from ntspki.store.identity import check_stored

            check_stored(params, name)
    except NtspkiError as e:
        # That lineage's error (reported, exit non-zero); the others still renew.
        return Plan(name, "unknown", 0, None, False, str(e), params={}, broken=str(e))
    source = params.get("source", "unknown")
    if source == "acme":
        from ntspki.acme import acmeclient

        try:
            acmeclient.OrderSpec.from_renewal(name, params)
        except NtspkiError as e:
            return Plan(name, "acme", 0, None, False, str(e), params={}, broken=str(e))
    if source not in RENEWABLE and params:
        broken = f"renewal/{name}.json: unknown source {source!r:.40} (known: {', '.join(RENEWABLE)})"
        return Plan(name, "unknown", 0, None, False, broken, params={}, broken=broken)
    try:
        lineage = home.read_lineage(name)
        leaf = pki.load_certs(lineage.cert, f"{name} cert.pem")[0]
    except NtspkiError as e:
        # A lineage that cannot be read is exactly one that needs a new version.
        return Plan(name, source, 0, None, source in RENEWABLE, f"unreadable: {e}", params=params)
    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    renew_after = end - (end - start) * DUE_FRACTION
    p = Plan(
        name, source, lineage.version, end.isoformat(), False, "", renew_after.isoformat(), params=params, leaf=leaf
    )
    if source not in RENEWABLE:
        p.reason = f"no renewal configuration (renewal/{name}.json)"
        return p
    if force:
        p.due, p.reason = True, "forced"
        return p
    revoked = _revocation(home, leaf, lineage.chain)
    if revoked:
        p.due, p.reason = True, revoked
        return p
    if end <= now:
        p.due, p.reason = True, f"expired on {end:%Y-%m-%d}"
        return p
    ari_note = ""
    if source == "acme":
        from ntspki.acme import acmeclient

        try:
            window = acmeclient.renewal_window((directories or _Directories()).get(params), leaf)
        except NtspkiError as e:
            window, ari_note = None, f" (ARI not checked: {e})"
        if window is not None:
            # RFC 9773 section 4.2: a uniformly random moment in the window spreads the CA's load.
            # The window can only bring a renewal forward: the lifetime rule still applies.
            moment = window.start + (window.end - window.start) * random.random()
            p.ari_window = [window.start.isoformat(), window.end.isoformat()]
            p.renew_after = min(moment, renew_after).isoformat()
            why = f"the CA's renewal window {window.start:%Y-%m-%d %H:%M} .. {window.end:%Y-%m-%d %H:%M} UTC"
            if window.explanation:
                why += f" ({window.explanation})"
            if now >= moment:
                p.due, p.reason = True, f"inside {why}"
                return p
            ari_note = f"; not yet in {why}"
    left = end - now
    if now >= renew_after:
        p.due, p.reason = True, f"{left.days} days left, under a third of its lifetime{ari_note}"
    else:
        p.reason = f"{left.days} days left; due from {renew_after:%Y-%m-%d}{ari_note}"
    return p


def _renew_one(home: Home, p: Plan, progress) -> Outcome:
    params = p.params
    out = Outcome(p.name, p.source, True, p.reason)
    try:
        if p.source == "internal":
            from ntspki.issuing import issue

            issued = issue.issue(
                home,
                p.name,
                list(params.get("sans") or [p.name]),
                params.get("key_type", "ec-p256"),
                int(params.get("days", pki.LEAF_DAYS)),
            )
        else:
            from ntspki.acme import acmeclient

            spec = acmeclient.OrderSpec.from_renewal(p.name, params)
            issued = acmeclient.obtain(home, spec, replaces=p.leaf, progress=lambda msg: progress(f"{p.name}: {msg}"))
        out.renewed, out.version, out.not_after = True, issued.version, issued.not_after
    except NtspkiError as e:
        out.error = str(e)
    return out


def renew(
    home: Home,
    names: Sequence[str] = (),
    force: bool = False,
    dry_run: bool = False,
    deploy: bool = True,
    deploy_config: Path | None = None,
    progress=None,
    on_plan=None,
    on_done=None,
) -> Report:
    """Renew what is due (everything with force); then deploy the renewed lineages once.

    `progress(message)` gets a line per step; `on_plan(plans)` sees the plan before any renewal
    (the CLI sizes its progress bar from it); `on_done(outcome)` follows each renewal."""
    progress = progress or (lambda _m: None)
    on_done = on_done or (lambda _o: None)
    home.require_readable()
    todo = select(home, list(names))
    if deploy:
        check_deploy_config(home, deploy_config)
    if dry_run:
        import tempfile

        # A rehearsal: each due lineage is issued into a scratch area, verified, and the deploy
        # planned from there; HOME, the CA and the destinations are not touched.
        with tempfile.TemporaryDirectory(prefix="ntspki-rehearsal-") as scratch:
            return _run(
                home, todo, force, True, deploy, deploy_config, progress, on_plan, on_done, set(names), Path(scratch)
            )
    home.ensure()
    with fsutil.locked(home.path / ".renew.lock"):
        return _run(home, todo, force, False, deploy, deploy_config, progress, on_plan, on_done, set(names))


def _run(home, todo, force, dry_run, deploy, deploy_config, progress, on_plan, on_done, named, scratch=None) -> Report:
    directories = _Directories()
    plans = [plan(home, name, force, directories=directories) for name in todo]
    if on_plan:
        on_plan(plans)
    outcomes = []
    for p in plans:
        if p.broken:
            outcomes.append(Outcome(p.name, p.source, False, p.reason, error=p.broken))
        elif p.source not in RENEWABLE:
            # Only an error when asked for by name: `renew --all` skips foreign lineages.
            error = f"{p.reason}: cannot renew it" if p.name in named else None
            outcomes.append(Outcome(p.name, p.source, False, p.reason, error=error))
        elif not p.due or p.source == REMOTE:
            outcomes.append(
                Outcome(
                    p.name,
                    p.source,
                    p.due,
                    p.reason,
                    version=p.version or None,
                    not_after=p.not_after,
                    needs_ca=p.due and p.source == REMOTE,
                )
            )
        elif dry_run:
            progress(f"rehearsing {p.name} ({p.reason})")
            outcomes.append(_rehearse(home, p, scratch, directories))
        else:
            progress(f"renewing {p.name} ({p.reason})")
            outcomes.append(_renew_one(home, p, progress))
            on_done(outcomes[-1])
    report = Report(outcomes, dry_run=dry_run)
    if dry_run:
        rehearsed = {o.name: Path(o.scratch) for o in outcomes if o.scratch}
        if rehearsed and deploy:
            _plan_deploy(home, rehearsed, deploy_config, report)
        return report
    renewed = [home.live / o.name for o in report.renewed]
    if renewed and deploy:
        _deploy(home, renewed, deploy_config, report, progress)
    return report


def check_deploy_config(home: Home, deploy_config: Path | None) -> None:
    """Read and validate the deploy config before anything is renewed: a mistake there is a usage
    error (exit 2) with nothing renewed, not a renewal whose deploy then cannot run."""
    from ntspki import deploy as deploy_mod

    deploy_mod.load_targets(home, deploy_config)


def _deploy(home: Home, live_dirs: list[Path], deploy_config: Path | None, report: Report, progress) -> None:
    from ntspki import deploy as deploy_mod

    progress(f"deploying {len(live_dirs)} renewed lineage(s)")
    try:
        result = deploy_mod.deploy_lineages(live_dirs, home=home, config_path=deploy_config)
    except NtspkiError as e:
        report.deploy_error = str(e)
        return
    report.deployed = result
    targets = result.targets
    if not targets and result.note:
        report.deploy_note = result.note  # e.g. no deploy config: nothing to do, not a failure
    if not result.ok:
        report.deploy_error = (
            "; ".join(
                f"{t.name}: {t.status}" + (f" ({t.message})" if t.message else "") for t in targets if t.exit_code
            )
            or "the deploy engine reported a failure"
        )


def _rehearse(home: Home, p: Plan, scratch: Path, directories: _Directories) -> Outcome:
    """`renew --dry-run` for one due lineage: internal ones are issued into `scratch` (made,
    verified, written nowhere else); for ACME ones the directory and the account are checked
    (an order is not placed: that would be a real certificate)."""
    params = p.params
    out = Outcome(p.name, p.source, True, p.reason, version=p.version or None, not_after=p.not_after)
    try:
        if p.source == "internal":
            from ntspki.issuing import issue

            r = issue.rehearse(
                home, p.name, list(params.get("sans") or [p.name]), params.get("key_type"), params.get("days")
            )
            live = scratch / p.name
            live.mkdir(mode=0o700)
            files = {
                "privkey": r.key_pem,
                "cert": r.cert_pem,
                "chain": r.chain_pem,
                "fullchain": r.cert_pem + r.chain_pem,
            }
            for kind, data in files.items():
                fsutil.atomic_write(live / f"{kind}.pem", data, 0o600)
            out.scratch = str(live)
            out.rehearsal = (
                f"issued and verified in a scratch area: {', '.join(r.info.sans)}, {r.key_type}, "
                f"valid until {r.info.not_after[:10]}"
            )
        else:
            from ntspki.acme import acmeclient
            from ntspki.acme.accounts import load_account

            spec = acmeclient.OrderSpec.from_renewal(p.name, params)
            directories.get(params)  # the directory answers (raises with the reason if not)
            directory = acmeclient.resolve_directory(spec.directory)
            account = (
                "the account exists"
                if load_account(home, directory) is not None
                else "but there is NO account for it (`ntspki acme register --agree-tos`)"
            )
            out.rehearsal = (
                f"{directory} answers, {account}; would order {', '.join(spec.sans)} "
                f"({spec.key_type}, {spec.challenge.type}); not ordered in a dry run"
            )
    except NtspkiError as e:
        out.error = str(e)
    return out


def _plan_deploy(home: Home, rehearsed: dict[str, Path], deploy_config: Path | None, report: Report) -> None:
    """The deploy engine's dry run on the rehearsed pairs: every check a real deploy makes, and
    what it would write where and run."""
    import dataclasses

    from ntspki import deploy as deploy_mod
    from ntspki.deploy import deployconfig

    try:
        targets = deploy_mod.load_targets(home, deploy_config)
    except NtspkiError as e:
        report.deploy_error = str(e)
        return
    if targets is None:
        report.deploy_note = f"no deploy config ({deployconfig.default_config_path(home)}): nothing would be deployed"
        return
    planned = [
        dataclasses.replace(t, source_dir=scratch)
        for name, scratch in rehearsed.items()
        for t in deployconfig.by_source(targets, [home.live / name])
    ]
    if not planned:
        report.deploy_note = f"no deploy target uses {', '.join(rehearsed)}: nothing would be deployed"
        return
    result = deploy_mod.deploy(planned, dry_run=True, lock_path=deploy_mod.default_lock_path(home))
    report.deployed = result
    if not result.ok:
        report.deploy_error = "; ".join(f"{t.name}: {t.status} ({t.message})" for t in result.targets if t.exit_code)
