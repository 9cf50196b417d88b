"""Issuing server certificates from the site CA into lineages (one or a whole fleet)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

from ntspki import pki
from ntspki.errors import NtspkiError
from ntspki.issuing import ca as ca_mod
from ntspki.pki import keys, names, verify
from ntspki.store import Home, check_lineage_name


@dataclass
class Issued:
    name: str
    version: int
    sans: list[str]
    serial: str
    sha256: str
    not_after: str
    key_type: str
    live: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Request:
    name: str
    sans: list[str]
    origin: str = ""  # where it came from, for errors: "fleet.txt line 7"

    @cached_property  # parsed once: a batch validates every line up front, then builds
    def general_names(self):
        return names.unique_sans([self.name, *self.sans])

    @property
    def lineage(self) -> str:
        """The lineage directory name: NAME as a normalised host name (never an address)."""
        if names.is_ip(self.name):
            raise NtspkiError(
                f"the certificate name must be a host name, not an address ({self.name}); put addresses in --san", 2
            )
        return check_lineage_name(names.normalize_dns_name(self.name))


def parse_batch(text: str, source: str = "batch file") -> list[Request]:
    """One `NAME [SAN ...]` a line; blank lines and `#` comments are ignored."""
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        req = Request(fields[0], fields[1:], f"{source} line {lineno}")
        try:
            _ = req.general_names  # validates every name
        except NtspkiError as e:
            raise NtspkiError(f"{req.origin}: {e}", 2)
        out.append(req)
    if not out:
        raise NtspkiError(f"{source} names no certificate to issue", 2)
    return out


CHANGE_FLAG = "--allow-change"


@dataclass
class Identity:
    """What makes a lineage the same lineage from one version to the next."""

    sans: list[str]  # every name, NAME first
    key_type: str
    days: int | None  # lifetime of internal certificates (ACME: the CA decides)
    source: str  # internal | acme


def keep_identity(
    home: Home,
    req: Request,
    key_type: str | None,
    days: int | None,
    source: str,
    allow_change: bool = False,
    names_given: bool = True,
) -> tuple[Identity, dict | None]:
    """The identity a new version of `req`'s lineage gets, and the stored renewal parameters.

    What the caller leaves out (None, or no names when names_given is False) comes from
    renewal/NAME.json, so re-issuing or renewing never silently drops a name or changes the key
    type, lifetime or source. A different name set, key type or source is refused with what would
    change, unless `allow_change` (the CLI's --allow-change)."""
    lineage = req.lineage
    stored = home.read_renewal(lineage) if (home.live / lineage).exists() else None
    if not stored:
        sans = [names.san_text(g) for g in req.general_names]
        return Identity(sans, key_type or keys.DEFAULT_KEY_TYPE, days, source), None
    if not names_given:
        req = Request(req.name, list(stored.get("sans") or []), req.origin)
    sans = [names.san_text(g) for g in req.general_names]
    old_sans = [names.san_text(g) for g in names.unique_sans(list(stored.get("sans") or [lineage]))]
    old_key, old_source = stored.get("key_type") or keys.DEFAULT_KEY_TYPE, stored.get("source", "internal")
    changes = []
    added, removed = [n for n in sans if n not in old_sans], [n for n in old_sans if n not in sans]
    if added or removed:
        changes.append(
            "names "
            + "; ".join(
                part
                for part in (
                    f"added {', '.join(added)}" if added else "",
                    f"removed {', '.join(removed)}" if removed else "",
                )
                if part
            )
        )
    if key_type and key_type != old_key:
        changes.append(f"key type {old_key} -> {key_type}")
    if source != old_source:
        changes.append(f"source {old_source} -> {source}")
    if changes and not allow_change:
        raise NtspkiError(
            f"lineage {lineage} is {', '.join(old_sans)} "
            f"({old_key}, {old_source}); this would change its {'; '.join(changes)}: leave out what should stay "
            f"(its names, key type and source are kept), or confirm with {CHANGE_FLAG}",
            1,
        )
    if days is None and source == old_source:
        days = stored.get("days")
    return Identity(sans, key_type or old_key, days, source), stored


def _check_options(key_type: str | None, days: int | None) -> None:
    if days is not None and days < 1:
        raise NtspkiError("--days must be at least 1", 2)
    if key_type is not None and key_type not in keys.KEY_TYPES:
        raise NtspkiError(f"unknown key type {key_type!r} (choose from {', '.join(keys.KEY_TYPES)})", 2)


@dataclass
class _Built:
    """A new certificate, validated and ready to write."""

    lineage: str
    key_pem: bytes
    cert_pem: bytes
    info: pki.CertInfo
    key_type: str
    days: int


def _build(ca: ca_mod.CA, req: Request, ident: Identity) -> _Built:
    lineage = req.lineage
    sans = names.unique_sans(ident.sans)
    days = ident.days or pki.LEAF_DAYS
    key = keys.generate(ident.key_type)
    cert = pki.make_leaf(key, ca.intermediate, ca.intermediate_key, sans, days)
    # Nothing is written unless the chain verifies for every name and the key is the cert's.
    verify.verify_chain([ca.root], [cert, ca.intermediate], sans)
    if not keys.key_matches_cert(key, cert):
        raise NtspkiError("internal error: the new key does not match the new certificate")
    return _Built(lineage, keys.private_pem(key), pki.cert_pem(cert), pki.CertInfo.of(cert), ident.key_type, days)


def _write(home: Home, ca: ca_mod.CA, built: _Built, durable: bool) -> Issued:
    """Version, renewal parameters and ledger row for one certificate (caller holds the lock)."""
    lineage, info, key_type = built.lineage, built.info, built.key_type
    version = home.write_version(lineage, built.key_pem, built.cert_pem, ca.chain_pem, durable)
    params = {"source": "internal", "sans": info.sans, "key_type": key_type, "days": built.days}
    home.write_renewal(lineage, params, durable)
    home.ledger.record(lineage, version, info, key_type, "internal")
    return Issued(
        lineage, version, info.sans, info.serial, info.sha256, info.not_after, key_type, str(home.live / lineage)
    )


def issue(
    home: Home,
    name: str,
    sans: Sequence[str] | None = None,
    key_type: str | None = None,
    days: int | None = None,
    allow_change: bool = False,
) -> Issued:
    """The next version of lineage NAME. Names, key type and lifetime left out (None; no `sans`)
    are the lineage's own (see keep_identity); a new lineage gets NAME only, ec-p256, 90 days."""
    _check_options(key_type, days)
    req = Request(name, list(sans or ()))
    _ = req.general_names  # validate names before anything else
    ident, _stored = keep_identity(home, req, key_type, days, "internal", allow_change, names_given=bool(sans))
    ca = ca_mod.load(home)
    built = _build(ca, req, ident)
    home.ensure()
    with home.lock():
        return _write(home, ca, built, durable=True)


@dataclass
class Rehearsal:
    """What `issue` would write, made and validated but written nowhere (`renew --dry-run`)."""

    info: pki.CertInfo
    key_type: str
    key_pem: bytes
    cert_pem: bytes
    chain_pem: bytes


def rehearse(
    home: Home, name: str, sans: Sequence[str] | None = None, key_type: str | None = None, days: int | None = None
) -> Rehearsal:
    _check_options(key_type, days)
    req = Request(name, list(sans or ()))
    ident, _stored = keep_identity(home, req, key_type, days, "internal", names_given=bool(sans))
    ca = ca_mod.load(home)
    built = _build(ca, req, ident)
    return Rehearsal(built.info, built.key_type, built.key_pem, built.cert_pem, ca.chain_pem)


def issue_many(
    home: Home,
    requests: list[Request],
    key_type: str | None = None,
    days: int | None = None,
    progress=None,
    allow_change: bool = False,
) -> list[Issued]:
    """A fleet in one process and one lock; durable on return (one file-system sync).

    Every certificate is made and validated before the first one is written, so a bad request
    (say, a name outside the CA's name constraints, or one that would change an existing lineage's
    names) issues nothing and names its line.
    Each ledger row commits right after its lineage's files, so a batch killed half-way leaves a
    ledger that matches what it wrote. Sequential on purpose: the time goes into file-system
    metadata calls, and writer threads only fought over the GIL."""
    _check_options(key_type, days)
    ca = ca_mod.load(home)
    built = []
    for req in requests:
        try:
            ident, _stored = keep_identity(home, req, key_type, days, "internal", allow_change)
            built.append(_build(ca, req, ident))
        except NtspkiError as e:
            raise NtspkiError(f"{req.origin}: {e}" if req.origin else str(e), e.exit_code)
        if progress:
            progress(1)
    home.ensure()
    with home.lock():
        try:
            return [_write(home, ca, b, durable=False) for b in built]
        finally:
            home.sync()


def read_batch_file(path: str) -> list[Request]:
    try:
        text = Path(path).read_text() if path != "-" else sys.stdin.read()
    except OSError as e:
        raise NtspkiError(f"cannot read {path}: {e.strerror}", 2)
    return parse_batch(text, path)
