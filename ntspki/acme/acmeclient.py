"""Certificates from any ACME CA (Let's Encrypt, a private CA, pebble) into ntspki lineages.

    register(home, directory, ...)        account key (ES256) in HOME/accounts/<id>/, mode 0600
    obtain(home, OrderSpec(...), ...)      order, prove control, finalize, write the lineage
    renewal_window(conn, cert)             the CA's ARI (RFC 9773) window for a certificate, if any

Nothing is written to the lineage until the CA has issued and the certificate has been checked
(key matches, every requested name present, issued by the chain's first certificate): a failed
or interrupted order leaves live/ and archive/ as they were. The lineage's renewal/NAME.json
keeps everything `ntspki renew` needs to order the next one the same way.

Imports `acme`, `josepy` and `requests` at module level: only command bodies import this module.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import errno
import hashlib
import http.server
import json
import math
import os
import re
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import josepy as jose
import requests
from acme import challenges, client, messages
from acme import errors as acme_errors
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ntspki import pki
from ntspki.errors import NtspkiError
from ntspki.issuing.issue import Issued, Request
from ntspki.pki import keys, names
from ntspki.store import Home, fsutil

DIRECTORIES = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}
DEFAULT_DIRECTORY = "letsencrypt"  # as certbot: production unless told otherwise
# ACME CAs sign ECDSA and RSA keys; none issues for Ed25519 (Let's Encrypt refuses the CSR).
USER_AGENT = "ntspki (acme-python)"
NETWORK_TIMEOUT = 30  # seconds per HTTP request
VALIDATION_TIMEOUT = 180  # seconds for the CA to validate and issue
MAX_RETRY_WAIT = 60  # a Retry-After longer than this is reported, not slept through
BAD_NONCE_RETRIES = 15  # nonces are cheap; a busy CA rejects them in bursts
HOOK_TIMEOUT = 300


def resolve_directory(value: str | None) -> str:
    """`letsencrypt`, `letsencrypt-staging` or an https:// URL (http:// only for loopback)."""
    value = (value or DEFAULT_DIRECTORY).strip()
    if value in DIRECTORIES:
        return DIRECTORIES[value]
    parts = urlsplit(value)
    if parts.scheme == "https" and parts.hostname:
        return value
    if parts.scheme == "http" and parts.hostname in ("127.0.0.1", "::1", "localhost"):
        return value
    raise NtspkiError(f"bad --directory {value!r}: give letsencrypt, letsencrypt-staging or an https:// URL", 2)


# ---- talking to the CA, every failure one clear line ------------------------------------------


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(int(value)))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


class _Network(client.ClientNetwork):
    """ClientNetwork that keeps Retry-After on CA errors, retries badNonce more than once
    (busy CAs reject nonces in bursts) and waits out a short Retry-After on rateLimited/503."""

    @classmethod
    def _check_response(cls, response, content_type=None):
        try:
            return super()._check_response(response, content_type=content_type)
        except messages.Error as e:
            e.retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
            e.http_status = response.status_code
            raise

    def post(self, *args, **kwargs):
        nonce_failures = waits = 0
        while True:
            try:
                return self._post_once(*args, **kwargs)
            except messages.Error as e:
                if e.code == "badNonce" and nonce_failures < BAD_NONCE_RETRIES:
                    nonce_failures += 1
                    continue
                wait = getattr(e, "retry_after", None)
                transient = e.code == "rateLimited" or getattr(e, "http_status", 0) == 503
                if transient and wait is not None and wait <= MAX_RETRY_WAIT and waits < 3:
                    waits += 1
                    time.sleep(wait)
                    continue
                raise


def _one_line(text: object) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _problem(e: messages.Error) -> str:
    """The CA's own words: detail, then each subproblem, then when to come back."""
    parts = [f"{e.detail or e.title or e.description or e.typ}"]
    if e.code:
        parts[0] += f" ({e.code})"
    for sub in e.subproblems or ():
        who = f"{sub.identifier.value}: " if sub.identifier else ""
        parts.append(f"{who}{sub.detail or sub.typ}")
    wait = getattr(e, "retry_after", None)
    if wait is not None:
        when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=wait)
        parts.append(f"retry after {when:%Y-%m-%d %H:%M:%S} UTC")
    return _one_line("; ".join(parts))


