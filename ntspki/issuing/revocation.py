"""Revocation: recorded in the ledger, published as RFC 5280 CRLs in HOME/ca/crl.pem.

No NTS client fetches CRLs (chrony and GnuTLS-based clients, NTPsec, ntpd-rs: none loads a CRL or
asks OCSP), so for NTS a revocation protects nobody by itself: a leaked server key means revoke,
re-issue with a new key and deploy (`ntspki renew` re-issues revoked lineages); a leaked
intermediate key means `ca rotate-intermediate`, then re-issue and revoke what it issued. The
CRL is for the tools that do read one (openssl, GnuTLS's certtool, monitoring) and for the record.

crl.pem holds one CRL per intermediate that may have live certificates (the current one, always;
each retired one under a trusted root that has revocations), current first. Each is signed by the
intermediate that issued the certificates it lists, numbered one past the last one written.
A retired intermediate itself is revoked in arl.pem, signed by the root (so only with the root
passphrase, and with a long nextUpdate: the root key stays offline).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ntspki import pki
from ntspki.errors import NtspkiError
from ntspki.issuing import ca as ca_mod
from ntspki.pki import keys, verify
from ntspki.store import Home, check_lineage_name, fsutil

CRL_DAYS = 7  # nextUpdate: `ntspki crl` (from the renew timer) re-signs well before
ARL_DAYS = 365  # the root's CRL: signed when an intermediate is revoked, or by `ntspki crl --arl`
REASONS = {
    "unspecified": None,  # RFC 5280 5.3.1: then the reasonCode extension is left out
    "key-compromise": x509.ReasonFlags.key_compromise,
    "affiliation-changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
    "privilege-withdrawn": x509.ReasonFlags.privilege_withdrawn,
}
ADVICE = (
    "NTS clients (chrony, GnuTLS) do not fetch CRLs: revoking alone protects no client. "
    "Re-issue with a new key and deploy now: `ntspki renew {name}`."
)


def crl_path(home: Home) -> Path:
    return home.ca_dir / "crl.pem"


def arl_path(home: Home) -> Path:
    return home.ca_dir / "arl.pem"


def _read_crls(path: Path) -> list[x509.CertificateRevocationList]:
    if not os.path.lexists(path):
        return []
    data = fsutil.read_bounded(path, 64 << 20, "CRL file", exit_code=1)
    out = []
    for block in data.split(b"-----END X509 CRL-----")[:-1]:
        try:
            out.append(x509.load_pem_x509_crl(block + b"-----END X509 CRL-----\n"))
        except ValueError:
            continue
    return out


def parse_serial(text: str) -> int:
    s = text.strip().lower().replace(":", "")
    s = s[2:] if s.startswith("0x") else s
    try:
        value = int(s, 16)
    except ValueError:
        value = 0
    if not s or value <= 0 or len(s) > 40:
        raise NtspkiError(f"bad --serial {text!r}: a positive hexadecimal number of up to 20 bytes", 2)
    return value


def check_reason(reason: str) -> str:
    if reason not in REASONS:
        raise NtspkiError(f"bad --reason {reason!r} (choose from {', '.join(REASONS)})", 2)
    return reason


@dataclass
class Revoked:
    name: str | None
    version: int | None
    serial: str
    reason: str
    revoked_at: str
    already: bool
    crl: str
    advice: str

    def to_dict(self) -> dict:
        return asdict(self)


def _find(home: Home, name: str | None, serial: int | None) -> tuple[x509.Certificate, str | None, int | None]:
    """The certificate to revoke: a lineage's current one, or the ledger's certificate with `serial`."""
    if name is not None:
        lineage = home.read_lineage(check_lineage_name(name))
        return pki.load_certs(lineage.cert, f"{name} cert.pem")[0], name, lineage.version
    want = format(serial, "x")
    rows = home.ledger.rows(latest_only=False) if home.ledger_path.exists() else []
    for row in rows:
        if row["serial"] == want:
            path = home.archive / row["name"] / f"cert{row['version']}.pem"
            try:
                data = fsutil.read_bounded(path, fsutil.PEM_LIMIT, "certificate", exit_code=1)
                return pki.load_certs(data, str(path))[0], row["name"], row["version"]
            except OSError as e:
                raise NtspkiError(f"serial {want} is {row['name']} version {row['version']}, but {path}: {e.strerror}")
    intermediate = _intermediate(home, serial)
    if intermediate is not None:
        return intermediate.cert, None, None
    raise NtspkiError(f"no certificate with serial {want} in the ledger {home.ledger_path}", 2)


def _intermediate(home: Home, serial: int | None) -> ca_mod.Issuer | None:
    """The site intermediate with `serial`; the current one cannot be revoked (nothing would issue)."""
    for issuer in ca_mod.issuers(home):
        if issuer.cert.serial_number == serial:
            if issuer.current:
                raise NtspkiError(
                    f"{serial:x} is the current intermediate: run `ntspki ca rotate-intermediate` first, "
                    "then revoke it",
                    2,
                )
            return issuer
    return None


def needs_root_key(home: Home, serial: str | None) -> bool:
    """Whether revoking --serial means signing the root's CRL (the serial of a retired intermediate)."""
    if serial is None:
        return False
    return _intermediate(home, parse_serial(serial)) is not None


