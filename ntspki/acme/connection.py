"""Talking to one ACME directory: which directory (`resolve_directory`), the HTTP client with
Retry-After and bad-nonce handling (`_Network`), and `ca_errors`, which turns every failure a CA,
the network or the `acme` package can produce into one clear line.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import time
from urllib.parse import urlsplit

import josepy as jose
import requests
from acme import client, messages
from acme import errors as acme_errors

from ntspki.errors import NtspkiError

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


def check_ca_bundle(path: str) -> None:
    """A regular file of PEM certificates (read bounded: a FIFO or a device must not hang us)."""
    from ntspki import pki
    from ntspki.store import fsutil

    data = fsutil.read_bounded(path, 16 << 20, "--ca-bundle")
    try:
        pki.load_certs(data, f"--ca-bundle {path}")
    except NtspkiError as e:
        raise NtspkiError(str(e), 2) from None


class Connection:
    """One ACME directory (the account key is set on .net once known); all HTTP goes through it."""

    def __init__(self, directory_url: str, ca_bundle: str | None = None):
        self.url = directory_url
        if ca_bundle is not None:
            check_ca_bundle(ca_bundle)
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