def _network_reason(e: Exception) -> str:
    text = str(e)
    for pattern in (
        r"\[Errno -?\d+\] ([^'\")\]]+)",
        r"certificate verify failed: ([^(\"')]+)",
        r"(Connection refused)",
        r"(timed out)",
    ):
        m = re.search(pattern, text)
        if m:
            return m.group(1).strip().rstrip(".")
    return _one_line(text)[:200]


@contextlib.contextmanager
def ca_errors(url: str, doing: str = "talking to"):
    """Turn whatever the network, TLS or the CA throws into one NtspkiError line."""
    host = urlsplit(url).netloc
    try:
        yield
    except NtspkiError:
        raise
    except requests.exceptions.SSLError as e:
        raise NtspkiError(
            f"cannot verify the TLS certificate of the ACME server {host}: {_network_reason(e)} "
            "(for a private CA give its certificate with --ca-bundle)"
        )
    except requests.exceptions.Timeout:
        raise NtspkiError(f"timed out {doing} the ACME server {host}")
    except requests.exceptions.ConnectionError as e:
        raise NtspkiError(f"cannot reach the ACME server {host}: {_network_reason(e)}")
    except requests.exceptions.RequestException as e:
        raise NtspkiError(f"error {doing} the ACME server {host}: {_network_reason(e)}")
    except OSError as e:
        if e.filename:
            raise NtspkiError(f"{e.filename}: {e.strerror}")
        raise NtspkiError(f"error {doing} the ACME server {host}: {e.strerror or e}")
    except messages.Error as e:
        raise NtspkiError(f"the CA at {host} refused: {_problem(e)}")
    except acme_errors.ValidationError as e:
        raise NtspkiError(f"the CA could not validate: {_validation_failures(e.failed_authzrs)}")
    except acme_errors.TimeoutError:
        raise NtspkiError(f"the CA at {host} did not finish in {VALIDATION_TIMEOUT} s")
    except (jose.DeserializationError, ValueError, KeyError) as e:
        raise NtspkiError(f"{url} did not answer like an ACME server ({_one_line(e)[:160]})")
    except acme_errors.ClientError as e:
        response = e.args[0] if e.args and isinstance(e.args[0], requests.Response) else None
        if response is not None:
            raise NtspkiError(f"{response.url} did not answer like an ACME server (HTTP {response.status_code})")
        raise NtspkiError(f"ACME error from {host}: {_one_line(e)[:300]}")
    except acme_errors.Error as e:
        raise NtspkiError(f"ACME error from {host}: {_one_line(e)[:300]}")


def _validation_failures(authzrs) -> str:
    out = []
    for authzr in authzrs:
        ident = authzr.body.identifier.value
        for chall in authzr.body.challenges:
            if chall.error is not None:
                out.append(f"{ident}: {chall.chall.typ} failed: {_problem(chall.error)}")
    return "; ".join(out) or "authorization failed without a reason"


class Connection:
    """One ACME directory (the account key is set on .net once known); all HTTP goes through it."""

    def __init__(self, directory_url: str, ca_bundle: str | None = None):
        self.url = directory_url
        if ca_bundle is not None and not Path(ca_bundle).is_file():
            raise NtspkiError(f"--ca-bundle {ca_bundle}: no such file", 2)
        # An explicit bundle wins over REQUESTS_CA_BUNDLE; without one, requests uses that variable
        # or its own store (what Let's Encrypt needs).
        self.net = _Network(
            alg=jose.ES256,
            verify_ssl=str(ca_bundle) if ca_bundle else True,  # type: ignore[arg-type]  # requests takes a path
            user_agent=USER_AGENT,
            timeout=NETWORK_TIMEOUT,
        )
        with ca_errors(directory_url, "fetching the directory of"):
            self.directory = client.ClientV2.get_directory(directory_url, self.net)
            for needed in ("newNonce", "newAccount", "newOrder"):
                self.directory[needed]
        self.client = client.ClientV2(self.directory, self.net)

    @property
    def meta(self):
        return self.directory.meta

    def has_ari(self) -> bool:
        try:
            return bool(self.directory["renewalInfo"])
        except KeyError:
            return False