def revoke(
    home: Home,
    name: str | None = None,
    serial: str | None = None,
    reason: str = "unspecified",
    crl_days: int = CRL_DAYS,
    passphrase: bytes | None = None,
) -> Revoked:
    if (name is None) == (serial is None):
        raise NtspkiError("give a lineage NAME or --serial HEX (one of them)", 2)
    check_reason(reason)
    number = parse_serial(serial) if serial is not None else None
    home.require_readable()
    ca_mod.load(home)
    cert, lname, version = _find(home, name, number)
    if verify.is_ca(cert):
        return _revoke_intermediate(home, cert, reason, passphrase)
    issuer = ca_mod.issuer_of(home, cert)
    if issuer is None:
        raise NtspkiError(
            f"{lname or format(number or 0, 'x')}: the certificate was not issued by this site's CA "
            f"({cert.issuer.rfc4514_string()}): revoke it where it was issued (an ACME CA: "
            "`certbot revoke`)",
            2,
        )
    hexserial = format(cert.serial_number, "x")
    entry = {
        "serial": hexserial,
        "name": lname,
        "version": version,
        "issuer": pki.fingerprint(issuer.cert),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "reason": reason,
        "revoked_at": pki.now().isoformat(),
    }
    with home.lock():
        # Signed before the ledger changes (a CRL that cannot be signed changes nothing), written after.
        crls = _build_crls(home, crl_days, entry)
        row, new = home.ledger.revoke(**entry)
        if new:
            _store_crls(home, crls)
    return Revoked(
        lname,
        version,
        hexserial,
        row["reason"],
        row["revoked_at"],
        not new,
        str(crl_path(home)),
        ADVICE.format(name=lname or "NAME"),
    )


def _revoke_intermediate(home: Home, cert: x509.Certificate, reason: str, passphrase: bytes | None) -> Revoked:
    ca = ca_mod.load(home)
    if cert.issuer != ca.root.subject:
        raise NtspkiError(
            f"intermediate {cert.serial_number:x} was issued by the previous root: finish the rollover "
            "(`ntspki ca rollover finish`), after which no client trusts it",
            2,
        )
    root_key = ca_mod.load_root_key(home, passphrase)  # a wrong passphrase fails here, before any write
    serial = format(cert.serial_number, "x")
    entry = {
        "serial": serial,
        "name": None,
        "version": None,
        "issuer": pki.fingerprint(ca.root),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "reason": reason,
        "revoked_at": pki.now().isoformat(),
    }
    with home.lock():
        arl = _build_arl(home, ca.root, root_key, ARL_DAYS, entry)
        row, new = home.ledger.revoke(**entry)
        if new:
            fsutil.atomic_write(arl_path(home), arl.public_bytes(serialization.Encoding.PEM), 0o644)
    return Revoked(
        None, None, serial, row["reason"], row["revoked_at"], not new, str(arl_path(home)), INTERMEDIATE_ADVICE
    )


INTERMEDIATE_ADVICE = (
    "NTS clients (chrony, GnuTLS) do not fetch CRLs: they go on accepting what the revoked intermediate "
    "signed for as long as they trust the root. Re-issue what it issued (`ntspki renew --force`); if its "
    "key leaked, roll the root over (`ntspki ca rollover start`)."
)


def _build_arl(home: Home, root: x509.Certificate, root_key, days: int, pending: dict | None = None):
    fp = pki.fingerprint(root)
    rows = [r for r in revocations(home) if r["issuer"] == fp]
    if pending and all(r["serial"] != pending["serial"] for r in rows):
        rows.append(pending)
    previous = max((_number(c) for c in _read_crls(arl_path(home))), default=0)
    return make_crl(root, root_key, rows, previous + 1, days)


def _number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


def revocations(home: Home) -> list[dict]:
    return home.ledger.revocations() if home.ledger_path.exists() else []


# ---- the CRL ------------------------------------------------------------------------------------


def _previous_numbers(home: Home) -> dict[bytes, int]:
    """CRL number per issuer (by authority key identifier) in the crl.pem in place."""
    out: dict[bytes, int] = {}
    for crl in _read_crls(crl_path(home)):
        try:
            aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        except x509.ExtensionNotFound:
            continue
        out[aki or b""] = _number(crl)
    return out


