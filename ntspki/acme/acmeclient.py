"""Certificates from any ACME CA (Let's Encrypt, a private CA, pebble) into ntspki lineages.

    obtain(home, OrderSpec(...), ...)      order, prove control, finalize, write the lineage
    renewal_window(conn, cert)             the CA's ARI (RFC 9773) window for a certificate, if any

Beside it in this package: `connection` (one directory, every failure one line), `accounts`
(register, the account key in HOME/accounts/<id>/, 0600) and `solvers` (http-01, dns-01).

Nothing is written to the lineage until the CA has issued and the certificate has been checked
(key matches, every requested name present, issued by the chain's first certificate): a failed
or interrupted order leaves live/ and archive/ as they were. The lineage's renewal/NAME.json
keeps everything `ntspki renew` needs to order the next one the same way.

Imports `acme`, `josepy` and `requests` at module level: only command bodies import this module.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import josepy as jose
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ntspki import pki
from ntspki.acme.accounts import check_options, load_account, register
from ntspki.acme.connection import (
    DEFAULT_DIRECTORY,
    DIRECTORIES,
    VALIDATION_TIMEOUT,
    Connection,
    ca_errors,
    check_ca_bundle,
    resolve_directory,
)
from ntspki.acme.solvers import Challenge, Solver
from ntspki.errors import NtspkiError
from ntspki.pki import keys, names, verify
from ntspki.store import Home
from ntspki.store.identity import Issued, Request, keep_identity


@dataclass
class OrderSpec:
    name: str
    sans: list[str] = field(default_factory=list)
    directory: str = DIRECTORIES[DEFAULT_DIRECTORY]
    ca_bundle: str | None = None
    key_type: str | None = "ec-p256"  # None: the lineage's own (see obtain)
    profile: str | None = None
    challenge: Challenge = field(default_factory=Challenge)

    def renewal_params(self, identifiers: list[str]) -> dict:
        return {
            "source": "acme",
            "directory": self.directory,
            "ca_bundle": self.ca_bundle,
            "sans": identifiers,
            "key_type": self.key_type,
            "profile": self.profile,
            "challenge": self.challenge.to_dict(),
        }

    @classmethod
    def from_renewal(cls, name: str, params: dict) -> OrderSpec:
        where = f"renewal/{name}.json is not a usable ACME renewal configuration"
        for key in ("directory", "ca_bundle", "key_type", "profile"):
            if params.get(key) is not None and not isinstance(params[key], str):
                raise NtspkiError(f"{where} ({key} must be text, not {params[key]!r:.40})")
        if not isinstance(params.get("sans"), list) or not all(isinstance(n, str) for n in params["sans"]):
            raise NtspkiError(f"{where} (sans must be a list of names)")
        try:
            return cls(
                name=name,
                sans=list(params["sans"]),
                directory=params["directory"],
                ca_bundle=params.get("ca_bundle"),
                key_type=params.get("key_type", "ec-p256"),
                profile=params.get("profile"),
                challenge=Challenge.from_dict(params.get("challenge", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise NtspkiError(f"{where} ({type(e).__name__}: {e})")


# ---- ordering -------------------------------------------------------------------------------


class _NewOrder(messages.NewOrder):
    # RFC 9773 section 5: tell an ARI-speaking CA which certificate this order replaces.
    replaces: str | None = jose.field("replaces", omitempty=True)


def ari_cert_id(cert: x509.Certificate) -> str:
    """RFC 9773 CertID: base64url(AKI keyIdentifier) "." base64url(DER serial), no padding."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        raise NtspkiError("the certificate has no Authority Key Identifier: no ARI for it")
    serial = cert.serial_number
    der_serial = serial.to_bytes(math.ceil((serial.bit_length() + 1) / 8), "big", signed=True)
    b64 = lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")  # noqa: E731
    return f"{b64(aki)}.{b64(der_serial)}"


def _csr(key, gns: list[x509.GeneralName]) -> x509.CertificateSigningRequest:
    first_dns = next((g.value for g in gns if isinstance(g, x509.DNSName)), None)
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, first_dns)] if first_dns else [])
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(x509.SubjectAlternativeName(gns), critical=False)
        .sign(key, keys.signature_hash(key))
    )