# ---- accounts -------------------------------------------------------------------------------


def accounts_dir(home: Home) -> Path:
    return home.path / "accounts"


def account_dir(home: Home, directory_url: str) -> Path:
    """One account per directory URL: HOME/accounts/<first 16 hex of sha256(url)>/."""
    return accounts_dir(home) / hashlib.sha256(directory_url.encode()).hexdigest()[:16]


@dataclass
class Account:
    directory: str
    uri: str
    contact: list[str]
    created: str
    path: str
    key: Any = field(repr=False, default=None)  # josepy JWK
    new: bool = False

    def to_dict(self) -> dict:
        return {
            "directory": self.directory,
            "uri": self.uri,
            "contact": self.contact,
            "created": self.created,
            "path": self.path,
            "new": self.new,
        }


def load_account(home: Home, directory_url: str) -> Account | None:
    d = account_dir(home, directory_url)
    try:
        meta = json.loads((d / "account.json").read_text())
        key_pem = (d / "private_key.pem").read_bytes()
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise NtspkiError(f"cannot read the ACME account in {d}: {e}")
    key = keys.load_private_pem(key_pem, what=f"ACME account key {d / 'private_key.pem'}")
    return Account(
        meta["directory"], meta["uri"], meta.get("contact", []), meta.get("created", ""), str(d), jose.JWKEC(key=key)
    )


def _save_account(home: Home, account: Account) -> None:
    d = Path(account.path)
    home.ensure()
    with home.lock():
        fsutil.make_private_dir(accounts_dir(home))
        fsutil.make_private_dir(d)
        fsutil.atomic_write(d / "private_key.pem", keys.private_pem(account.key.key), 0o600)
        meta = {k: v for k, v in account.to_dict().items() if k not in ("path", "new")}
        fsutil.atomic_write(d / "account.json", json.dumps(meta, indent=2).encode() + b"\n", 0o600)


def register(
    home: Home,
    directory: str | None = None,
    ca_bundle: str | None = None,
    email: str | None = None,
    agree_tos: bool = False,
    eab_kid: str | None = None,
    eab_hmac_key: str | None = None,
    conn: Connection | None = None,
) -> Account:
    """Make (or find again) the account for this directory. Idempotent: the stored key is reused,
    and the CA answers with the existing account for a key it knows."""
    url = resolve_directory(directory)
    if email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        raise NtspkiError(f"bad --email {email!r}", 2)
    if bool(eab_kid) != bool(eab_hmac_key):
        raise NtspkiError("--eab-kid and --eab-hmac-key go together", 2)
    existing = load_account(home, url)
    conn = conn or Connection(url, ca_bundle)
    if not agree_tos:
        tos = conn.meta.terms_of_service
        raise NtspkiError(
            "registering an ACME account needs --agree-tos (the CA's terms of service" + (f": {tos})" if tos else ")"),
            2,
        )
    if conn.client.external_account_required() and not eab_kid:
        raise NtspkiError(
            f"the CA at {urlsplit(url).netloc} requires External Account Binding: "
            "give --eab-kid and --eab-hmac-key from your CA account",
            2,
        )
    key = existing.key if existing else jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    conn.net.key = key
    conn.net.account = None
    eab = None
    if eab_kid:
        if not eab_hmac_key or not re.fullmatch(r"[A-Za-z0-9_-]{16,}={0,2}", eab_hmac_key):
            raise NtspkiError("bad --eab-hmac-key: expected the base64url HMAC key your CA gave you", 2)
        try:
            eab = messages.ExternalAccountBinding.from_data(key.public_key(), eab_kid, eab_hmac_key, conn.directory)
        except (ValueError, TypeError, jose.DeserializationError) as e:
            raise NtspkiError(f"bad --eab-hmac-key (base64url of the HMAC key): {e}", 2)
    body = messages.NewRegistration.from_data(email=email, terms_of_service_agreed=True, external_account_binding=eab)
    created = True
    with ca_errors(url, "registering with"):
        try:
            regr = conn.client.new_account(body)
            uri = regr.uri
            contact = list(regr.body.contact or ())
        except acme_errors.ConflictError as e:  # the CA already knows this key
            uri, contact, created = e.location, (existing.contact if existing else []), False
            if email is not None and contact != [f"mailto:{email}"]:
                # A new --email for a known account: update the contact at the CA.
                regr = messages.RegistrationResource(body=messages.Registration(), uri=uri)
                conn.net.account = regr
                updated = conn.client.update_registration(regr, messages.Registration(contact=(f"mailto:{email}",)))
                contact = list(updated.body.contact or ())
    conn.net.account = messages.RegistrationResource(body=messages.Registration(), uri=uri)
    account = Account(
        url,
        uri,
        contact,
        existing.created if existing else dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        str(account_dir(home, url)),
        key,
        new=created and existing is None,
    )
    _save_account(home, account)
    return account


