"""Pure X.509, no I/O: building the CA and server certificates (here: every field chosen on
purpose, commented once), reading them, key types (`keys`), host names and SANs (`names`), and
the one chain verifier and host-name matcher (`verify`).

Layer: bottom. May import `cryptography` and `errors` only; everything else may import it.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ntspki.constants import MAX_DAYS as MAX_DAYS
from ntspki.errors import NtspkiError
from ntspki.pki import keys

# Clients whose clocks are a little behind still accept a fresh certificate.
BACKDATE = dt.timedelta(hours=1)
ROOT_DAYS = 3650
INTERMEDIATE_DAYS = 1825
LEAF_DAYS = 90


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _name(cn: str, org: str = "ntspki") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def organization(cert: x509.Certificate) -> str | None:
    attrs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(attrs[0].value) if attrs else None


def _ca_key_usage() -> x509.KeyUsage:
    # A CA signs certificates and CRLs and nothing else.
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def make_root(key, cn: str, days: int = ROOT_DAYS, org: str = "ntspki") -> x509.Certificate:
    start = now() - BACKDATE
    return (
        x509.CertificateBuilder()
        .subject_name(_name(cn, org))
        .issuer_name(_name(cn, org))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        # path_length=1: the root signs intermediates, which sign only leaves.
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, keys.signature_hash(key))
    )


def make_intermediate(
    key,
    root_cert: x509.Certificate,
    root_key,
    cn: str,
    days: int = INTERMEDIATE_DAYS,
    permit_dns: Sequence[str] = (),
    permit_ip: Sequence[str] = (),
) -> x509.Certificate:
    start = now() - BACKDATE
    end = min(start + dt.timedelta(days=days), root_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, organization(root_cert) or "ntspki"))
        .issuer_name(root_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        # path_length=0: the intermediate issues end-entity certificates only.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        # Restricted to TLS servers: a leaked intermediate cannot mint client or code-signing certs.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_aki(root_cert), critical=False)
    )
    if permit_dns or permit_ip:
        # Name constraints keep the intermediate to the site's own domains/networks.
        permitted: list[x509.GeneralName] = [x509.DNSName(d) for d in permit_dns]
        permitted += [x509.IPAddress(ipaddress.ip_network(n, strict=False)) for n in permit_ip]
        builder = builder.add_extension(
            x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None), critical=True
        )
    return builder.sign(root_key, keys.signature_hash(root_key))


@functools.lru_cache(maxsize=8)  # certificates hash by DER: one lookup per issuer, not per leaf
def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def make_leaf(
    key,  # the server's key: private (issue) or public (ntspki sign: the private key is elsewhere)
    issuer_cert: x509.Certificate,
    issuer_key,
    sans: list[x509.GeneralName],
    days: int = LEAF_DAYS,
) -> x509.Certificate:
    start = now() - BACKDATE
    end = start + dt.timedelta(days=days)
    if end > issuer_cert.not_valid_after_utc:
        left = (issuer_cert.not_valid_after_utc - start).days
        raise NtspkiError(
            f"the intermediate CA expires on {issuer_cert.not_valid_after_utc:%Y-%m-%d}: "
            f"use --days {max(left, 0)} or less, or make a new intermediate"
        )
    public = key.public_key() if hasattr(key, "public_key") else key
    if isinstance(public, keys.rsa.RSAPublicKey):
        # RSA: signatures (TLS 1.3) and, for old TLS 1.2 stacks, key transport.
        usage = dict(digital_signature=True, key_encipherment=True)
    else:
        usage = dict(digital_signature=True, key_encipherment=False)
    return (
        x509.CertificateBuilder()
        # CN repeats the first name for humans and old tools; clients match on the SAN only.
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(sans[0].value))]))
        .issuer_name(issuer_cert.subject)
        .public_key(public)
        # Random positive serial (up to 159 bits), unpredictable as CA/B requires.
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
                **usage,
            ),
            critical=True,
        )
        # NTS-KE is TLS with the time server as TLS server.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(_aki(issuer_cert), critical=False)
        .sign(issuer_key, keys.signature_hash(issuer_key))
    )


# ---- reading and checking --------------------------------------------------------------------


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_certs(data: bytes, what: str = "certificate file") -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise NtspkiError(f"{what} holds no readable PEM certificate ({e})")
    return certs


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def sans_of(cert: x509.Certificate) -> list[x509.GeneralName]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [gn for gn in ext if isinstance(gn, (x509.DNSName, x509.IPAddress))]


def san_strings(cert: x509.Certificate) -> list[str]:
    return [str(gn.value) for gn in sans_of(cert)]


def is_self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject


@dataclass
class CertInfo:
    subject: str
    sans: list[str]
    serial: str
    sha256: str
    not_before: str
    not_after: str
    issuer: str

    @classmethod
    def of(cls, cert: x509.Certificate) -> CertInfo:
        return cls(
            subject=cert.subject.rfc4514_string(),
            sans=san_strings(cert),
            serial=format(cert.serial_number, "x"),
            sha256=fingerprint(cert),
            not_before=cert.not_valid_before_utc.isoformat(),
            not_after=cert.not_valid_after_utc.isoformat(),
            issuer=cert.issuer.rfc4514_string(),
        )
