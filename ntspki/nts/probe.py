"""`probe`: what a real NTS client does, step by step, with one clear line for whatever fails.

NTS-KE over TLS 1.3 (ALPN ntske/1), the certificate checked by the one verifier (ntspki.pki.verify),
then one authenticated NTP exchange with the exported keys and a received cookie.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import ssl
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ntspki import pki
from ntspki.errors import NtspkiError
from ntspki.nts import NTSKE_PORT
from ntspki.pki import names, verify

DEFAULT_PORT = NTSKE_PORT


@dataclass
class ProbeResult:
    target: str
    host: str
    port: int
    ok: bool = False
    error: str | None = None
    tls_version: str | None = None
    alpn: str | None = None
    chain: list[dict] = field(default_factory=list)
    aead: int | None = None
    cookies: int = 0
    ntp_server: str | None = None
    ntp_port: int | None = None
    authenticated: bool = False
    stratum: int | None = None
    offset_s: float | None = None
    delay_s: float | None = None
    warnings: list[str] = field(default_factory=list)
    # Beyond the API the deploy step relies on:
    name: str | None = None  # the name checked against the certificate
    stage: str | None = None  # where it failed: connect, tls, verify, ntske, ntp, expect
    verified: bool = False  # chain and name verified
    leap: int | None = None
    reference_id: str | None = None
    new_cookies: int | None = None  # cookies in the authenticated NTP reply
    days_left: int | None = None  # of the served leaf
    elapsed_s: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def sha256(self) -> str:
        """The served leaf's SHA-256, or "" when no certificate was seen."""
        return self.chain[0]["sha256"] if self.chain else ""


# ---- targets ----------------------------------------------------------------------------------