def _check_issued(fullchain_pem: str, key, gns: list[x509.GeneralName]) -> list[x509.Certificate]:
    certs = verify.load_chain(fullchain_pem.encode(), "the CA's certificate chain")
    leaf = certs[0]
    if not keys.key_matches_cert(key, leaf):
        raise NtspkiError("the CA returned a certificate for a different key")
    issued = pki.sans_of(leaf)
    missing = [names.san_text(g) for g in gns if g not in issued]
    if missing:
        raise NtspkiError(f"the CA returned a certificate without {', '.join(missing)}")
    if len(certs) < 2:
        raise NtspkiError("the CA returned no intermediate certificate (NTS clients need the chain)")
    try:
        # The root is not sent and may not be here: the last certificate sent stands in for it,
        # every other rule is the one deploy applies to this chain later.
        verify.verify_chain(None, certs, gns)
    except verify.ChainError as e:
        raise verify.ChainError(f"the CA's certificate chain: {e}", e.rule, e.position)
    return certs


def _nothing(_msg: str) -> None:
    pass


def _check_challenge_names(challenge: Challenge, gns: list) -> None:
    if challenge.type == "dns-01" and any(isinstance(g, x509.IPAddress) for g in gns):
        raise NtspkiError("dns-01 cannot prove control of an IP address: use http-01 for IP names", 2)
    if challenge.type == "http-01" and any(names.san_text(g).startswith("*.") for g in gns):
        raise NtspkiError("a wildcard name needs dns-01 (--dns-hook SCRIPT)", 2)


def obtain(
    home: Home,
    spec: OrderSpec,
    agree_tos: bool = False,
    email: str | None = None,
    eab_kid: str | None = None,
    eab_hmac_key: str | None = None,
    replaces: x509.Certificate | None = None,
    progress=_nothing,
    allow_change: bool = False,
) -> Issued:
    """Order a certificate for spec.name + spec.sans and write it as the lineage's next version.
    An existing lineage keeps its names and key type when spec leaves them out (no sans, key_type
    None); other names, another key type or a lineage from the site CA need allow_change."""
    if spec.key_type is not None and spec.key_type not in keys.ACME_KEY_TYPES:
        raise NtspkiError(f"ACME CAs issue for {', '.join(keys.ACME_KEY_TYPES)} keys, not {spec.key_type}", 2)
    spec.directory = resolve_directory(spec.directory)
    check_options(email, eab_kid, eab_hmac_key)
    if spec.profile is not None and not spec.profile.strip():
        raise NtspkiError("--profile is empty", 2)
    if spec.ca_bundle:
        spec.ca_bundle = str(Path(spec.ca_bundle).absolute())
        check_ca_bundle(spec.ca_bundle)
    req = Request(spec.name, list(spec.sans))
    lineage = req.lineage
    spec.challenge.check()
    _check_challenge_names(spec.challenge, req.general_names)  # what was asked for, before what is kept
    ident, _stored = keep_identity(home, req, spec.key_type, None, "acme", allow_change, names_given=bool(spec.sans))
    if ident.key_type not in keys.ACME_KEY_TYPES:
        raise NtspkiError(
            f"lineage {lineage} has a {ident.key_type} key; ACME CAs issue for {', '.join(keys.ACME_KEY_TYPES)} "
            "keys: give --key-type",
            2,
        )
    spec.key_type, spec.sans = ident.key_type, ident.sans[1:]
    req = Request(spec.name, list(spec.sans))
    gns = req.general_names
    identifiers = [names.san_text(g) for g in gns]
    _check_challenge_names(spec.challenge, gns)

    conn = Connection(spec.directory, spec.ca_bundle)
    if spec.profile:
        offered = dict(getattr(conn.meta, "profiles", None) or {})
        if spec.profile not in offered:
            raise NtspkiError(
                f"the CA offers no profile {spec.profile!r} "
                f"({'offered: ' + ', '.join(sorted(offered)) if offered else 'it offers no profiles'})",
                2,
            )
    account = load_account(home, spec.directory)
    if account is None:
        if not agree_tos:
            raise NtspkiError(
                f"no ACME account for {spec.directory}: run `ntspki acme register --agree-tos` or pass --agree-tos", 2
            )
        progress("registering an ACME account")
        account = register(home, spec.directory, spec.ca_bundle, email, True, eab_kid, eab_hmac_key, conn=conn)
    conn.net.key = account.key
    conn.net.account = messages.RegistrationResource(body=messages.Registration(), uri=account.uri)

    key = keys.generate(ident.key_type)
    csr_pem = _csr(key, gns).public_bytes(serialization.Encoding.PEM)
    solver = Solver(spec.challenge, progress)
    deadline = dt.datetime.now() + dt.timedelta(seconds=VALIDATION_TIMEOUT)  # naive: as ClientV2 compares
    with ca_errors(spec.directory, "ordering from"):
        try:
            progress(f"ordering {', '.join(identifiers)} from {urlsplit(spec.directory).netloc}")
            try:
                orderr = _new_order(conn, gns, csr_pem, spec.profile, replaces)
            except messages.Error as e:
                if e.code != "accountDoesNotExist" or not agree_tos:
                    if e.code == "accountDoesNotExist":
                        raise NtspkiError(
                            f"the CA no longer knows the stored account {account.uri}: run "
                            "`ntspki acme register --agree-tos` again (it reuses the key)"
                        )
                    raise
                progress("the CA forgot the account; registering again")
                account = register(home, spec.directory, spec.ca_bundle, email, True, eab_kid, eab_hmac_key, conn=conn)
                orderr = _new_order(conn, gns, csr_pem, spec.profile, replaces)
            pending = []
            for authzr in orderr.authorizations:
                if authzr.body.status == messages.STATUS_VALID:
                    continue
                if authzr.body.status != messages.STATUS_PENDING:
                    raise NtspkiError(f"authorization for {authzr.body.identifier.value} is {authzr.body.status}")
                challb = solver.pick(authzr)
                # A wildcard's authorization names the base domain, which is where its TXT goes.
                solver.add(authzr.body.identifier.value, challb, account.key)
                pending.append((authzr, challb))
            solver.start()
            for authzr, challb in pending:
                progress(f"asking the CA to validate {authzr.body.identifier.value} ({challb.chall.typ})")
                conn.client.answer_challenge(challb, challb.response(account.key))
            orderr = conn.client.poll_authorizations(orderr, deadline)
            progress("finalizing")
            fullchain = conn.client.finalize_order(orderr, deadline).fullchain_pem
        finally:
            solver.cleanup()
    certs = _check_issued(fullchain, key, gns)
    leaf, chain = certs[0], certs[1:]
    home.ensure()
    with home.lock():
        version = home.write_version(
            lineage, keys.private_pem(key), pki.cert_pem(leaf), b"".join(pki.cert_pem(c) for c in chain)
        )
        home.write_renewal(lineage, spec.renewal_params(identifiers))
        info = pki.CertInfo.of(leaf)
        home.ledger.record(lineage, version, info, ident.key_type, "acme")
    return Issued(
        lineage, version, info.sans, info.serial, info.sha256, info.not_after, ident.key_type, str(home.live / lineage)
    )


