"""The site CA on disk: a root (key encrypted at rest) and the intermediate that issues.

    ca/root.pem, ca/intermediate.pem       the issuing chain: what `issue` signs with
    ca/private/root.key                    encrypted (PBKDF2-HMAC-SHA256, keys.KDF_ROUNDS)
    ca/private/intermediate.key
    ca/trust.pem                           every root clients must trust now (trust.py)
    ca/crl.pem                             the CRLs (revocation.py)
    ca/retired/SERIAL.pem, ca/private/retired/SERIAL.key
                                           intermediates replaced by rotate-intermediate or a root
                                           rollover: their certificates live on, so they still sign CRLs
    ca/next/, ca/previous/, ca/rollover.json   a root rollover under way (rollover.py)

Everything a CA is lives under ca/: `create --force` swaps the whole directory in one step.
What `ca status` reports about it is in castatus.py.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from ntspki import pki
from ntspki.errors import NtspkiError
from ntspki.pki import keys, verify
from ntspki.store import Home, fsutil

NAME_MAX = 40  # "NAME root CA 1234abcd" must fit the 64 characters X.520 allows a common name


@dataclass
class CA:
    root: x509.Certificate
    intermediate: x509.Certificate
    intermediate_key: object

    @property
    def chain_pem(self) -> bytes:
        """What follows the leaf in a fullchain: the intermediate, never the root."""
        return pki.cert_pem(self.intermediate)


def exists(home: Home) -> bool:
    return (home.ca_dir / "root.pem").exists()


def refuse_overwrite(home: Home, force: bool) -> None:
    if exists(home) and not force:
        raise NtspkiError(
            f"a CA already exists in {home.ca_dir}; its key would be lost "
            "(use --force to replace it; the old one is kept aside)"
        )


def check_name(name: str) -> str:
    """--name: the organisation of the CA certificates and the start of their common names."""
    if not name or name != name.strip() or len(name) > NAME_MAX or not name.isprintable():
        raise NtspkiError(f"bad --name {name!r}: 1 to {NAME_MAX} printable characters, no outer spaces", 2)
    return name


def name_constraints(permit_dns=(), permit_ip=()) -> tuple[list[str], list[str]]:
    """Checked, normalised --permit-dns domains and --permit-ip networks."""
    import ipaddress

    from ntspki.pki import names

    for net in permit_ip:
        try:
            if "%" in net:  # a zone index means nothing in a certificate
                raise ValueError(net)
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise NtspkiError(f"bad --permit-ip {net!r}: not an IP network", 2) from None
    for domain in permit_dns:
        if "*" in domain or names.is_ip(domain):
            raise NtspkiError(f"bad --permit-dns {domain!r}: give a domain (it covers every name below it)", 2)
    return [names.normalize_dns_name(d) for d in permit_dns], list(permit_ip)


def constraints_of(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    """The permitted DNS domains and IP networks of a CA certificate (empty: unconstrained)."""
    try:
        nc = cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return [], []
    subtrees = nc.permitted_subtrees or []
    return (
        [str(p.value) for p in subtrees if isinstance(p, x509.DNSName)],
        [str(p.value) for p in subtrees if isinstance(p, x509.IPAddress)],
    )


def tag() -> str:
    """Distinguishes CAs of different sites, labs and generations in trust stores and CRL issuers."""
    return secrets.token_hex(4)


def build_into(
    directory: Path,
    key_type: str,
    passphrase: bytes | None,
    root_days: int,
    intermediate_days: int,
    permit_dns: list[str],
    permit_ip: list[str],
    name: str,
) -> CA:
    """A complete CA (root, intermediate, keys) written into `directory` (which must not exist):
    keys first, certificates last. Shared by `create` and a root rollover's new generation."""
    t = tag()
    root_key = keys.generate(key_type)
    root = pki.make_root(root_key, f"{name} root CA {t}", root_days, org=name)
    inter_key = keys.generate(key_type)
    inter = pki.make_intermediate(
        inter_key, root, root_key, f"{name} intermediate CA {t}", intermediate_days, permit_dns, permit_ip
    )
    root_pem = keys.private_pem(root_key, passphrase)  # any passphrase problem shows here, before a write
    directory.mkdir(mode=0o755)
    fsutil.make_private_dir(directory / "private")
    fsutil.atomic_write(directory / "private" / "root.key", root_pem, 0o600)
    fsutil.atomic_write(directory / "private" / "intermediate.key", keys.private_pem(inter_key), 0o600)
    fsutil.atomic_write(directory / "intermediate.pem", pki.cert_pem(inter), 0o644)
    fsutil.atomic_write(directory / "root.pem", pki.cert_pem(root), 0o644)
    return CA(root, inter, inter_key)


