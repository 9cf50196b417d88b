"""What `ntspki ca status` (and the CA warnings of `list`) report about the site CA: both
certificates' lifetimes, retired intermediates, the rollover phase, the trust bundle, the CRLs,
and the root key's protection, with warnings an operator can act on."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509

from ntspki import pki
from ntspki.errors import NtspkiError
from ntspki.issuing.ca import constraints_of, issuers, load, read_ca_file
from ntspki.pki import keys
from ntspki.store import Home

# Expiry thresholds for the CA's own certificates: the same as `ntspki check` uses for the chain.
WARN_DAYS = 21
CRITICAL_DAYS = 7


def days_left(cert: x509.Certificate, now: dt.datetime | None = None) -> float:
    return (cert.not_valid_after_utc - (now or pki.now())).total_seconds() / 86400


def cert_status(cert: x509.Certificate, now: dt.datetime | None = None) -> dict:
    info = pki.CertInfo.of(cert)
    return {
        "subject": info.subject,
        "key_type": keys.key_type_of(cert.public_key()),
        "serial": info.serial,
        "sha256": info.sha256,
        "not_before": info.not_before,
        "not_after": info.not_after,
        "days_left": round(days_left(cert, now), 1),
    }


def expiry_warnings(
    label: str,
    cert: x509.Certificate,
    warn_days: int = WARN_DAYS,
    critical_days: int = CRITICAL_DAYS,
    now: dt.datetime | None = None,
) -> list[dict]:
    days = days_left(cert, now)
    fix = (
        "ntspki ca rotate-intermediate"
        if label == "intermediate"
        else "ntspki ca rollover start, then switch and finish"
    )
    if days < 0:
        return [
            {
                "severity": "critical",
                "code": f"{label}-expired",
                "message": f"the {label} CA expired on {cert.not_valid_after_utc:%Y-%m-%d}",
                "fix": fix,
            }
        ]
    if days < critical_days:
        severity = "critical"
    elif days < warn_days:
        severity = "warning"
    else:
        return []
    return [
        {
            "severity": severity,
            "code": f"{label}-expiring",
            "message": f"the {label} CA expires in {days:.1f} days ({cert.not_valid_after_utc:%Y-%m-%d})",
            "fix": fix,
        }
    ]


def status(home: Home, warn_days: int = WARN_DAYS, critical_days: int = CRITICAL_DAYS) -> dict:
    """Everything `ca status` shows, as one JSON-able dict."""
    from ntspki.issuing import revocation, rollover, trust

    if critical_days > warn_days:
        raise NtspkiError("--critical-days must not be more than --warn-days", 2)
    ca = load(home)
    now = pki.now()
    root_key_pem = read_ca_file(home.private_dir / "root.key")
    dns, ips = constraints_of(ca.intermediate)
    warnings = expiry_warnings("root", ca.root, warn_days, critical_days, now) + expiry_warnings(
        "intermediate", ca.intermediate, warn_days, critical_days, now
    )
    bundle = trust.bundle(home)
    state = rollover.state(home)
    out: dict[str, Any] = {
        "home": str(home.path),
        "root": {
            **cert_status(ca.root, now),
            "path": str(home.ca_dir / "root.pem"),
            "key_encrypted": keys.is_encrypted_pem(root_key_pem),
            "kdf_rounds": keys.kdf_rounds(root_key_pem),
        },
        "intermediate": {
            **cert_status(ca.intermediate, now),
            "path": str(home.ca_dir / "intermediate.pem"),
            "permit_dns": dns,
            "permit_ip": ips,
        },
        "retired_intermediates": [cert_status(i.cert, now) for i in issuers(home) if not i.current],
        "rollover": rollover.describe(home, state, now),
        "trust_bundle": {
            "path": str(trust.bundle_path(home)),
            "roots": [
                {
                    "subject": c.subject.rfc4514_string(),
                    "sha256": pki.fingerprint(c),
                    "not_after": c.not_valid_after_utc.isoformat(),
                }
                for c in bundle
            ],
        },
        "crl": revocation.crl_status(home, now),
    }
    if not any(pki.fingerprint(c) == pki.fingerprint(ca.root) for c in bundle):
        warnings.append(
            {
                "severity": "critical",
                "code": "root-not-in-bundle",
                "message": f"the issuing root is not in {trust.bundle_path(home)}",
                "fix": "ntspki ca rollover switch (or finish) to complete the rollover",
            }
        )
    if out["root"]["key_encrypted"] and (out["root"]["kdf_rounds"] or 0) < keys.KDF_ROUNDS:
        warnings.append(
            {
                "severity": "warning",
                "code": "root-key-weak-kdf",
                "message": f"the root key is encrypted with a fast key derivation "
                f"({out['root']['kdf_rounds'] or 'not PBKDF2'} rounds): a stolen copy is "
                "cheap to attack",
                "fix": f"a root rollover makes a new key with {keys.KDF_ROUNDS} rounds",
            }
        )
    warnings += revocation.crl_warnings(out["crl"])
    out["warnings"] = warnings
    severities = {w["severity"] for w in warnings}
    out["status"] = "CRITICAL" if "critical" in severities else "WARNING" if severities else "OK"
    return out


def quick_warnings(home: Home) -> list[dict]:
    """The CA's expiry warnings, for `list`: cheap, and silent when there is no CA."""
    try:
        root = x509.load_pem_x509_certificate(read_ca_file(home.ca_dir / "root.pem"))
        inter = x509.load_pem_x509_certificate(read_ca_file(home.ca_dir / "intermediate.pem"))
    except (OSError, ValueError, NtspkiError):
        return []
    return expiry_warnings("root", root) + expiry_warnings("intermediate", inter)
