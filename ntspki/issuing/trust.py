"""The client trust bundle: HOME/ca/trust.pem holds every root that NTS clients must trust now.

Outside a root rollover that is the site's root; from `rollover start` to `rollover finish` it is
both roots, so a client that got the bundle before the switch keeps authenticating whichever chain
a server presents. chrony re-reads `ntstrustedcerts` for every NTS-KE session: a client needs no
restart to pick up a new bundle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from ntspki import pki
from ntspki.errors import NtspkiError
from ntspki.store import Home, fsutil

# Where a client keeps its copy, unless told otherwise (/etc/chrony is what chronyd may read
# under Debian's AppArmor profile).
CLIENT_PATH = "/etc/chrony/ntspki-trust.pem"


def bundle_path(home: Home) -> Path:
    return home.ca_dir / "trust.pem"


def write_bundle(ca_dir: Path, roots: list[x509.Certificate]) -> None:
    """trust.pem in `ca_dir` (a home's ca/ or a CA being built), each root once, in order."""
    seen, pems = set(), []
    for r in roots:
        if pki.fingerprint(r) not in seen:
            seen.add(pki.fingerprint(r))
            pems.append(pki.cert_pem(r))
    fsutil.atomic_write(ca_dir / "trust.pem", b"".join(pems), 0o644)


def bundle(home: Home) -> list[x509.Certificate]:
    """The roots clients must trust now (a CA made before trust.pem existed: its root)."""
    path = home.trust_path
    try:
        return pki.load_certs(fsutil.read_bounded(path, fsutil.PEM_LIMIT, "trust file", exit_code=1), str(path))
    except OSError as e:
        raise NtspkiError(f"cannot read {path}: {e.strerror}")


def lineage_names(home: Home) -> list[str]:
    """The site's NTS servers: lineages issued by the site CA (ACME ones are trusted publicly)."""
    out = []
    for name in home.lineage_names():
        params = home.read_renewal(name) or {}
        if isinstance(params, dict) and params.get("source", "internal") == "internal":
            out.append(name)
    return out


def chrony_snippet(trust_file: str, servers: list[str]) -> str:
    lines = ["# NTS client set-up for this site's servers (ntspki trust export)", f"ntstrustedcerts {trust_file}"]
    lines += [f"server {name} iburst nts" for name in servers]
    return "\n".join(lines) + "\n"


@dataclass
class Export:
    roots: list[x509.Certificate]
    pem: bytes
    out: str | None
    snippet: str | None
    snippet_path: str | None
    servers: list[str]

    def to_dict(self) -> dict:
        return {
            "out": self.out,
            "chrony_snippet": self.snippet_path,
            "servers": self.servers,
            "roots": [
                {
                    "subject": r.subject.rfc4514_string(),
                    "sha256": pki.fingerprint(r),
                    "not_after": r.not_valid_after_utc.isoformat(),
                }
                for r in self.roots
            ],
        }


def export(home: Home, out: str | None = None, snippet: str | None = None, client_path: str | None = None) -> Export:
    """The bundle (to `out`, else returned for stdout) and a chrony client snippet (to `snippet`).
    Every argument is checked before either file is written."""
    out_path = fsutil.check_destination(out, "--out") if out else None
    snippet_path = fsutil.check_destination(snippet, "--chrony-snippet") if snippet else None
    if out_path and snippet_path and out_path.absolute() == snippet_path.absolute():
        raise NtspkiError("--out and --chrony-snippet name the same file", 2)
    if client_path is not None and (not client_path.startswith("/") or any(c.isspace() for c in client_path)):
        raise NtspkiError(f"bad --client-path {client_path!r}: an absolute path without spaces", 2)
    if not (home.ca_dir / "root.pem").exists():
        home.require_readable()
        raise NtspkiError(f"no CA in {home.path}: run `ntspki ca create` first")
    roots = bundle(home)
    pem = b"".join(pki.cert_pem(r) for r in roots)
    servers = lineage_names(home)
    text = None
    if snippet_path:
        where = client_path or (str(out_path.absolute()) if out_path else CLIENT_PATH)
        text = chrony_snippet(where, servers)
    if out_path:
        fsutil.atomic_write(out_path, pem, 0o644)
    if snippet_path and text is not None:
        fsutil.atomic_write(snippet_path, text.encode(), 0o644)
    return Export(
        roots, pem, str(out_path) if out_path else None, text, str(snippet_path) if snippet_path else None, servers
    )