def check_lifetimes(root_days: int, intermediate_days: int) -> None:
    """An intermediate asked to outlive its root is a mistake, not something to shorten quietly."""
    if intermediate_days > root_days:
        raise NtspkiError(f"the intermediate ({intermediate_days} days) cannot outlive the root ({root_days} days)", 2)


def create(
    home: Home,
    key_type: str = keys.DEFAULT_KEY_TYPE,
    passphrase: bytes | None = None,
    root_days: int = pki.ROOT_DAYS,
    intermediate_days: int = pki.INTERMEDIATE_DAYS,
    permit_dns: Sequence[str] = (),
    permit_ip: Sequence[str] = (),
    force: bool = False,
    name: str = "ntspki",
) -> CA:
    """A new CA. With force, the old one keeps working until the new one is complete on disk; then
    the two ca/ directories swap in one rename and the old one is kept as HOME/ca.old-DATE-XXXX."""
    check_name(name)
    check_lifetimes(root_days, intermediate_days)
    home.ensure()
    with home.lock():
        refuse_overwrite(home, force)
        _sweep(home)
        staging = home.path / f".ca.new-{secrets.token_hex(4)}"
        try:
            made = build_into(
                staging, key_type, passphrase, root_days, intermediate_days, list(permit_dns), list(permit_ip), name
            )
            from ntspki.issuing import trust

            trust.write_bundle(staging, [made.root])
            _swap_in(home, staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return made


def _aside(home: Home) -> Path:
    return home.path / f"ca.old-{dt.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def _sweep(home: Home) -> None:
    """What a killed `create` left: a complete CA is kept aside (killed just after the exchange,
    it is the old CA), anything else goes (it was never in use)."""
    for stale in home.path.glob(".ca.new-*"):
        if (stale / "root.pem").exists():
            os.rename(stale, _aside(home))
        else:
            shutil.rmtree(stale, ignore_errors=True)


def _swap_in(home: Home, staging: Path) -> None:
    old = home.ca_dir
    aside = _aside(home)
    if not old.exists():
        os.rename(staging, old)
    elif fsutil.exchange(staging, old):
        # `staging` now holds the old CA. An empty ca/ (a fresh home) is not worth keeping.
        if any(p.is_file() for p in staging.rglob("*")):
            os.rename(staging, aside)
        else:
            shutil.rmtree(staging)
    else:
        os.rename(old, aside)
        os.rename(staging, old)
    fsutil.fsync_dir(home.path)


def load(home: Home) -> CA:
    home.require_readable()
    if not exists(home):
        raise NtspkiError(f"no CA in {home.path}: run `ntspki ca create` first")
    try:
        root = x509.load_pem_x509_certificate(read_ca_file(home.ca_dir / "root.pem"))
        inter = x509.load_pem_x509_certificate(read_ca_file(home.ca_dir / "intermediate.pem"))
        key_pem = read_ca_file(home.private_dir / "intermediate.key")
    except OSError as e:
        raise NtspkiError(f"cannot read the CA in {home.ca_dir}: {e.strerror}")
    except ValueError as e:
        raise NtspkiError(f"the CA in {home.ca_dir} is damaged: {e}")
    return CA(root, inter, keys.load_private_pem(key_pem, what="intermediate CA key"))


def read_ca_file(path: Path) -> bytes:
    """A file of the CA: bounded, so a damaged or replaced one (a FIFO, a device) is an error."""
    return fsutil.read_bounded(path, fsutil.PEM_LIMIT, "CA file", exit_code=1)


def load_root_key(home: Home, passphrase: bytes | None, directory: Path | None = None):
    path = (directory or home.ca_dir) / "private" / "root.key"
    data = read_ca_file(path)
    return keys.load_private_pem(data, passphrase, what=f"root CA key {path}")


def root_key_encrypted(home: Home) -> bool:
    return keys.is_encrypted_pem(read_ca_file(home.private_dir / "root.key"))


# ---- intermediates ------------------------------------------------------------------------------


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def retire(home: Home, cert: x509.Certificate, key_pem: bytes) -> None:
    """Keep an intermediate that is leaving service: its certificates still need its CRLs.
    Key first, certificate last (the certificate's presence means both are there)."""
    cert_path = home.ca_dir / "retired" / f"{serial_hex(cert)}.pem"
    if cert_path.exists():
        return
    fsutil.make_private_dir(home.private_dir / "retired")
    cert_path.parent.mkdir(mode=0o755, exist_ok=True)
    fsutil.atomic_write(home.private_dir / "retired" / f"{serial_hex(cert)}.key", key_pem, 0o600)
    fsutil.atomic_write(cert_path, pki.cert_pem(cert), 0o644)


@dataclass
class Issuer:
    """An intermediate whose key ntspki holds: the current one or a retired one."""

    cert: x509.Certificate
    key_path: Path
    current: bool

    def key(self):
        return keys.load_private_pem(read_ca_file(self.key_path), what=f"intermediate CA key {self.key_path}")


def issuers(home: Home) -> list[Issuer]:
    """The current intermediate first, then the retired ones (newest first)."""
    out = []
    current = home.ca_dir / "intermediate.pem"
    if current.exists():
        out.append(
            Issuer(x509.load_pem_x509_certificate(read_ca_file(current)), home.private_dir / "intermediate.key", True)
        )
    retired = sorted((home.ca_dir / "retired").glob("*.pem"), key=lambda p: p.stat().st_mtime, reverse=True)
    for p in retired:
        out.append(
            Issuer(
                x509.load_pem_x509_certificate(read_ca_file(p)), home.private_dir / "retired" / f"{p.stem}.key", False
            )
        )
    return out


def issuer_of(home: Home, cert: x509.Certificate) -> Issuer | None:
    """Which of the site's intermediates signed `cert` (by signature, not by name)."""
    for issuer in issuers(home):
        if verify.issued_by(cert, issuer.cert):
            return issuer
    return None


def rotate_intermediate(
    home: Home,
    passphrase: bytes | None,
    intermediate_days: int = pki.INTERMEDIATE_DAYS,
    permit_dns: Sequence[str] = (),
    permit_ip: Sequence[str] = (),
    key_type: str | None = None,
) -> CA:
    """A fresh intermediate signed by the same root (needs the root passphrase). New issuance uses
    it; certificates of the old one stay valid (clients trust the root) and it is retired, not
    deleted. Name constraints carry over unless new ones are given."""
    ca = load(home)
    root_key = load_root_key(home, passphrase)  # a wrong passphrase fails here, before any write
    if not keys.key_matches_cert(root_key, ca.root):
        raise NtspkiError(f"{home.private_dir / 'root.key'} is not the key of {home.ca_dir / 'root.pem'}")
    if not (permit_dns or permit_ip):
        permit_dns, permit_ip = constraints_of(ca.intermediate)
    with home.lock():
        key = keys.generate(key_type or keys.key_type_of(ca.intermediate_key))
        org = pki.organization(ca.root) or "ntspki"
        inter = pki.make_intermediate(
            key,
            ca.root,
            root_key,
            f"{org} intermediate CA {tag()}",
            intermediate_days,
            list(permit_dns),
            list(permit_ip),
        )
        retire(home, ca.intermediate, read_ca_file(home.private_dir / "intermediate.key"))
        # Key first, certificate last; a crash in between leaves a pair that `load` reads but that
        # fails issue's key check, and running this again replaces both.
        fsutil.atomic_write(home.private_dir / "intermediate.key", keys.private_pem(key), 0o600)
        fsutil.atomic_write(home.ca_dir / "intermediate.pem", pki.cert_pem(inter), 0o644)
    return CA(ca.root, inter, key)


# ---- status --------------------------------------------------------------------------------------
