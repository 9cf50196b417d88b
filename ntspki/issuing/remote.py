"""Certificates for keys that never leave their server: `csr` there, `sign` on the CA host,
`install` back there.

    server   ntspki csr NAME --san ...   -> HOME/pending/NAME.key (0600) and a PKCS#10 request
    CA host  ntspki sign REQUEST         -> leaf + intermediate; the ledger records it as "remote"
    server   ntspki install NAME --cert CHAIN
                                         -> next version of lineage NAME (same write as `issue`)

The CA trusts nothing in a request but its public key and its names: the signature must verify
(the requester holds the key), the key type must be one ntspki issues, every name must be valid
and inside the CA's name constraints, and the certificate is built by the same code as `issue`,
so every extension is the CA's choice. A request asking to be a CA is refused outright.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID, NameOID

from ntspki import pki
from ntspki.errors import NtspkiError
from ntspki.issuing import ca as ca_mod
from ntspki.pki import keys, names, verify
from ntspki.store import Home, check_lineage_name, fsutil, ledger
from ntspki.store.identity import Issued, Request

SOURCE = "remote"  # renewal/NAME.json and ledger source: the key lives on another host


def pending_dir(home: Home) -> Path:
    return home.path / "pending"


def pending_key_path(home: Home, name: str) -> Path:
    return pending_dir(home) / f"{check_lineage_name(name)}.key"


# ---- on the server: a key and a request ---------------------------------------------------------


@dataclass
class Requested:
    name: str
    sans: list[str]
    key_type: str
    pending_key: str
    csr: str = field(repr=False)

    def to_dict(self) -> dict:
        return asdict(self)


def make_csr(
    home: Home, name: str, sans: Sequence[str] = (), key_type: str = keys.DEFAULT_KEY_TYPE, force: bool = False
) -> Requested:
    if key_type not in keys.KEY_TYPES:
        raise NtspkiError(f"unknown key type {key_type!r} (choose from {', '.join(keys.KEY_TYPES)})", 2)
    req = Request(name, list(sans))
    general = req.general_names
    lineage = req.lineage
    home.ensure()
    fsutil.make_private_dir(pending_dir(home))
    path = pending_key_path(home, lineage)
    key = keys.generate(key_type)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, lineage)]))
        .add_extension(x509.SubjectAlternativeName(general), critical=False)
        .sign(key, keys.signature_hash(key))
    )
    with home.lock():
        if path.exists() and not force:
            raise NtspkiError(
                f"{path} already holds a pending key for {lineage} (from an earlier csr, not yet "
                "installed): use --force to replace it"
            )
        fsutil.atomic_write(path, keys.private_pem(key), 0o600)
    return Requested(
        lineage,
        [names.san_text(g) for g in general],
        key_type,
        str(path),
        csr.public_bytes(serialization.Encoding.PEM).decode(),
    )


# ---- on the CA host: the CA's policy, then the same certificate `issue` makes --------------------


@dataclass
class Signed:
    name: str
    version: int
    sans: list[str]
    serial: str
    sha256: str
    not_after: str
    key_type: str
    ignored_extensions: list[str]
    fullchain: str = field(repr=False)

    def to_dict(self) -> dict:
        return asdict(self)


def load_csr(data: bytes, what: str = "the request") -> x509.CertificateSigningRequest:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except ValueError:
        raise NtspkiError(f"{what} is not a PKCS#10 certificate request (PEM or DER)")


def _requested_names(csr: x509.CertificateSigningRequest, extensions: x509.Extensions) -> list[str]:
    try:
        san: list[x509.GeneralName] = list(extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        san = []
    out = []
    for gn in san:
        if not isinstance(gn, (x509.DNSName, x509.IPAddress)):
            raise NtspkiError(
                f"the request asks for the name {gn.value!r} ({type(gn).__name__}): "
                "an NTS server certificate holds host names and IP addresses only"
            )
        out.append(str(gn.value))
    if not out:
        cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        out = [str(cns[0].value)] if cns else []
    if not out:
        raise NtspkiError("the request names no host (no subjectAltName and no common name)")
    return out


def sign(home: Home, csr_pem: bytes, days: int = pki.LEAF_DAYS, what: str = "the request") -> Signed:
    if days < 1:
        raise NtspkiError("--days must be at least 1", 2)
    csr = load_csr(csr_pem, what)
    if not csr.is_signature_valid:
        raise NtspkiError(f"{what}: its signature does not verify (it was not signed by the key it carries)")
    public = csr.public_key()
    key_type = keys.key_type_of(public)
    if key_type not in keys.KEY_TYPES:
        raise NtspkiError(f"{what}: a {key_type} key is not allowed (allowed: {', '.join(keys.KEY_TYPES)})")
    try:
        extensions = csr.extensions
    except ValueError as e:
        raise NtspkiError(f"{what}: its extensions cannot be parsed ({e})")
    ignored = []
    for ext in extensions:
        if ext.oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME:
            continue
        if isinstance(ext.value, x509.BasicConstraints) and ext.value.ca:
            raise NtspkiError(f"{what} asks to be a CA (basicConstraints CA:TRUE): refused")
        ignored.append(getattr(ext.oid, "_name", None) or ext.oid.dotted_string)
    requested = _requested_names(csr, extensions)
    req = Request(requested[0], requested[1:], what)
    try:
        general = req.general_names
        lineage = req.lineage
    except NtspkiError as e:
        raise NtspkiError(f"{what}: {e}", e.exit_code)
    ca = ca_mod.load(home)
    cert = pki.make_leaf(public, ca.intermediate, ca.intermediate_key, general, days)
    # The same gate as `issue`: nothing leaves the CA unless it verifies for every name (this is
    # where names outside the CA's name constraints are refused).
    try:
        verify.verify_chain([ca.root], [cert, ca.intermediate], general)
    except NtspkiError as e:
        raise NtspkiError(f"{what}: refused: {e}")
    info = pki.CertInfo.of(cert)
    home.ensure()
    with home.lock():
        if (home.live / lineage).exists():
            raise NtspkiError(
                f"{lineage} is a lineage on this host, with its key here: "
                "a certificate for a remote key of the same name would be confused with it"
            )
        rows = home.ledger.rows(lineage)
        version = (rows[0]["version"] if rows else 0) + 1
        home.ledger.record(lineage, version, info, key_type, SOURCE)
    return Signed(
        lineage,
        version,
        info.sans,
        info.serial,
        info.sha256,
        info.not_after,
        key_type,
        ignored,
        (pki.cert_pem(cert) + ca.chain_pem).decode(),
    )


# ---- back on the server: pair, verify, switch --------------------------------------------------


@dataclass
class Installed(Issued):
    changed: bool  # False: this chain was already the lineage's current version (a re-run)


def install(
    home: Home, name: str, chain_pem: bytes, root_file: Path | None = None, what: str = "the certificate file"
) -> Installed:
    name = Request(name, []).lineage  # as `csr` named it
    if not home.path.is_dir():
        raise NtspkiError(f"no pending key for {name} (no {home.path}): run `ntspki csr {name}` first")
    home.ensure()
    chain = [c for c in verify.load_chain(chain_pem, what) if not pki.is_self_signed(c)]  # never the root
    if not chain:
        raise NtspkiError(f"{what} holds only a self-signed certificate (give the leaf and its intermediates)")
    # the roots clients trust now: both during a root rollover, so a chain from either installs
    root_path = Path(root_file) if root_file else home.trust_path
    if not os.path.lexists(root_path):
        raise NtspkiError(f"no site root to verify against ({root_path} does not exist): give --root FILE", 2)
    roots = pki.load_certs(fsutil.read_bounded(root_path, fsutil.PEM_LIMIT, "root"), str(root_path))
    leaf = chain[0]
    with home.lock():
        live = _already_installed(home, name, leaf)
        if live is not None:
            return live
        key_path = pending_key_path(home, name)
        if not os.path.lexists(key_path):
            raise NtspkiError(f"no pending key for {name} ({key_path}): run `ntspki csr {name}` first")
        key_pem = fsutil.read_bounded(key_path, fsutil.PEM_LIMIT, "pending key", exit_code=1)
        key = keys.load_private_pem(key_pem, what=str(key_path))
        if not keys.key_matches_cert(key, leaf):
            if any(keys.key_matches_cert(key, c) for c in chain[1:]):
                raise NtspkiError(f"{what} is not leaf first")
            raise NtspkiError(f"{what} is not for the pending key of {name} (signed from another request?)")
        if name not in pki.san_strings(leaf):
            raise NtspkiError(f"{what} is not for {name} (its names: {', '.join(pki.san_strings(leaf))})")
        verify.verify_chain(roots, chain)
        ledger.refuse_revoked(home.live / name, *chain)  # revoked in this home's ledger (when it is the CA's too)
        info = pki.CertInfo.of(leaf)
        key_type = keys.key_type_of(key)
        rest = b"".join(pki.cert_pem(c) for c in chain[1:])
        version = home.write_version(name, key_pem, pki.cert_pem(leaf), rest)
        days = max(1, round((leaf.not_valid_after_utc - leaf.not_valid_before_utc).total_seconds() / 86400))
        home.write_renewal(name, {"source": SOURCE, "sans": info.sans, "key_type": key_type, "days": days})
        home.ledger.record(name, version, info, key_type, SOURCE)
        if not (home.ca_dir / "root.pem").exists():
            # The home now knows its site root, as `show`, `deploy` and `check` expect.
            fsutil.atomic_write(home.ca_dir / "root.pem", b"".join(pki.cert_pem(r) for r in roots), 0o644)
        os.unlink(key_path)  # its copy now lives in archive/
    return Installed(
        name, version, info.sans, info.serial, info.sha256, info.not_after, key_type, str(home.live / name), True
    )


def _already_installed(home: Home, name: str, leaf: x509.Certificate) -> Installed | None:
    """The same certificate is already the lineage's current one: nothing to do (a re-run)."""
    try:
        lineage = home.read_lineage(name)
        current = pki.load_certs(lineage.cert)[0]
    except NtspkiError:
        return None
    if current != leaf:
        return None
    info = pki.CertInfo.of(leaf)
    return Installed(
        name,
        lineage.version,
        info.sans,
        info.serial,
        info.sha256,
        info.not_after,
        keys.key_type_of(leaf.public_key()),
        str(lineage.live_dir),
        False,
    )