def _new_order(
    conn: Connection, gns: list[x509.GeneralName], csr_pem: bytes, profile: str | None, replaces
) -> messages.OrderResource:
    """A new order with its authorizations. The one request made below ClientV2's public API:
    `ClientV2.new_order` cannot send RFC 9773's `replaces`, which tells an ARI-speaking CA which
    certificate this order renews (Let's Encrypt exempts such orders from rate limits)."""
    order = _NewOrder(
        identifiers=[_identifier(g) for g in gns],
        profile=profile or None,
        replaces=ari_cert_id(replaces) if (replaces is not None and conn.has_ari()) else None,
    )
    response = conn.client._post(conn.directory["newOrder"], order)
    body = messages.Order.from_json(response.json())
    order_url = response.headers.get("Location")
    if not order_url:
        raise NtspkiError(f"the CA at {urlsplit(conn.url).netloc} made an order without a Location")
    # ClientV2.poll fetches one authorization; the empty body means "any identifier".
    authzrs = [
        conn.client.poll(messages.AuthorizationResource(uri=url, body=messages.Authorization()))[0]
        for url in body.authorizations
    ]
    return messages.OrderResource(body=body, uri=order_url, authorizations=authzrs, csr_pem=csr_pem)


def _identifier(gn: x509.GeneralName) -> messages.Identifier:
    if isinstance(gn, x509.IPAddress):
        return messages.Identifier(typ=messages.IDENTIFIER_IP, value=str(gn.value))
    return messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=gn.value)


# ---- ACME Renewal Information ----------------------------------------------------------------


@dataclass
class RenewalWindow:
    start: dt.datetime
    end: dt.datetime
    explanation: str | None = None


def renewal_window(conn: Connection, cert: x509.Certificate) -> RenewalWindow | None:
    """The CA's suggested renewal window for `cert` (RFC 9773), or None when the directory has no
    renewalInfo. Raises NtspkiError when the CA has ARI but cannot be asked."""
    if not conn.has_ari():
        return None
    ari_url = conn.directory["renewalInfo"].rstrip("/") + "/" + ari_cert_id(cert)
    with ca_errors(ari_url, "asking for renewal information from"):
        raw = conn.net.get(ari_url, content_type="application/json").json()
        info = messages.RenewalInfo.from_json(raw)
        start, end = info.suggested_window.start, info.suggested_window.end
    if end < start:
        raise NtspkiError(f"the CA's renewal window for {ari_url} ends before it starts")
    return RenewalWindow(start, end, raw.get("explanationURL"))  # not (yet) a RenewalInfo field
