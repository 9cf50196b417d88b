"""Trust bundles as chrony reads them (`ntstrustedcerts FILE|DIR`: PEM certificates, a directory's
files all read), and which roots of one bundle another set of trusted files lacks.

`ntspki check --trust-bundle` uses this on a client during a root rollover: a client whose trust
lacks the new root stops authenticating the moment its servers switch to the new chain.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

MAX_BUNDLE = 16 << 20


def read_trusted(path: str | Path) -> list[x509.Certificate]:
    """The certificates chrony trusts from one `ntstrustedcerts` argument; unreadable files and
    non-PEM data contribute nothing (chrony skips them too, and check reports them on their own)."""
    p = Path(path)
    try:
        files = sorted(q for q in p.iterdir() if q.is_file()) if p.is_dir() else [p]
    except OSError:
        return []
    out: list[x509.Certificate] = []
    for f in files:
        try:
            # Only regular files of a sane size (a FIFO would block, a device never end); the
            # bounded reader lives in store, which pki may not import.
            if not f.is_file() or f.stat().st_size > MAX_BUNDLE:
                continue
            with open(f, "rb") as fh:
                out += x509.load_pem_x509_certificates(fh.read(MAX_BUNDLE))
        except (OSError, ValueError):
            continue
    return out


def missing(wanted: list[x509.Certificate], trusted: list[x509.Certificate]) -> list[x509.Certificate]:
    """The certificates of `wanted` that `trusted` does not hold (compared by SHA-256)."""
    have = {c.fingerprint(hashes.SHA256()) for c in trusted}
    return [c for c in wanted if c.fingerprint(hashes.SHA256()) not in have]
