"""Issuing server certificates from the site CA into lineages (one or a whole fleet)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ntspki import pki
from ntspki.errors import NtspkiError
from ntspki.issuing import ca as ca_mod
from ntspki.pki import keys, names, verify
from ntspki.store import Home
from ntspki.store.identity import Identity, Issued, Request, keep_identity


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