# ---- what to order and how to prove control -------------------------------------------------


@dataclass
class Challenge:
    """http-01 from a built-in server (standalone) or files in a webroot, or dns-01 via a hook."""

    type: str = "http-01"
    webroot: str | None = None
    http_port: int = 80
    http_address: str = ""  # "" = every address, as certbot --standalone
    dns_hook: str | None = None
    dns_wait: float = 0.0  # seconds to wait after the hook for DNS to propagate

    def check(self) -> Challenge:
        if self.type not in ("http-01", "dns-01"):
            raise NtspkiError(f"unknown challenge type {self.type!r}", 2)
        if self.type == "dns-01":
            if not self.dns_hook:
                raise NtspkiError("dns-01 needs --dns-hook SCRIPT", 2)
            hook = Path(self.dns_hook)
            if not hook.is_file() or not os.access(hook, os.X_OK):
                raise NtspkiError(f"--dns-hook {self.dns_hook}: not an executable file", 2)
            self.dns_hook = str(hook.absolute())
        elif self.webroot is not None:
            root = Path(self.webroot)
            if not root.is_dir():
                raise NtspkiError(f"--webroot {self.webroot}: no such directory", 2)
            self.webroot = str(root.absolute())
        elif not 0 < int(self.http_port) < 65536:
            raise NtspkiError(f"--http-port {self.http_port}: not a port number", 2)
        if self.dns_wait < 0:
            raise NtspkiError("--dns-wait must not be negative", 2)
        return self

    def to_dict(self) -> dict:
        if self.type == "dns-01":
            return {"type": "dns-01", "dns_hook": self.dns_hook, "dns_wait": self.dns_wait}
        if self.webroot:
            return {"type": "http-01", "webroot": self.webroot}
        return {"type": "http-01", "http_port": self.http_port, "http_address": self.http_address}

    @classmethod
    def from_dict(cls, d: dict) -> Challenge:
        known = {k: d[k] for k in ("type", "webroot", "http_port", "http_address", "dns_hook", "dns_wait") if k in d}
        return cls(**known)


@dataclass
class OrderSpec:
    name: str
    sans: list[str] = field(default_factory=list)
    directory: str = DIRECTORIES[DEFAULT_DIRECTORY]
    ca_bundle: str | None = None
    key_type: str = "ec-p256"
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
        except (KeyError, TypeError) as e:
            raise NtspkiError(f"renewal/{name}.json is not a usable ACME renewal configuration ({e})")


# ---- proving control ------------------------------------------------------------------------


