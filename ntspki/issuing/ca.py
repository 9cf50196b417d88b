"""The site CA on disk: a root (key encrypted at rest) and the intermediate that issues."""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from ntspki import pki
from ntspki.errors import NtspkiError
from ntspki.pki import keys
from ntspki.store import Home, fsutil


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


def name_constraints(permit_dns=(), permit_ip=()) -> tuple[list[str], list[str]]:
    """Checked, normalised --permit-dns domains and --permit-ip networks."""
    import ipaddress

    from ntspki.pki import names

    for net in permit_ip:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise NtspkiError(f"bad --permit-ip {net!r}: not an IP network", 2)
    return [names.normalize_dns_name(d) for d in permit_dns], list(permit_ip)


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
    home.ensure()
    with home.lock():
        refuse_overwrite(home, force)
        aside = None
        if exists(home):
            aside = home.path / f"ca.old-{dt.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
        tag = secrets.token_hex(4)  # distinguishes CAs of different sites/labs in trust stores
        root_key = keys.generate(key_type)
        root = pki.make_root(root_key, f"{name} root CA {tag}", root_days)
        inter_key = keys.generate(key_type)
        inter = pki.make_intermediate(
            inter_key, root, root_key, f"{name} intermediate CA {tag}", intermediate_days, permit_dns, permit_ip
        )
        if aside is not None:
            os.rename(home.ca_dir, aside)
            home.ensure()
        # Keys first, certificates last: root.pem appearing means the CA is complete.
        fsutil.atomic_write(home.private_dir / "root.key", keys.private_pem(root_key, passphrase), 0o600)
        fsutil.atomic_write(home.private_dir / "intermediate.key", keys.private_pem(inter_key), 0o600)
        fsutil.atomic_write(home.ca_dir / "intermediate.pem", pki.cert_pem(inter), 0o644)
        fsutil.atomic_write(home.ca_dir / "root.pem", pki.cert_pem(root), 0o644)
    return CA(root, inter, inter_key)


def load(home: Home) -> CA:
    home.require_readable()
    if not exists(home):
        raise NtspkiError(f"no CA in {home.path}: run `ntspki ca create` first")
    try:
        root = x509.load_pem_x509_certificate((home.ca_dir / "root.pem").read_bytes())
        inter = x509.load_pem_x509_certificate((home.ca_dir / "intermediate.pem").read_bytes())
        key_pem = (home.private_dir / "intermediate.key").read_bytes()
    except OSError as e:
        raise NtspkiError(f"cannot read the CA in {home.ca_dir}: {e.strerror}")
    except ValueError as e:
        raise NtspkiError(f"the CA in {home.ca_dir} is damaged: {e}")
    return CA(root, inter, keys.load_private_pem(key_pem, what="intermediate CA key"))


def new_intermediate(
    home: Home,
    passphrase: bytes | None,
    intermediate_days: int = pki.INTERMEDIATE_DAYS,
    permit_dns: Sequence[str] = (),
    permit_ip: Sequence[str] = (),
    key_type: str | None = None,
) -> CA:
    """A fresh intermediate signed by the existing root (needs the root passphrase)."""
    ca = load(home)
    root_key = keys.load_private_pem((home.private_dir / "root.key").read_bytes(), passphrase, what="root CA key")
    with home.lock():
        key = keys.generate(key_type or keys.key_type_of(ca.intermediate_key))
        cn = str(ca.intermediate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)
        inter = pki.make_intermediate(key, ca.root, root_key, cn, intermediate_days, permit_dns, permit_ip)
        # The old pair stays in place (and is kept as *.old) until each new file replaces it in
        # one rename: a crash never leaves the CA without an intermediate.
        for path in (home.private_dir / "intermediate.key", home.ca_dir / "intermediate.pem"):
            backup = path.with_name(path.name + ".old")
            backup.unlink(missing_ok=True)
            os.link(path, backup)
        fsutil.atomic_write(home.private_dir / "intermediate.key", keys.private_pem(key), 0o600)
        fsutil.atomic_write(home.ca_dir / "intermediate.pem", pki.cert_pem(inter), 0o644)
    return CA(ca.root, inter, key)