def make_crl(
    issuer_cert: x509.Certificate, issuer_key, entries: list[dict], number: int, days: int = CRL_DAYS
) -> x509.CertificateRevocationList:
    now = pki.now()
    ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=days))
        # RFC 5280 5.2.1 and 5.2.3: both are required in a conforming CRL.
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for e in entries:
        revoked = (
            x509.RevokedCertificateBuilder()
            .serial_number(int(e["serial"], 16))
            .revocation_date(dt.datetime.fromisoformat(e["revoked_at"]))
        )
        flag = REASONS.get(e["reason"])
        if flag is not None:
            revoked = revoked.add_extension(x509.CRLReason(flag), critical=False)
        builder = builder.add_revoked_certificate(revoked.build())
    return builder.sign(issuer_key, keys.signature_hash(issuer_key))


def _build_crls(home: Home, days: int, pending: dict | None = None) -> list[x509.CertificateRevocationList]:
    """The CRLs from the ledger's revocations and `pending` (caller holds the lock)."""
    from ntspki.issuing import trust

    now = pki.now()
    trusted = {r.subject for r in trust.bundle(home)}
    known = revocations(home)
    if pending and all(r["serial"] != pending["serial"] for r in known):
        known.append(pending)
    rows = [r for r in known if dt.datetime.fromisoformat(r["not_after"]) > now]
    previous = _previous_numbers(home)
    crls = []
    for issuer in ca_mod.issuers(home):
        mine = [r for r in rows if r["issuer"] == pki.fingerprint(issuer.cert)]
        if not issuer.current and (
            not mine or issuer.cert.issuer not in trusted or issuer.cert.not_valid_after_utc <= now
        ):
            continue
        ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        crls.append(make_crl(issuer.cert, issuer.key(), mine, previous.get(ski, 0) + 1, days))
    return crls


def _store_crls(home: Home, crls: list[x509.CertificateRevocationList]) -> None:
    fsutil.atomic_write(crl_path(home), b"".join(c.public_bytes(serialization.Encoding.PEM) for c in crls), 0o644)


def check_days(days: int, arl_days: int = ARL_DAYS) -> None:
    if not 1 <= days <= 366:
        raise NtspkiError(f"bad --days {days}: 1 to 366", 2)
    if not 1 <= arl_days <= 3660:
        raise NtspkiError(f"bad --arl-days {arl_days}: 1 to 3660", 2)


def write_crl(
    home: Home, days: int = CRL_DAYS, arl: bool = False, passphrase: bytes | None = None, arl_days: int = ARL_DAYS
) -> None:
    """`ntspki crl`: sign fresh CRLs (a new number and nextUpdate) even when nothing changed; with
    `arl`, the root's CRL of intermediates too (the root key is read, and its passphrase checked,
    before anything is written)."""
    check_days(days, arl_days)
    ca = ca_mod.load(home)
    root_key = ca_mod.load_root_key(home, passphrase) if arl else None
    home.ensure()
    with home.lock():
        crls = _build_crls(home, days)
        root_crl = _build_arl(home, ca.root, root_key, arl_days) if root_key is not None else None
        _store_crls(home, crls)
        if root_crl is not None:
            fsutil.atomic_write(arl_path(home), root_crl.public_bytes(serialization.Encoding.PEM), 0o644)


def crl_status(home: Home, now: dt.datetime | None = None) -> dict | None:
    """The CRLs in crl.pem and the root's in arl.pem (None when neither exists yet)."""
    out = []
    for path in (crl_path(home), arl_path(home)):
        for crl in _read_crls(path):
            nxt = crl.next_update_utc
            out.append(
                {
                    "file": str(path),
                    "issuer": crl.issuer.rfc4514_string(),
                    "revoked": [format(r.serial_number, "x") for r in crl],
                    "this_update": crl.last_update_utc.isoformat(),
                    "next_update": nxt.isoformat() if nxt else None,
                    "number": _number(crl),
                }
            )
    if not out:
        return None
    return {"path": str(crl_path(home)), "crls": out}


def crl_warnings(status: dict | None, now: dt.datetime | None = None) -> list[dict]:
    now = now or pki.now()
    out = []
    for c in (status or {}).get("crls", []):
        if c["next_update"] and dt.datetime.fromisoformat(c["next_update"]) <= now:
            out.append(
                {
                    "severity": "warning",
                    "code": "crl-stale",
                    "message": f"the CRL of {c['issuer']} passed its nextUpdate ({c['next_update'][:16]})",
                    "fix": "ntspki crl --arl (needs the root passphrase)"
                    if c["file"].endswith("arl.pem")
                    else "ntspki crl (run it from a timer, e.g. with ntspki renew)",
                }
            )
    return out