class _ChallengeHandler(http.server.BaseHTTPRequestHandler):
    server_version = "ntspki-acme"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        prefix = "/.well-known/acme-challenge/"
        tokens = self.server.tokens  # type: ignore[attr-defined]  # set by _ChallengeServer
        body = tokens.get(self.path[len(prefix) :]) if self.path.startswith(prefix) else None
        if body is None:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class _ChallengeServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: str, port: int, tokens: dict):
        self.tokens = tokens
        self.dual_stack = address in ("", "::")
        ip = names.parse_ip(address) if address else None
        self.address_family = socket.AF_INET6 if (self.dual_stack or (ip and ip.version == 6)) else socket.AF_INET
        bind = "::" if self.dual_stack else str(ip) if ip else address
        super().__init__((bind, port), _ChallengeHandler)

    def server_bind(self):
        if self.dual_stack:  # answer on IPv4 too, whatever the sysctl default says
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class _Solver:
    """Sets up every challenge of an order at once, and always tears them down."""

    def __init__(self, ch: Challenge, progress):
        self.ch = ch
        self.progress = progress
        self.tokens: dict[str, str] = {}
        self.server: _ChallengeServer | None = None
        self.webroot_files: list[Path] = []
        self.webroot_dirs: list[Path] = []
        self.txt_set: list[tuple[str, str, str]] = []

    def pick(self, authzr):
        wanted = challenges.DNS01 if self.ch.type == "dns-01" else challenges.HTTP01
        for challb in authzr.body.challenges:
            if isinstance(challb.chall, wanted):
                return challb
        ident = authzr.body.identifier.value
        offered = ", ".join(c.chall.typ for c in authzr.body.challenges) or "none"
        raise NtspkiError(f"the CA offers no {self.ch.type} challenge for {ident} (offers: {offered})")

    def add(self, ident: str, challb, account_key) -> None:
        response, validation = challb.response_and_validation(account_key)
        if self.ch.type == "dns-01":
            txt_name = challb.chall.validation_domain_name(ident.removeprefix("*."))
            self._hook("set", ident, txt_name, validation)
            self.txt_set.append((ident, txt_name, validation))
        elif self.ch.webroot:
            self._webroot_put(challb.chall.encode("token"), validation)
        else:
            self.tokens[challb.chall.encode("token")] = validation

    def start(self) -> None:
        if self.ch.type == "http-01" and not self.ch.webroot and self.server is None:
            where = f"{self.ch.http_address or '*'}:{self.ch.http_port}"
            try:
                try:
                    self.server = _ChallengeServer(self.ch.http_address, int(self.ch.http_port), self.tokens)
                except OSError as e:
                    if self.ch.http_address or e.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                        raise
                    # A host without IPv6: every IPv4 address is what "every address" means there.
                    self.server = _ChallengeServer("0.0.0.0", int(self.ch.http_port), self.tokens)
            except OSError as e:
                raise NtspkiError(
                    f"cannot listen on {where} for http-01: {e.strerror or e} "
                    "(is a web server running there? use --webroot DIR, or --http-port)"
                )
            assert self.server is not None
            threading.Thread(target=self.server.serve_forever, name="acme-http-01", daemon=True).start()
            self.progress(f"answering http-01 on {where}")
        if self.txt_set and self.ch.dns_wait:
            self.progress(f"waiting {self.ch.dns_wait:g} s for DNS to propagate")
            time.sleep(self.ch.dns_wait)

    def _webroot_put(self, token: str, validation: str) -> None:
        d = Path(self.ch.webroot or ".") / ".well-known" / "acme-challenge"
        for parent in (d.parent, d):
            if not parent.exists():
                try:
                    parent.mkdir(mode=0o755)
                except OSError as e:
                    raise NtspkiError(f"cannot create {parent} for http-01: {e.strerror}")
                os.chmod(parent, 0o755)  # the web server's user must read it, whatever our umask
                self.webroot_dirs.append(parent)
        path = d / token
        try:
            fsutil.atomic_write(path, validation.encode(), 0o644)
        except OSError as e:
            raise NtspkiError(f"cannot write {path} for http-01: {e.strerror}")
        self.webroot_files.append(path)

    def _hook(self, action: str, ident: str, txt_name: str, value: str) -> None:
        env = {
            **os.environ,
            "NTSPKI_DNS_ACTION": action,
            "NTSPKI_DOMAIN": ident,
            "NTSPKI_TXT_NAME": txt_name,
            "NTSPKI_TXT_VALUE": value,
            # the names certbot's --manual-auth-hook scripts read, so those scripts work here too
            "CERTBOT_DOMAIN": ident.removeprefix("*."),
            "CERTBOT_VALIDATION": value,
        }
        try:
            proc = subprocess.run(
                [str(self.ch.dns_hook), action, txt_name, value],
                env=env,
                capture_output=True,
                text=True,
                timeout=HOOK_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise NtspkiError(
                f"--dns-hook {self.ch.dns_hook} did not finish in {HOOK_TIMEOUT} s ({action} TXT {txt_name})"
            )
        except OSError as e:
            raise NtspkiError(f"--dns-hook {self.ch.dns_hook}: {e.strerror}")
        if proc.returncode != 0:
            said = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
            raise NtspkiError(
                f"--dns-hook {self.ch.dns_hook} failed with exit status {proc.returncode} "
                f"({action} TXT {txt_name})" + (f": {said[-1]}" if said else "")
            )

    def cleanup(self) -> None:
        """Best effort, never raises: the order's outcome is what the user needs to see."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        for path in self.webroot_files:
            with contextlib.suppress(OSError):
                path.unlink()
        for d in reversed(self.webroot_dirs):
            with contextlib.suppress(OSError):
                d.rmdir()
        for ident, txt_name, value in self.txt_set:
            try:
                self._hook("clean", ident, txt_name, value)
            except NtspkiError as e:
                self.progress(f"warning: {e}")
        self.txt_set.clear()


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
    certs = pki.load_certs(fullchain_pem.encode(), "the CA's certificate chain")
    leaf = certs[0]
    if not keys.key_matches_cert(key, leaf):
        raise NtspkiError("the CA returned a certificate for a different key")
    issued = pki.sans_of(leaf)
    missing = [names.san_text(g) for g in gns if g not in issued]
    if missing:
        raise NtspkiError(f"the CA returned a certificate without {', '.join(missing)}")
    if len(certs) < 2:
        raise NtspkiError("the CA returned no intermediate certificate (NTS clients need the chain)")
    for cert, issuer in zip(certs, certs[1:]):
        try:
            cert.verify_directly_issued_by(issuer)
        except Exception:
            raise NtspkiError(
                f"the CA's chain is out of order: {cert.subject.rfc4514_string()} is not "
                f"signed by {issuer.subject.rfc4514_string()}"
            )
    return certs


def _nothing(_msg: str) -> None:
    pass


def obtain(
    home: Home,
    spec: OrderSpec,
    agree_tos: bool = False,
    email: str | None = None,
    eab_kid: str | None = None,
    eab_hmac_key: str | None = None,
    replaces: x509.Certificate | None = None,
    progress=_nothing,
) -> Issued:
    """Order a certificate for spec.name + spec.sans and write it as the lineage's next version."""
    if spec.key_type not in keys.ACME_KEY_TYPES:
        raise NtspkiError(f"ACME CAs issue for {', '.join(keys.ACME_KEY_TYPES)} keys, not {spec.key_type}", 2)
    spec.directory = resolve_directory(spec.directory)
    if spec.ca_bundle:
        spec.ca_bundle = str(Path(spec.ca_bundle).absolute())
    req = Request(spec.name, list(spec.sans))
    lineage = req.lineage
    gns = req.general_names
    identifiers = [names.san_text(g) for g in gns]
    spec.challenge.check()
    if spec.challenge.type == "dns-01" and any(isinstance(g, x509.IPAddress) for g in gns):
        raise NtspkiError("dns-01 cannot prove control of an IP address: use http-01 for IP names", 2)
    if spec.challenge.type == "http-01" and any(i.startswith("*.") for i in identifiers):
        raise NtspkiError("a wildcard name needs dns-01 (--dns-hook SCRIPT)", 2)

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

    key = keys.generate(spec.key_type)
    csr_pem = _csr(key, gns).public_bytes(serialization.Encoding.PEM)
    solver = _Solver(spec.challenge, progress)
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
        home.ledger.record(lineage, version, info, spec.key_type, "acme")
    return Issued(
        lineage, version, info.sans, info.serial, info.sha256, info.not_after, spec.key_type, str(home.live / lineage)
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
