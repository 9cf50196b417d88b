"""The one certificate chain verifier and the one host-name matcher, for every caller and key type.

`issue`, `renew`, `deploy`, `check`, `show`, `probe`, the ACME chain check and the fleet commands all
call `verify_chain`, so a chain that one of them accepts is accepted by all, whatever its key type.
cryptography's Web PKI verifier cannot be that one verifier: it refuses Ed25519 (which chrony and
GnuTLS accept), and some of its releases search paths for minutes on hostile chains. This module is
an explicit RFC 5280 policy over cryptography's primitives, tightened as the Web PKI is:

- at most MAX_CHAIN certificates, counted before anything is parsed; the path runs from the leaf
  through the certificates sent, in any order (the sender's first), to the first certificate a
  trust anchor signed: a search bounded by MAX_CHAIN squared signature checks (`_Search`);
- keys: P-256, P-384, RSA of 2048 bits or more, Ed25519; signatures: ECDSA or RSA (PKCS#1 v1.5 or
  PSS) with SHA-256/384/512, Ed25519. Anything else (DSA, P-192, P-224, explicit curve parameters,
  short RSA, SHA-1, MD5) is refused by name;
- every certificate, the anchor included: valid at the given time, no critical extension this module
  does not enforce; every issuer: basicConstraints cA, keyUsage keyCertSign, pathLenConstraint,
  serverAuth if it lists extended key usages, its name constraints (DNS and IP, permitted and
  excluded) on every DNS/IP subjectAltName below it; the leaf: no CA, serverAuth if it lists extended
  key usages, at least one DNS or IP subjectAltName, and each name asked for matched by `name_error`;
- an anchor is matched by name AND key: a trusted certificate only counts when its key verifies the
  signature of the certificate that names it as issuer.

Every refusal is a ChainError whose `rule` says which rule failed (callers branch on it, never on the
text) and whose message names the certificate, the rule and the name involved.

Why one file over ~400 lines: this is a security policy, and a reviewer must be able to see all of
it at once: the path search, the per-certificate rules and the name matcher depend on each other
(name constraints are checked against the names the matcher accepts; the search relies on every rule
being applied to each candidate). Split, a rule could be skipped by one path without any single file
showing it.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, PublicKeyAlgorithmOID, SignatureAlgorithmOID

from ntspki import pki
from ntspki.errors import NtspkiError
from ntspki.pki import names as names_mod

# A server sends its leaf and one or two intermediates; 8 leaves room for cross-signs and stops
# hostile files before any work is done on them.
MAX_CHAIN = 8

ACCEPTED_KEYS = "P-256, P-384, RSA of 2048 bits or more, and Ed25519"
ACCEPTED_SIGNATURES = "ECDSA or RSA with SHA-256/384/512, and Ed25519"
_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384"}
_SIGNATURES = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA256,
    SignatureAlgorithmOID.ECDSA_WITH_SHA384,
    SignatureAlgorithmOID.ECDSA_WITH_SHA512,
    SignatureAlgorithmOID.RSA_WITH_SHA256,
    SignatureAlgorithmOID.RSA_WITH_SHA384,
    SignatureAlgorithmOID.RSA_WITH_SHA512,
    SignatureAlgorithmOID.ED25519,
}
_PSS_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
_SIGNATURE_NAMES = {
    getattr(SignatureAlgorithmOID, n): n.lower().replace("_", "-")
    for n in dir(SignatureAlgorithmOID)
    if n.isupper() and not n.startswith("_")
}
# Extensions whose meaning is enforced below; any other one marked critical is refused (RFC 5280 4.2).
_ENFORCED = {
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.KEY_USAGE,
    ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    ExtensionOID.NAME_CONSTRAINTS,
}


class ChainError(NtspkiError):
    """A chain that does not verify. `position` is the 1-based place in the chain of the certificate
    at fault (0: a trust anchor that was not sent; None: the chain as a whole). `rule`, stable for
    callers to branch on, is one of: empty, too-long, algorithm, signature, unknown-issuer,
    untrusted (an anchor has the issuer's name, not its key), expired, not-yet-valid, malformed,
    critical-extension, leaf-is-ca, eku, no-san, not-ca, key-usage, path-length, name-constraints,
    name (a name asked for is not the leaf's)."""

    def __init__(self, message: str, rule: str, position: int | None = None):
        super().__init__(message)
        self.rule = rule
        self.position = position


# ---- reading ----------------------------------------------------------------------------------


def load_chain(data: bytes, what: str = "certificate file") -> list[x509.Certificate]:
    """The certificates of a chain file (leaf first), refusing more than MAX_CHAIN before parsing."""
    count = data.count(b"-----BEGIN CERTIFICATE-----")
    if count > MAX_CHAIN:
        raise ChainError(
            f"{what} holds {count} certificates; a chain has at most {MAX_CHAIN} (the server certificate "
            "and its intermediates)",
            "too-long",
        )
    return pki.load_certs(data, what)


# ---- names ------------------------------------------------------------------------------------


def dns_matches(pattern: str, name: str) -> bool:
    """How TLS clients (GnuTLS in chrony, OpenSSL) match a DNS name against a DNS SAN: equal
    ignoring case and a final dot, or a wildcard that is the whole left-most label standing for
    exactly one non-empty label, with at least two labels after it."""
    pattern, name = pattern.rstrip(".").lower(), name.rstrip(".").lower()
    if pattern == name:
        return True
    if not pattern.startswith("*.") or pattern.count(".") < 2:
        return False
    head, _, rest = name.partition(".")
    return bool(head) and head != "*" and rest == pattern[2:]


def name_error(leaf: x509.Certificate, name: str | x509.GeneralName) -> str | None:
    """None when `name` is one of the leaf's names, else why not. chrony's (GnuTLS's) rule: an IP
    address must be an IP SAN, a host name a DNS SAN; no fallback to the subject's CN."""
    sans = pki.sans_of(leaf)
    if isinstance(name, x509.IPAddress):
        ip, text = name.value, str(name.value)
    elif isinstance(name, x509.GeneralName):
        ip, text = None, str(name.value)
    else:
        ip, text = names_mod.parse_ip(name), name
    if ip is not None:
        if any(isinstance(g, x509.IPAddress) and g.value == ip for g in sans):
            return None
        return (
            f"the name in the certificate does not match: {ip} is not an IP SAN "
            f"(an address needs an IP SAN; names: {_listed(sans)})"
        )
    wanted = text.rstrip(".").lower()
    if not wanted.isascii():  # a name typed in Unicode is matched as the A-label it stands for
        try:
            wanted = names_mod.normalize_dns_name(wanted)
        except NtspkiError:
            pass
    if any(isinstance(g, x509.DNSName) and dns_matches(g.value, wanted) for g in sans):
        return None
    return f"the name in the certificate does not match: {wanted} is not a DNS SAN (names: {_listed(sans)})"


def _listed(sans: list[x509.GeneralName]) -> str:
    return ", ".join(str(g.value) for g in sans) or "none"


# ---- small public helpers (check reports chain order with them) ----------------------------------


def is_ca(cert: x509.Certificate) -> bool:
    """Whether basicConstraints says cA (a certificate with unreadable extensions is no CA)."""
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (x509.ExtensionNotFound, ValueError):
        return False


def eku_error(leaf: x509.Certificate) -> str | None:
    """None when `leaf` may serve TLS: no extendedKeyUsage, or one listing serverAuth (anyExtendedKeyUsage
    does not do, as in the Web PKI)."""
    eku = _extension(leaf, x509.ExtendedKeyUsage)
    if eku is None or ExtendedKeyUsageOID.SERVER_AUTH in eku:
        return None
    return "the certificate is not for TLS servers (extendedKeyUsage lacks serverAuth)"


def issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    """Whether `parent` is named as `child`'s issuer and its key verifies `child`'s signature."""
    if child.issuer != parent.subject:
        return False
    return _signature_verifies(child, parent)


# Certificates hash and compare by their DER, so a pair always verifies the same way: a batch
# checks its intermediate against the root once, not once for every leaf.
@functools.lru_cache(maxsize=32)
def _signature_verifies(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


# ---- the verifier -----------------------------------------------------------------------------


def verify_chain(
    roots: Anchors | Iterable[x509.Certificate] | None,
    chain: Sequence[x509.Certificate],
    names: Iterable[str | x509.GeneralName] | None = None,
    at: dt.datetime | None = None,
) -> list[x509.Certificate]:
    """Validate leaf-first `chain` up to one of `roots` at time `at` (default: now) for every name
    in `names` (default: every DNS/IP SAN of the leaf). Returns the path, leaf first, ending with
    the trust anchor. Raises ChainError saying which certificate broke which rule.

    roots=None takes the chain's last certificate as the anchor, for a chain fresh from an ACME CA
    over an authenticated channel whose root this machine may not hold: every rule but trust applies."""
    if not chain:
        raise ChainError("the chain is empty: there is no server certificate", "empty")
    if len(chain) > MAX_CHAIN:
        raise ChainError(
            f"the chain holds {len(chain)} certificates; a chain has at most {MAX_CHAIN} (the server "
            "certificate and its intermediates)",
            "too-long",
        )
    when = at or pki.now()
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)  # cryptography's times are UTC
    sent = list(chain)
    if roots is None:
        if len(sent) < 2:
            raise ChainError(
                f"chain does not verify: {_label(sent[0], 1)} came without the certificate of its issuer",
                "unknown-issuer",
                1,
            )
        anchors, sent, anchor_position = Anchors(sent[-1:]), sent[:-1], len(sent)
    else:
        anchors, anchor_position = (roots if isinstance(roots, Anchors) else Anchors(roots)), 0
    path = _Search(anchors, sent, anchor_position).path()
    for index in range(len(path.certs)):
        _check_one(path, index, when)
    _check_leaf(path)
    for index in range(1, len(path.certs)):
        _check_issuer(path, index)
    leaf = path.certs[0]
    if isinstance(names, (str, x509.GeneralName)):
        names = [names]  # one name, not its characters
    targets = list(names) if names is not None else list(pki.sans_of(leaf))
    for target in targets:
        problem = name_error(leaf, target)
        if problem:
            raise ChainError(problem, "name", 1)
    return path.certs


class _Path:
    """A path being judged: certificates from the leaf up to the trust anchor, each with its
    1-based place in the chain as sent (0 for a trust anchor that was not sent)."""

    def __init__(self, certs: list[x509.Certificate], positions: list[int]):
        self.certs, self.positions = certs, positions

    def label(self, index: int) -> _label:
        return _label(self.certs[index], self.positions[index], trusted=self.positions[index] == 0)

    def fail(self, index: int, rule: str, text: str) -> ChainError:
        return ChainError(f"chain does not verify: {text}", rule, self.positions[index])


class Anchors:
    """Trusted certificates by subject, each (subject, key) once: a file of many copies of one
    certificate costs one signature check, not many. Build it once for many chains."""

    def __init__(self, roots: Iterable[x509.Certificate]):
        self.by_subject: dict[x509.Name, list[x509.Certificate]] = {}
        seen = set()
        for root in roots:
            key = (root.subject, _spki(root))
            if key not in seen:
                seen.add(key)
                self.by_subject.setdefault(root.subject, []).append(root)


def _spki(cert: x509.Certificate) -> bytes:
    try:
        return _spki_der(cert.tbs_certificate_bytes)
    except (IndexError, ValueError):
        return cert.tbs_certificate_bytes


class _Search:
    """The path from the leaf to a trust anchor through the certificates sent, as TLS clients find
    it: the sender's order first, any order accepted. At most MAX_CHAIN certificates, each tried
    as an issuer at most once per child and given up for good once it leads nowhere, so the work
    is bounded by MAX_CHAIN squared signature checks (plus those of anchors sharing a name)."""

    def __init__(self, anchors: Anchors, sent: list[x509.Certificate], anchor_position: int):
        self.anchors, self.sent, self.anchor_position = anchors, sent, anchor_position
        self.dead: set[int] = set()
        self.failure: tuple[int, ChainError] | None = None  # the one found deepest in the chain

    def path(self) -> _Path:
        _check_algorithms(self.sent[0], _label(self.sent[0], 1), 1, anchor=False)
        found = self._from([0])
        if found is None:
            assert self.failure is not None
            raise self.failure[1]
        return found

    def _from(self, indices: list[int]) -> _Path | None:
        index = indices[-1]
        cert, label = self.sent[index], _label(self.sent[index], index + 1)
        named = self.anchors.by_subject.get(cert.issuer, [])
        for anchor in named:
            if issued_by(cert, anchor):
                at = self.anchor_position
                _check_algorithms(anchor, _label(anchor, at, trusted=at == 0), at, anchor=True)
                certs = [self.sent[i] for i in indices] + [anchor]
                return _Path(certs, [i + 1 for i in indices] + [self.anchor_position])
        order = sorted(range(len(self.sent)), key=lambda i: (i != index + 1, i))
        candidates = [i for i in order if i not in indices and self.sent[i].subject == cert.issuer]
        for i in candidates:
            if i in self.dead:
                continue
            _check_algorithms(self.sent[i], _label(self.sent[i], i + 1), i + 1, anchor=False)
            if issued_by(cert, self.sent[i]):
                found = self._from(indices + [i])
                if found is not None:
                    return found
                self.dead.add(i)
        self._note(len(indices), self._dead_end(cert, label, index, named, candidates))
        return None

    def _dead_end(self, cert, label, index, named, candidates) -> ChainError:
        issuer = _name(cert.issuer)
        refused = [(a, p) for a in named if (p := _key_problem(a))]
        if refused:  # some releases of cryptography cannot even check a signature with such a key
            anchor, problem = refused[0]
            text = f"the trusted certificate {_name(anchor.subject)} {problem}"
            return ChainError(f"chain does not verify: {text}", "algorithm", 0)
        unsigned = [i for i in candidates if i not in self.dead]
        if unsigned:
            return ChainError(
                f"chain does not verify: the signature on {label} does not verify with the key of "
                f"{_label(self.sent[unsigned[0]], unsigned[0] + 1)}, which it names as its issuer",
                "signature",
                index + 1,
            )
        if named:
            return ChainError(
                f"chain does not verify: {label} names {issuer} as its issuer; a trusted certificate has "
                "that name but not the key that signed it (another CA with the same name)",
                "untrusted",
                index + 1,
            )
        if candidates:
            return ChainError(
                f"chain does not verify: {label} was issued by {issuer}, which leads to no trusted "
                "certificate (chrony: 'The certificate issuer is unknown.')",
                "unknown-issuer",
                index + 1,
            )
        return ChainError(
            f"chain does not verify: {label} was issued by {issuer}, which is neither trusted nor in the "
            "chain (chrony: 'The certificate issuer is unknown.'): the server must send its "
            "intermediates and the client must trust the root",
            "unknown-issuer",
            index + 1,
        )

    def _note(self, depth: int, error: ChainError) -> None:
        if self.failure is None or depth > self.failure[0]:
            self.failure = (depth, error)


def _check_algorithms(cert: x509.Certificate, label: _label, position: int, anchor: bool) -> None:
    """Keys and signatures this verifier accepts; how an anchor itself was signed does not matter."""
    problem = _key_problem(cert) if anchor else _signature_problem(cert) or _key_problem(cert)
    if problem:
        raise ChainError(f"chain does not verify: {label} {problem}", "algorithm", position)


def _check_one(path: _Path, index: int, when: dt.datetime) -> None:
    cert, label = path.certs[index], path.label(index)
    if when < cert.not_valid_before_utc:
        raise path.fail(
            index, "not-yet-valid", f"{label} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    if when > cert.not_valid_after_utc:
        raise path.fail(index, "expired", f"{label} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    problem = _extensions_problem(cert)
    if problem is None:
        return
    rule, detail = problem
    if rule == "malformed":
        raise path.fail(index, rule, f"{label} has an unreadable extension ({detail})")
    raise path.fail(
        index,
        rule,
        f"{label} has a critical extension that is not enforced here ({detail}): a client "
        "that does not know it must refuse the certificate",
    )


# Pure functions of a certificate (which hashes and compares by its DER), cached so that a batch
# judges its intermediate and root once rather than once for every leaf.
@functools.lru_cache(maxsize=32)
def _extensions_problem(cert: x509.Certificate) -> tuple[str, str] | None:
    """("malformed", why) for an unreadable extension, ("critical-extension", which) for a critical
    extension this module does not enforce, else None."""
    try:
        extensions = cert.extensions
    except ValueError as e:  # a duplicate or undecodable extension
        return "malformed", str(e)
    for ext in extensions:
        if ext.critical and ext.oid not in _ENFORCED:
            return "critical-extension", _oid_name(ext.oid)
    return None


def _check_leaf(path: _Path) -> None:
    leaf, label = path.certs[0], path.label(0)
    if is_ca(leaf):
        raise path.fail(0, "leaf-is-ca", f"{label} is a CA certificate (basicConstraints cA), not a server certificate")
    if eku_error(leaf):
        raise path.fail(0, "eku", f"{label} is not for TLS servers (extendedKeyUsage lacks serverAuth)")
    if not pki.sans_of(leaf):
        raise path.fail(0, "no-san", f"{label} has no DNS or IP subjectAltName: no client can match it")


def _check_issuer(path: _Path, index: int) -> None:
    """Rules for path.certs[index] as the issuer of the certificate before it and as the CA of all of them."""
    ca, label, child = path.certs[index], path.label(index), path.label(index - 1)
    bc = _extension(ca, x509.BasicConstraints)
    if bc is None or not bc.ca:
        why = "has no basicConstraints" if bc is None else "has basicConstraints without cA"
        raise path.fail(index, "not-ca", f"{label} issued {child} but {why}: it is no CA")
    usage = _extension(ca, x509.KeyUsage)
    if usage is None or not usage.key_cert_sign:
        why = "has no keyUsage" if usage is None else "has a keyUsage without keyCertSign"
        raise path.fail(index, "key-usage", f"{label} issued {child} but {why}: it may not sign certificates")
    eku = _extension(ca, x509.ExtendedKeyUsage)
    if eku is not None and not {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE} & set(eku):
        raise path.fail(
            index, "eku", f"{label} may not issue TLS server certificates (its extendedKeyUsage lacks serverAuth)"
        )
    # RFC 5280 6.1.4 (l): self-issued intermediates (a CA re-keying) do not count.
    below = sum(1 for c in path.certs[1:index] if c.issuer != c.subject)
    if bc.path_length is not None and below > bc.path_length:
        raise path.fail(
            index,
            "path-length",
            f"{label} allows {bc.path_length} CA certificate(s) below it (pathLenConstraint), but {below} "
            "follow it in the chain",
        )
    constraints = _extension(ca, x509.NameConstraints)
    if constraints is None:
        return
    for below_index in range(index):
        cert = path.certs[below_index]
        if below_index and cert.issuer == cert.subject:
            continue  # RFC 5280 6.1.3 (b): self-issued intermediates are exempt
        problem = _name_constraint_problem(constraints, cert)
        if problem is None:
            continue
        name, why = problem
        text = (
            f"{label} has {why}"
            if name is None
            else f"the name constraints (nameConstraints) of {label} do not allow {name} in {path.label(below_index)}: it is {why}"
        )
        raise path.fail(index, "name-constraints", text)


def _name_constraint_problem(nc: x509.NameConstraints, cert: x509.Certificate) -> tuple[str | None, str] | None:
    """(the name, why it is not allowed), (None, why no name can be judged), or None."""
    permitted, excluded = list(nc.permitted_subtrees or ()), list(nc.excluded_subtrees or ())
    for tree in permitted + excluded:
        if isinstance(tree, x509.DNSName):
            if not _valid_dns_constraint(tree.value):
                return None, f"a malformed DNS name constraint {tree.value!r}"
        elif not isinstance(tree, x509.IPAddress):
            # directoryName, email, URI...: NTS clients match DNS and IP names only, and a
            # constraint left unevaluated must not pass for one that is met.
            return None, f"a name constraint this verifier does not evaluate ({tree.value})"
    for san in pki.sans_of(cert):
        same = [t for t in permitted if type(t) is type(san)]
        if same and not any(_within(san, t) for t in same):
            return str(san.value), "outside the permitted names (" + ", ".join(str(t.value) for t in same) + ")"
        for tree in excluded:
            if type(tree) is type(san) and _overlaps(san, tree):
                return str(san.value), f"inside the excluded names ({tree.value})"
    return None


def _valid_dns_constraint(value: str) -> bool:
    if value == "":
        return True  # every name
    try:
        return names_mod.normalize_dns_name(value) == value.lower() and "*" not in value
    except NtspkiError:
        return False


def _dns_within(name: str, tree: str) -> bool:
    name, tree = name.lower().rstrip("."), tree.lower()
    return tree == "" or name == tree or name.endswith("." + tree)


def _within(san: x509.GeneralName, tree: x509.GeneralName) -> bool:
    """Every name `san` can stand for lies in subtree `tree`."""
    if isinstance(san, x509.IPAddress):
        return san.value.version == tree.value.version and san.value in tree.value
    name = san.value
    if name.startswith("*."):
        name = name[2:]  # *.a.b stands for x.a.b: all inside a subtree holding a.b
    return _dns_within(name, tree.value)


def _overlaps(san: x509.GeneralName, tree: x509.GeneralName) -> bool:
    """Some name `san` can stand for lies in subtree `tree`."""
    if _within(san, tree):
        return True
    if isinstance(san, x509.DNSName) and san.value.startswith("*."):
        # *.a.b stands for every x.a.b, one of which is the excluded x.a.b itself.
        base = san.value[2:].lower()
        head, _, rest = tree.value.lower().partition(".")
        return bool(head) and rest == base
    return False


def _signature_problem(cert: x509.Certificate) -> str | None:
    oid = cert.signature_algorithm_oid
    if oid in _SIGNATURES:
        return None
    if oid == SignatureAlgorithmOID.RSASSA_PSS:
        try:
            digest = cert.signature_hash_algorithm
        except UnsupportedAlgorithm:
            digest = None
        if isinstance(digest, _PSS_HASHES):
            return None
        return f"is signed with RSA-PSS over {digest.name if digest else 'an unknown hash'}: {ACCEPTED_SIGNATURES} are accepted"
    name = _SIGNATURE_NAMES.get(oid, oid.dotted_string)
    weak = " (SHA-1 and MD5 signatures can be forged)" if "sha1" in name or "md5" in name else ""
    return f"is signed with {name}{weak}: {ACCEPTED_SIGNATURES} are accepted"


@functools.lru_cache(maxsize=32)
def _key_problem(cert: x509.Certificate) -> str | None:
    if cert.public_key_algorithm_oid == PublicKeyAlgorithmOID.EC_PUBLIC_KEY:
        try:
            params = _spki_params_tag(cert.tbs_certificate_bytes)
        except (IndexError, ValueError):
            return "has an unreadable public key"
        if params != 0x06:  # a namedCurve OID; a SEQUENCE spells the curve out, NULL inherits it
            return f"has an EC key with explicit curve parameters: {ACCEPTED_KEYS} keys (named curves) are accepted"
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return f"has a public key of an unsupported kind ({_oid_name(cert.public_key_algorithm_oid)})"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name in _CURVES:
            return None
        kind = {"secp192r1": "P-192", "secp224r1": "P-224", "secp521r1": "P-521"}.get(key.curve.name, key.curve.name)
        return f"has a {kind} key: {ACCEPTED_KEYS} keys are accepted"
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size >= 2048:
            return None
        return f"has a {key.key_size}-bit RSA key: {ACCEPTED_KEYS} keys are accepted"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return None
    kind = type(key).__name__.removesuffix("PublicKey").lstrip("_") or "unknown"
    return f"has a {kind} key: {ACCEPTED_KEYS} keys are accepted"


# ---- DER, just enough to see how a certificate's EC key names its curve ---------------------------------


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the DER element at `pos`."""
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4:
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _spki_element(tbs: bytes) -> tuple[int, int]:
    """(start, end) of subjectPublicKeyInfo inside a TBSCertificate."""
    _, pos, _ = _tlv(tbs, 0)
    if tbs[pos] == 0xA0:  # [0] version
        pos = _tlv(tbs, pos)[2]
    for _ in range(5):  # serialNumber, signature, issuer, validity, subject
        pos = _tlv(tbs, pos)[2]
    return pos, _tlv(tbs, pos)[2]


def _spki_der(tbs: bytes) -> bytes:
    start, end = _spki_element(tbs)
    return tbs[start:end]


def _spki_params_tag(tbs: bytes) -> int:
    start, _ = _spki_element(tbs)
    _, pos, _ = _tlv(tbs, start)  # into SubjectPublicKeyInfo
    _, pos, _ = _tlv(tbs, pos)  # into AlgorithmIdentifier
    pos = _tlv(tbs, pos)[2]  # past the algorithm OID
    return tbs[pos]


# ---- wording ------------------------------------------------------------------------------------


def _name(name: x509.Name) -> str:
    return name.rfc4514_string() or "an empty name"


class _label:  # noqa: N801 (used like a function)
    """'certificate #2 (CN=...)', numbered as in the chain that was sent, or 'the trusted
    certificate CN=...'; spelt out only when a message is made (names are slow to print)."""

    def __init__(self, cert: x509.Certificate, position: int, trusted: bool = False):
        self.cert, self.position, self.trusted = cert, position, trusted

    def __str__(self) -> str:
        if self.trusted:
            return f"the trusted certificate {_name(self.cert.subject)}"
        return f"certificate #{self.position} ({_name(self.cert.subject)})"


def _oid_name(oid: x509.ObjectIdentifier) -> str:
    return (
        f"{oid._name} {oid.dotted_string}"
        if getattr(oid, "_name", "Unknown OID") != "Unknown OID"
        else oid.dotted_string
    )


@functools.lru_cache(maxsize=64)
def _extension(cert: x509.Certificate, kind):
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
