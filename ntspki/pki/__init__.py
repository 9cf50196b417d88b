"""Pure X.509, no I/O: building the CA and server certificates (here: every field chosen on
purpose, commented once), reading them, key types (`keys`), host names and SANs (`names`).

Layer: bottom. May import `cryptography` and `errors` only; everything else may import it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

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


def verify_chain(
    roots: list[x509.Certificate],
    chain: list[x509.Certificate],
    names: list[x509.GeneralName] | None = None,
    at: dt.datetime | None = None,
) -> None:
    """RFC 5280 path validation of leaf-first `chain` to one of `roots`, for each name given
    (default: every SAN of the leaf). Raises NtspkiError saying what failed."""
    if not chain:
        raise NtspkiError("empty certificate chain")
    leaf, intermediates = chain[0], chain[1:]
    builder = PolicyBuilder().store(Store(roots)).time(at or now())
    targets = names if names is not None else sans_of(leaf)
    if not targets:
        raise NtspkiError("the certificate has no DNS or IP subjectAltName")
    # Only the name match differs from one target to the next: signatures, validity, profile and
    # the CA's name constraints (checked on EVERY SAN of the leaf, whatever the target) do not.
    # So once the path validated for one target, a target that is literally one of the leaf's SANs
    # needs no second validation (each costs two signature checks: most of a batch's time).
    literal = set(sans_of(leaf))
    validated = False
    for gn in targets:
        if validated and gn in literal:
            continue
        subject: x509.verification.IPAddress | x509.verification.DNSName
        if isinstance(gn, x509.IPAddress):
            subject = x509.verification.IPAddress(gn.value)
            label = str(gn.value)
        elif gn.value.startswith("*."):
            # A wildcard is no name a client asks for: check one it covers, as a client would.
            subject = x509.verification.DNSName("wildcard-check." + gn.value[2:])
            label = gn.value
        else:
            subject = x509.verification.DNSName(gn.value)
            label = gn.value
        try:
            builder.build_server_verifier(subject).verify(leaf, intermediates)
            validated = True
        except VerificationError as e:
            if "Forbidden" in str(e) and "algorithm" in str(e):
                # The Web PKI profile of `cryptography` refuses Ed25519, which GnuTLS and chrony
                # accept: check that chain by hand instead.
                _verify_by_hand(roots, chain, gn, at or now())
                validated = True
                continue
            raise NtspkiError(f"chain does not verify for {label}: {e}")
        except ValueError as e:
            raise NtspkiError(f"cannot verify for {label}: {e}")


def _verify_by_hand(roots, chain, gn, at) -> None:
    """Signatures, validity, CA flags and the name: what the Web PKI verifier would have checked."""
    label = str(gn.value)
    path = list(chain)
    anchor = next((r for r in roots if r.subject == path[-1].issuer), None)
    if anchor is None:
        raise NtspkiError(f"chain does not verify for {label}: issuer of the last certificate is not a trusted root")
    path.append(anchor)
    for cert, issuer in zip(path, path[1:]):
        try:
            cert.verify_directly_issued_by(issuer)
        except Exception as e:
            raise NtspkiError(
                f"chain does not verify for {label}: bad signature on {cert.subject.rfc4514_string()} ({e})"
            )
        bc = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not bc.ca:
            raise NtspkiError(f"chain does not verify for {label}: {issuer.subject.rfc4514_string()} is not a CA")
    for cert in path:
        if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            raise NtspkiError(f"chain does not verify for {label}: {cert.subject.rfc4514_string()} is not valid now")
    if gn not in sans_of(chain[0]) and not (
        isinstance(gn, x509.DNSName) and _wildcard_match(gn.value, san_strings(chain[0]))
    ):
        raise NtspkiError(f"chain does not verify for {label}: name not in the certificate")
    # Like RFC 5280 (and GnuTLS): a CA's name constraints bind every SAN of the leaf, of their type.
    for ca in path[1:]:
        try:
            nc = ca.extensions.get_extension_for_class(x509.NameConstraints).value
        except x509.ExtensionNotFound:
            continue
        dns = [p.value for p in nc.permitted_subtrees or [] if isinstance(p, x509.DNSName)]
        nets = [p.value for p in nc.permitted_subtrees or [] if isinstance(p, x509.IPAddress)]
        for san in sans_of(chain[0]):
            if (
                isinstance(san, x509.DNSName)
                and dns
                and not any(san.value == d or san.value.endswith("." + d) for d in dns)
                or isinstance(san, x509.IPAddress)
                and nets
                and not any(san.value.version == n.version and san.value in n for n in nets)  # type: ignore[operator]
            ):
                raise NtspkiError(
                    f"chain does not verify for {label}: {san.value} is outside the CA's name constraints"
                )


def _wildcard_match(name: str, sans: list[str]) -> bool:
    head, _, rest = name.partition(".")
    return any(s.startswith("*.") and s[2:] == rest for s in sans)


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