def parse_target(target: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """HOST, HOST:PORT, [IPv6]:PORT, [IPv6] or a bare IPv6 literal -> (host, port)."""
    text = target.strip()
    if not text:
        raise NtspkiError("empty target", 2)
    host, port_text = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise NtspkiError(f"bad target {target!r}: missing ']'", 2)
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise NtspkiError(f"bad target {target!r}: expected ':PORT' after ']'", 2)
            port_text = rest[1:]
        if names.parse_ip(host) is None or ":" not in host:
            raise NtspkiError(f"bad target {target!r}: brackets hold only IPv6 addresses", 2)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1 and names.parse_ip(text) is None:
        raise NtspkiError(f"bad target {target!r}: write an IPv6 address with a port as [ADDRESS]:PORT", 2)
    port = None
    if port_text is not None:
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            raise NtspkiError(f"bad target {target!r}: port must be 1-65535", 2)
        port = int(port_text)
    if names.parse_ip(host) is None:
        if not host:
            raise NtspkiError(f"bad target {target!r}: no host", 2)
        names.normalize_dns_name(host)  # raises a one-line BadName (exit 2)
    return host, port or default_port


MAX_TARGETS_FILE = 4 << 20


def read_targets(path: str) -> list[str]:
    """One target a line; blank lines and `#` comments are ignored."""
    import sys

    from ntspki.store import fsutil

    if path == "-":
        data = sys.stdin.buffer.read(MAX_TARGETS_FILE + 1)
        if len(data) > MAX_TARGETS_FILE or b"\0" in data:
            raise NtspkiError(
                f"the targets on standard input are not a list of targets under {MAX_TARGETS_FILE} bytes", 2
            )
        text = data.decode(errors="replace")
    else:
        text = fsutil.read_bounded(path, MAX_TARGETS_FILE, "targets file").decode()
    return [t for line in text.splitlines() for t in line.split("#", 1)[0].split()]


# ---- trust ------------------------------------------------------------------------------------

_trust_cache: dict[tuple, verify.Anchors] = {}
_trust_lock = threading.Lock()


def trust_store(ca_files=(), system: bool | None = None) -> verify.Anchors:
    """The trust anchors for verify.verify_chain: the --ca files (and directories, as chrony's
    ntstrustedcerts reads them), else (or also, with system=True) the system bundle. Any trusted
    certificate ends a chain, root or not, as in GnuTLS (chrony). Cached: probe_many, deploy and
    the benchmark verify many chains against the same anchors."""
    files = tuple(str(p) for p in ca_files)
    system = not files if system is None else system
    # Keyed on each file's identity too: a long-running `ntspki watch` must see a replaced CA file.
    key = (tuple((f, *_identity(f)) for f in files), system)
    with _trust_lock:
        if key in _trust_cache:
            return _trust_cache[key]
        certs = [cert for path in files for cert in _read_ca_file(path)]
        if system:
            certs += _system_bundle()
        anchors = verify.Anchors(certs)
        if len(_trust_cache) > 32:
            _trust_cache.clear()
        _trust_cache[key] = anchors
        return anchors


TRUST_CHOICES = ("both", "ca", "system")


@dataclass(frozen=True)
class Trust:
    """What a probe trusts: CA files (--ca, else the site CA's root) and/or the system store."""

    ca_files: tuple[str, ...]
    system: bool

    def store(self):
        return trust_store(self.ca_files, self.system)

    def describe(self) -> str:
        parts = [", ".join(self.ca_files)] if self.ca_files else []
        return " and ".join(parts + (["the system trust store"] if self.system else []))


def default_trust(ca_files=(), home=None, only: str = "both") -> Trust:
    """The trust `probe` and `check --probe` use: the --ca files, or without them the site CA's
    roots (HOME/ca/trust.pem or root.pem, when there is one), together with the system store, as chrony's
    certificate set 0 does. only="ca" drops the system store; only="system" uses nothing else."""
    if only not in TRUST_CHOICES:
        raise NtspkiError(f"--trust must be one of {', '.join(TRUST_CHOICES)}, not {only!r}", 2)
    files = tuple(str(f) for f in ca_files)
    if only == "system":
        if files:
            raise NtspkiError("--trust system uses the system store only: drop --ca, or use --trust both", 2)
        return Trust((), True)
    if not files and home is not None:
        root = home.trust_path  # ca/trust.pem (both roots during a rollover), else ca/root.pem
        if os.access(root, os.R_OK):
            files = (str(root),)
    if only == "ca" and not files:
        raise NtspkiError("--trust ca: no CA to trust: give --ca FILE (or --home with a site CA)", 2)
    paths = ssl.get_default_verify_paths()
    # Without a system store (no ca-certificates), "both" is the CA files alone, if there are any.
    system = only == "both" and (bool(paths.cafile or paths.capath) or not files)
    return Trust(files, system)


def _identity(path: str) -> tuple:
    try:
        st = os.stat(path)
        return st.st_ino, st.st_size, st.st_mtime_ns
    except OSError:
        return (None,)


def _read_ca_file(path: str) -> list:
    if Path(path).is_dir():
        # As chrony's ntstrustedcerts does with a directory: every *.crt file in it.
        return [cert for crt in sorted(Path(path).glob("*.crt")) for cert in _read_ca_file(str(crt))]
    from ntspki.store import fsutil

    data = fsutil.read_bounded(path, 16 << 20, "CA file")
    try:
        return pki.load_certs(data, f"CA file {path}")
    except NtspkiError:
        raise NtspkiError(f"CA file {path} holds no PEM certificate", 2)


def _system_bundle() -> list:
    from cryptography import x509

    paths = ssl.get_default_verify_paths()
    for bundle in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if bundle and os.path.isfile(bundle):
            from ntspki.store import fsutil

            try:
                data = fsutil.read_bounded(bundle, 64 << 20, "system trust store", binary=True, exit_code=1)
            except NtspkiError as e:
                raise NtspkiError(f"{e}; use --ca FILE") from None
            # One by one: a root this release of cryptography cannot read (or warns about, such as a
            # serial number that is not positive) must not take the other roots with it.
            certs = []
            for block in _PEM_CERT.findall(data):
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        certs.append(x509.load_pem_x509_certificate(block))
                except ValueError:
                    continue
            return certs
    raise NtspkiError(f"no system trust store ({paths.openssl_cafile} is missing): use --ca FILE")


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def cert_dict(cert) -> dict:
    return asdict(pki.CertInfo.of(cert))


def days_left(cert) -> int:
    return (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).days


def _norm_hex(value: str) -> str:
    return value.replace(":", "").replace(" ", "").lower().lstrip("0") or "0"


# ---- the probe --------------------------------------------------------------------------------


def probe(
    target: str,
    *,
    ca_files=(),
    name: str | None = None,
    timeout: float = 5.0,
    expect_fingerprint: str | None = None,
    expect_serial: str | None = None,
    warn_days: int | None = None,
    ntp: bool = True,
    default_port: int = DEFAULT_PORT,
    trust=None,
) -> ProbeResult:
    """Probe one NTS server. Never raises for anything the server does (a bad target or CA file
    given by the user does raise NtspkiError)."""
    from ntspki.nts import ntske

    host, port = parse_target(target, default_port)
    check_name = name or host
    result = ProbeResult(target=target, host=host, port=port, name=check_name)
    store = trust if trust is not None else trust_store(ca_files)
    started = time.monotonic()
    sni = None if names.is_ip(check_name) else check_name.rstrip(".")
    try:
        with ntske.KeClient(host, port, sni, timeout) as client:
            client.connect()
            session = client.handshake()
            result.tls_version, result.alpn = session.tls_version, session.alpn
            result.chain = [cert_dict(c) for c in session.chain]
            if session.chain:
                result.days_left = days_left(session.chain[0])
            client.check_protocol()
            try:
                verify.verify_chain(store, session.chain, [check_name])
            except verify.ChainError as e:
                raise ntske.ProtocolError("verify", str(e))
            result.verified = True
            resp = client.exchange()
            result.aead, result.cookies = resp.aead, len(resp.cookies)
            result.ntp_server = resp.server or session.peer[0]
            result.ntp_port = resp.port or ntske.NTP_PORT
            c2s, s2c = session.c2s, session.s2c
        if ntp:
            request, reply = ntske.ntp_exchange(result.ntp_server, result.ntp_port, c2s, s2c, resp.cookies[0], timeout)
            result.authenticated = True
            result.stratum, result.leap = reply.stratum, reply.leap
            result.reference_id = _refid(reply.refid, reply.stratum)
            result.new_cookies = len(reply.cookies)
            result.offset_s, result.delay_s = reply.offset_delay(request.t1)
            if reply.leap == 3:
                result.warnings.append("server is not synchronised (leap indicator 3)")
            if not reply.cookies:
                result.warnings.append("authenticated reply carried no new cookie")
        result.ok = True
    except ntske.ProtocolError as e:
        result.stage, result.error = e.stage, _one_line(str(e))
    except Exception as e:  # a bug or an OpenSSL surprise must still be one line, not a traceback
        result.stage = result.stage or "internal"
        result.error = _one_line(f"unexpected error: {type(e).__name__}: {e}")
    _expectations(result, expect_fingerprint, expect_serial, warn_days)
    result.elapsed_s = round(time.monotonic() - started, 6)
    return result


def check_expectations(name: str | None, fingerprint: str | None, serial: str | None) -> None:
    """Usage errors before any connection: a name no certificate can hold, a fingerprint that is
    not 32 bytes of hex, a serial that is not hex."""
    import re

    if name is not None:
        names.parse_san(name)  # a one-line BadName (exit 2)
    if fingerprint is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", re.sub(r"[: ]", "", fingerprint)):
        raise NtspkiError(
            f"--expect-fingerprint {fingerprint!r}: give the SHA-256 as 64 hex digits (colons allowed)", 2
        )
    if serial is not None and not re.fullmatch(r"[0-9a-fA-F]{1,64}", re.sub(r"[: ]", "", serial)):
        raise NtspkiError(f"--expect-serial {serial!r}: give the serial in hex (colons allowed)", 2)


def _expectations(result: ProbeResult, fingerprint, serial, warn_days) -> None:
    leaf = result.chain[0] if result.chain else None
    if leaf is None:
        return
    if warn_days is not None and result.days_left is not None and result.days_left < warn_days:
        result.warnings.append(f"certificate expires in {result.days_left} days ({leaf['not_after'][:10]})")
    failures = []
    if fingerprint and _norm_hex(fingerprint) != _norm_hex(leaf["sha256"]):
        failures.append(f"served certificate has SHA-256 {leaf['sha256']}, expected {fingerprint.lower()}")
    if serial and _norm_hex(serial) != _norm_hex(leaf["serial"]):
        failures.append(f"served certificate has serial {leaf['serial']}, expected {serial.lower()}")
    if failures and result.ok:
        result.ok, result.stage, result.error = False, "expect", "; ".join(failures)
    elif failures:
        result.warnings.extend(failures)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _refid(refid: bytes, stratum: int) -> str:
    if stratum <= 1:
        return refid.decode("ascii", "replace").rstrip("\x00")
    return str(ipaddress.IPv4Address(refid))


def probe_many(targets: list[str], *, concurrency: int = 16, progress=None, **kw) -> list[ProbeResult]:
    """Probe every target, at most `concurrency` at a time; results in the order of `targets`.
    `progress` (optional) is called once per finished probe."""
    if concurrency < 1:
        raise NtspkiError("concurrency must be at least 1", 2)
    for t in targets:
        parse_target(t, kw.get("default_port", DEFAULT_PORT))  # bad input fails before any probe
    if "trust" not in kw:
        kw["trust"] = trust_store(kw.pop("ca_files", ()))

    def one(t):
        r = probe(t, **kw)
        if progress:
            progress(r)
        return r

    if len(targets) <= 1:
        return [one(t) for t in targets]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(targets))) as pool:
        return list(pool.map(one, targets))


def served_fingerprint(host: str, port: int = NTSKE_PORT, name: str | None = None, timeout: float = 5.0) -> str:
    """SHA-256 of the leaf certificate an NTS-KE server presents (TLS 1.3, ALPN ntske/1): probe's
    handshake without its chain and name checks, since the fingerprint pins the exact certificate.
    Raises ntske.ProtocolError when there is no such handshake."""
    from ntspki.nts import ntske

    sni = name if name and not names.is_ip(name) else None
    with ntske.KeClient(host, port, sni, timeout) as client:
        client.connect()
        session = client.handshake()
        client.check_protocol()
    if not session.chain:
        raise ntske.ProtocolError("tls", "the server sent no certificate")
    return pki.fingerprint(session.chain[0])
