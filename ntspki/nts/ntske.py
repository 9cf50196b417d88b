"""RFC 8915 on the wire: NTS-KE records, the NTS-KE client over TLS 1.3, and one NTS-protected
NTP exchange (AEAD 15, AES-SIV-CMAC-256).

Everything a server sends is untrusted: every read has a deadline, the NTS-KE response has a size
bound, and every malformed input becomes a `ProtocolError` with a one-line message saying what was
wrong. pyOpenSSL is used (not `ssl`) because NTS needs the TLS exporter (RFC 5705), and it runs
over memory BIOs so that this module, not OpenSSL, owns every socket read and its timeout.
"""

from __future__ import annotations

import functools
import os
import socket
import struct
import time
from dataclasses import dataclass, field

from OpenSSL import SSL

from ntspki.nts import NTP_PORT, NTSKE_PORT  # noqa: F401  (callers use ntske.NTSKE_PORT too)

ALPN = b"ntske/1"
EXPORTER_LABEL = b"EXPORTER-network-time-security"
NEXT_PROTOCOL_NTPV4 = 0
AEAD_AES_SIV_CMAC_256 = 15
KEY_LENGTH = {AEAD_AES_SIV_CMAC_256: 32}

# NTS-KE record types (RFC 8915 section 4.1).
END_OF_MESSAGE, NEXT_PROTOCOL, ERROR, WARNING, AEAD, NEW_COOKIE, SERVER, PORT = range(8)
RECORD_NAMES = {
    0: "End of Message",
    1: "Next Protocol",
    2: "Error",
    3: "Warning",
    4: "AEAD Algorithm",
    5: "New Cookie",
    6: "NTPv4 Server",
    7: "NTPv4 Port",
}
ERROR_CODES = {0: "Unrecognized Critical Record", 1: "Bad Request", 2: "Internal Server Error"}
CRITICAL = 0x8000

# A real answer is about 1 KiB (8 cookies of ~100 bytes); anything far bigger is hostile.
MAX_RESPONSE = 64 * 1024
MAX_COOKIES = 64

# NTP extension field types (RFC 8915 section 5.7).
EF_UNIQUE_IDENTIFIER = 0x0104
EF_COOKIE = 0x0204
EF_COOKIE_PLACEHOLDER = 0x0304
EF_AUTHENTICATOR = 0x0404
NTP_HEADER = 48
NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01
NONCE_LENGTH = 16


class ProtocolError(Exception):
    """What a server did wrong (or that it could not be reached), as one line. `stage` says where:
    connect, tls, ntske or ntp."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


# ---- NTS-KE records ---------------------------------------------------------------------------


@dataclass
class Record:
    type: int
    body: bytes
    critical: bool = False


def encode_record(rtype: int, body: bytes = b"", critical: bool = False) -> bytes:
    if len(body) > 0xFFFF:
        raise ValueError("NTS-KE record body longer than 65535 bytes")
    return struct.pack("!HH", (CRITICAL if critical else 0) | rtype, len(body)) + body


def u16(value: int) -> bytes:
    return struct.pack("!H", value)


def build_request(aeads: tuple[int, ...] = (AEAD_AES_SIV_CMAC_256,)) -> bytes:
    """NTPv4 next protocol and our AEAD list, as chrony's client sends them (all critical)."""
    return (
        encode_record(NEXT_PROTOCOL, u16(NEXT_PROTOCOL_NTPV4), True)
        + encode_record(AEAD, b"".join(u16(a) for a in aeads), True)
        + encode_record(END_OF_MESSAGE, b"", True)
    )


def parse_records(data: bytes) -> tuple[list[Record], bytes]:
    """Complete records from the front of `data`, and the incomplete rest."""
    records, pos = [], 0
    while len(data) - pos >= 4:
        word, length = struct.unpack_from("!HH", data, pos)
        if len(data) - pos - 4 < length:
            break
        records.append(Record(word & 0x7FFF, bytes(data[pos + 4 : pos + 4 + length]), bool(word & CRITICAL)))
        pos += 4 + length
    return records, bytes(data[pos:])


@dataclass
class KeResponse:
    next_protocols: list[int]
    aead: int | None
    cookies: list[bytes]
    server: str | None
    port: int | None
    ignored: list[int] = field(default_factory=list)  # unknown non-critical record types


def _u16_list(rec: Record, what: str) -> list[int]:
    if len(rec.body) % 2:
        raise ProtocolError("ntske", f"malformed {what} record (odd length {len(rec.body)})")
    return [v for (v,) in struct.iter_unpack("!H", rec.body)]


def interpret_response(records: list[Record], offered_aeads=(AEAD_AES_SIV_CMAC_256,)) -> KeResponse:
    """Apply RFC 8915's rules to a complete response (ending with End of Message)."""
    seen: set[int] = set()
    resp = KeResponse([], None, [], None, None)
    for rec in records:
        name = RECORD_NAMES.get(rec.type, f"type {rec.type}")
        if rec.type in (NEXT_PROTOCOL, AEAD, SERVER, PORT) and rec.type in seen:
            raise ProtocolError("ntske", f"server sent more than one {name} record")
        seen.add(rec.type)
        if rec.type == END_OF_MESSAGE:
            break
        if rec.type == ERROR:
            codes = _u16_list(rec, name)
            code = codes[0] if len(codes) == 1 else None
            raise ProtocolError(
                "ntske", f"server sent an Error record: {ERROR_CODES.get(code or -1, 'unknown error')} (code {code})"
            )
        if rec.type == WARNING:
            # No warning codes are defined: a client must treat any warning it does not know as fatal.
            warnings = _u16_list(rec, name)
            raise ProtocolError(
                "ntske",
                f"server sent a Warning record (code {warnings[0] if warnings else '?'}); "
                "no warning is defined, so the exchange is aborted",
            )
        if rec.type == NEXT_PROTOCOL:
            resp.next_protocols = _u16_list(rec, name)
        elif rec.type == AEAD:
            aeads = _u16_list(rec, name)
            if len(aeads) != 1:
                raise ProtocolError("ntske", f"server's AEAD record holds {len(aeads)} algorithms, not one")
            resp.aead = aeads[0]
        elif rec.type == NEW_COOKIE:
            if not rec.body:
                raise ProtocolError("ntske", "server sent an empty cookie")
            if len(resp.cookies) >= MAX_COOKIES:
                raise ProtocolError("ntske", f"server sent more than {MAX_COOKIES} cookies")
            resp.cookies.append(rec.body)
        elif rec.type == SERVER:
            try:
                resp.server = rec.body.decode("ascii")
            except UnicodeDecodeError:
                raise ProtocolError("ntske", "server's NTPv4 Server record is not ASCII")
            if not resp.server or any(c.isspace() or not c.isprintable() for c in resp.server):
                raise ProtocolError("ntske", f"server's NTPv4 Server record is not a host name: {resp.server!r}")
        elif rec.type == PORT:
            if len(rec.body) != 2:
                raise ProtocolError("ntske", f"malformed NTPv4 Port record (length {len(rec.body)})")
            resp.port = struct.unpack("!H", rec.body)[0]
            if resp.port == 0:
                raise ProtocolError("ntske", "server names NTP port 0")
        elif rec.critical:
            raise ProtocolError("ntske", f"server sent an unrecognised critical record (type {rec.type})")
        else:
            resp.ignored.append(rec.type)
    else:
        raise ProtocolError("ntske", "response has no End of Message record")
    if NEXT_PROTOCOL not in seen:
        raise ProtocolError("ntske", "response has no Next Protocol record")
    if resp.next_protocols != [NEXT_PROTOCOL_NTPV4]:
        if not resp.next_protocols:
            raise ProtocolError("ntske", "server supports none of the protocols offered (NTPv4)")
        raise ProtocolError("ntske", f"server chose next protocol(s) {resp.next_protocols}, not NTPv4 (0)")
    if resp.aead is None:
        raise ProtocolError("ntske", "server accepted none of the AEAD algorithms offered (15, AES-SIV-CMAC-256)")
    if resp.aead not in offered_aeads:
        raise ProtocolError("ntske", f"server chose AEAD {resp.aead}, which was not offered")
    if not resp.cookies:
        raise ProtocolError("ntske", "server sent no cookie")
    return resp


# ---- NTS-KE client over TLS -------------------------------------------------------------------


@dataclass
class KeSession:
    """The outcome of the TLS handshake (filled in even if a later step fails)."""

    peer: tuple | None = None  # sockaddr actually connected to
    tls_version: str | None = None
    alpn: str | None = None
    chain: list = field(default_factory=list)  # cryptography certificates as sent, leaf first
    response: KeResponse | None = None
    c2s: bytes | None = None
    s2c: bytes | None = None


@functools.cache
def _client_context():
    """One TLS client context for every handshake: making one per connection costs more than the
    handshake's own work under OpenSSL 3 and serialises concurrent probes on its global locks
    (measured: 32 concurrent probes ran slower than one at a time)."""
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    # TLS 1.2 is allowed in the handshake only to report it: NTS-KE itself refuses it below.
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_alpn_protos([ALPN])
    ctx.set_verify(SSL.VERIFY_NONE)  # the caller verifies the chain and name, chrony's way
    return ctx


class KeClient:
    """One NTS-KE exchange. `handshake()` then (after the caller has verified the certificate)
    `exchange()`. Every socket read is bounded by the deadline given to the constructor."""

    def __init__(self, host: str, port: int, sni: str | None, timeout: float):
        self.host, self.port, self.sni = host, port, sni
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.session = KeSession()
        self.sock: socket.socket | None = None
        self.conn: SSL.Connection | None = None
        self.stage = "connect"  # what a timeout or lost connection is reported as

    def _remaining(self, doing: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ProtocolError(self.stage, f"timed out after {self.timeout:g} s {doing}")
        return left

    @property
    def _tcp(self) -> socket.socket:
        if self.sock is None:
            raise ProtocolError(self.stage, "not connected")
        return self.sock

    @property
    def _tls(self) -> SSL.Connection:
        if self.conn is None:
            raise ProtocolError(self.stage, "no TLS session")
        return self.conn

    def close(self) -> None:
        if self.sock is None:
            return
        if self.session.response is not None:
            try:  # a polite close_notify, best effort: never wait for it
                self._tls.shutdown()
                self._tcp.setblocking(False)
                self._tcp.send(self._tls.bio_read(65536))
            except (SSL.Error, OSError):
                pass
        self._tcp.close()
        self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def connect(self) -> None:
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise ProtocolError("connect", f"cannot resolve {self.host}: {e.strerror}")
        last = None
        for family, kind, proto, _, addr in infos:
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(self._remaining("connecting"))
                sock.connect(addr)
                # Finished and the request go out as separate small writes: without this, Nagle's
                # algorithm and the peer's delayed ACK add ~40 ms to every exchange.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sock, self.session.peer = sock, addr
                return
            except TimeoutError:
                sock.close()
                last = f"timed out after {self.timeout:g} s connecting to {_fmt(addr)}"
            except OSError as e:
                sock.close()
                last = f"cannot connect to {_fmt(addr)}: {e.strerror or e}"
            except ProtocolError:
                sock.close()
                raise
        raise ProtocolError("connect", last or f"no address for {self.host}")

    # -- raw I/O through memory BIOs ------------------------------------------------------------
    def _flush(self) -> None:
        while True:
            try:
                data = self._tls.bio_read(65536)
            except SSL.WantReadError:
                return
            if not data:
                return
            try:
                self._tcp.settimeout(self._remaining("sending"))
                self._tcp.sendall(data)
            except TimeoutError:
                raise ProtocolError(self.stage, f"timed out after {self.timeout:g} s sending")
            except OSError as e:
                raise ProtocolError(self.stage, f"connection lost while sending: {e.strerror or e}")

    def _fill(self, doing: str) -> bool:
        """Feed the next bytes from the socket to OpenSSL; False at end of stream."""
        stage = self.stage
        try:
            self._tcp.settimeout(self._remaining(doing))
            data = self._tcp.recv(65536)
        except TimeoutError:
            raise ProtocolError(stage, f"timed out after {self.timeout:g} s {doing}")
        except ConnectionResetError:
            hint = CLOSED_HINT if stage == "tls" else ""
            raise ProtocolError(stage, f"connection reset by the server {doing}{hint}")
        except OSError as e:
            raise ProtocolError(stage, f"connection error {doing}: {e.strerror or e}")
        if not data:
            self._tls.bio_shutdown()
            return False
        self._tls.bio_write(data)
        return True

    def handshake(self) -> KeSession:
        self.stage = "tls"
        self.conn = SSL.Connection(_client_context(), None)
        self._tls.set_connect_state()
        if self.sni:
            self._tls.set_tlsext_host_name(self.sni.encode("idna"))
        doing = "in the TLS handshake"
        while True:
            try:
                self._tls.do_handshake()
                break
            except SSL.WantReadError:
                self._flush()
                if not self._fill(doing):
                    raise ProtocolError("tls", "connection closed by the server in the TLS handshake" + CLOSED_HINT)
            except SSL.SysCallError as e:
                if e.args and e.args[0] in (-1, 0):  # end of stream where a TLS record was due
                    raise ProtocolError("tls", "connection closed by the server in the TLS handshake" + CLOSED_HINT)
                raise ProtocolError("tls", f"TLS handshake failed: {e}")
            except SSL.Error as e:
                raise ProtocolError("tls", _tls_error(e))
        self._flush()
        s = self.session
        s.tls_version = self._tls.get_protocol_version_name()
        alpn = self._tls.get_alpn_proto_negotiated()
        s.alpn = alpn.decode("ascii", "replace") if alpn else None
        s.chain = self._tls.get_peer_cert_chain(as_cryptography=True) or []
        return s

    def check_protocol(self) -> None:
        s = self.session
        if s.tls_version != "TLSv1.3":
            raise ProtocolError("tls", f"server negotiated {s.tls_version}; NTS-KE requires TLS 1.3")
        if s.alpn != ALPN.decode():
            got = f"ALPN {s.alpn!r}" if s.alpn else "no ALPN"
            raise ProtocolError("tls", f"server did not agree to ALPN ntske/1 ({got})")

    def exchange(self, aeads=(AEAD_AES_SIV_CMAC_256,)) -> KeResponse:
        self.stage = "ntske"
        try:
            self._tls.sendall(build_request(aeads))
        except SSL.Error as e:
            raise ProtocolError("ntske", f"cannot send the NTS-KE request: {_tls_error(e)}")
        self._flush()
        buf, total = b"", 0
        records: list[Record] = []
        doing = "waiting for the NTS-KE response"
        while not records or records[-1].type != END_OF_MESSAGE:
            try:
                data = self._tls.recv(65536)
            except SSL.WantReadError:
                self._flush()
                if not self._fill(doing):
                    data = b""
                else:
                    continue
            except (SSL.ZeroReturnError, SSL.SysCallError):
                data = b""
            except SSL.Error as e:
                raise ProtocolError("ntske", f"TLS error {doing}: {_tls_error(e)}")
            if not data:
                if buf:
                    raise ProtocolError(
                        "ntske", f"truncated record: connection closed {len(buf)} bytes into a record{_partial(buf)}"
                    )
                if not records:
                    raise ProtocolError("ntske", "connection closed without an NTS-KE response")
                raise ProtocolError("ntske", f"connection closed before End of Message (after {len(records)} records)")
            total += len(data)
            if total > MAX_RESPONSE:
                raise ProtocolError("ntske", f"NTS-KE response larger than {MAX_RESPONSE} bytes without End of Message")
            new, buf = parse_records(buf + data)
            for rec in new:
                records.append(rec)
                if rec.type == END_OF_MESSAGE:
                    break  # whatever follows End of Message is ignored
        resp = interpret_response(records, aeads)
        self.session.response = resp
        assert resp.aead is not None  # interpret_response refuses a response without one
        self.session.c2s, self.session.s2c = export_keys(self._tls, resp.aead)
        return resp


def export_keys(conn: SSL.Connection, aead: int) -> tuple[bytes, bytes]:
    """(client-to-server, server-to-client) keys, RFC 8915 section 5.1."""
    length = KEY_LENGTH[aead]
    ctx = b"\x00\x00" + u16(aead)
    return (
        conn.export_keying_material(EXPORTER_LABEL, length, ctx + b"\x00"),
        conn.export_keying_material(EXPORTER_LABEL, length, ctx + b"\x01"),
    )


def _partial(buf: bytes) -> str:
    if len(buf) < 4:
        return ""
    word, length = struct.unpack_from("!HH", buf)
    return f" (type {word & 0x7FFF} announced {length} bytes, {len(buf) - 4} arrived)"


# chronyd keeps accepting TCP after its credentials failed to load, then drops every handshake.
CLOSED_HINT = (
    " (chronyd does this when its key or certificate failed to load: look for "
    "'Could not set credentials' in its log; a non-TLS service does it too)"
)


def _tls_error(e: SSL.Error) -> str:
    reasons = []
    for item in e.args[0] if e.args and isinstance(e.args[0], list) else []:
        if isinstance(item, tuple) and len(item) == 3:
            reasons.append(str(item[2]))
    text = "; ".join(reasons) or str(e)
    low = text.lower()
    if "protocol version" in low or "unsupported protocol" in low:
        return f"server does not speak TLS 1.3, which NTS-KE requires ({text})"
    if "wrong version number" in low or "packet length too long" in low or "record layer failure" in low:
        return f"the server does not speak TLS ({text})"
    if "alpn" in low or "no application protocol" in low:
        return f"server did not agree to ALPN ntske/1 ({text})"
    if "bad extension" in low:
        return (
            f"TLS handshake failed: {text} (the server answered an extension it was not offered, "
            "such as an ALPN other than ntske/1)"
        )
    return f"TLS handshake failed: {text}"


def _fmt(addr) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ---- NTP with NTS extension fields -------------------------------------------------------------


def encode_ef(ftype: int, body: bytes) -> bytes:
    """An NTP extension field: padded to a multiple of 4, at least 16 bytes long (RFC 7822)."""
    length = max(16, 4 + len(body) + (-len(body) % 4))
    return struct.pack("!HH", ftype, length) + body + b"\x00" * (length - 4 - len(body))


def parse_efs(data: bytes, start: int = NTP_HEADER) -> list[tuple[int, int, bytes]]:
    """(type, offset, body) of each extension field from `start`; raises on malformed lengths."""
    out, pos = [], start
    while pos < len(data):
        if len(data) - pos < 4:
            raise ProtocolError("ntp", f"truncated extension field at byte {pos}")
        ftype, length = struct.unpack_from("!HH", data, pos)
        if length < 4 or length % 4 or pos + length > len(data):
            raise ProtocolError("ntp", f"malformed extension field (type {ftype:#06x}, length {length}) at byte {pos}")
        out.append((ftype, pos, bytes(data[pos + 4 : pos + length])))
        pos += length
        if len(out) > 64:
            raise ProtocolError("ntp", "more than 64 extension fields")
    return out


def authenticator(key: bytes, associated: bytes, plaintext: bytes = b"", nonce: bytes | None = None) -> bytes:
    """The Authenticator and Encrypted Extension Fields field (0x0404) for `associated`."""
    from cryptography.hazmat.primitives.ciphers.aead import AESSIV

    nonce = nonce or os.urandom(NONCE_LENGTH)
    ciphertext = AESSIV(key).encrypt(plaintext, [associated, nonce])
    body = (
        struct.pack("!HH", len(nonce), len(ciphertext))
        + nonce
        + b"\x00" * (-len(nonce) % 4)
        + ciphertext
        + b"\x00" * (-len(ciphertext) % 4)
    )
    return encode_ef(EF_AUTHENTICATOR, body)


def open_authenticator(key: bytes, packet: bytes, offset: int, body: bytes) -> bytes:
    """Check an Authenticator field at `offset` of `packet`; returns the decrypted plaintext."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESSIV

    if len(body) < 4:
        raise ProtocolError("ntp", "malformed Authenticator field")
    nlen, clen = struct.unpack_from("!HH", body)
    npad = nlen + (-nlen % 4)
    if nlen == 0 or clen < 16 or 4 + npad + clen > len(body):
        raise ProtocolError("ntp", f"malformed Authenticator field (nonce {nlen}, ciphertext {clen} bytes)")
    nonce = body[4 : 4 + nlen]
    ciphertext = body[4 + npad : 4 + npad + clen]
    try:
        return AESSIV(key).decrypt(ciphertext, [packet[:offset], nonce])
    except InvalidTag:
        raise ProtocolError(
            "ntp", "NTP reply failed authentication (AES-SIV tag mismatch: wrong keys or altered packet)"
        )


def ntp_time(t: float) -> bytes:
    secs = t + NTP_EPOCH_OFFSET
    return struct.pack("!II", int(secs) & 0xFFFFFFFF, int((secs % 1) * 2**32) & 0xFFFFFFFF)


def from_ntp_time(raw: bytes) -> float:
    secs, frac = struct.unpack("!II", raw)
    return secs - NTP_EPOCH_OFFSET + frac / 2**32


@dataclass
class NtpRequest:
    packet: bytes
    uid: bytes
    t1: float


def build_ntp_request(c2s: bytes, cookie: bytes, placeholders: int = 0, t1: float | None = None) -> NtpRequest:
    """Mode 3 client request with Unique Identifier, Cookie, placeholders and Authenticator."""
    t1 = time.time() if t1 is None else t1
    uid = os.urandom(32)
    # LI 0, version 4, mode 3; poll 6 (64 s), precision 2^-20; transmit timestamp = t1.
    header = struct.pack("!BBbb", 0x23, 0, 6, -20) + b"\x00" * 36 + ntp_time(t1)
    body = header + encode_ef(EF_UNIQUE_IDENTIFIER, uid) + encode_ef(EF_COOKIE, cookie)
    for _ in range(placeholders):
        body += encode_ef(EF_COOKIE_PLACEHOLDER, b"\x00" * len(cookie))
    return NtpRequest(body + authenticator(c2s, body), uid, t1)


@dataclass
class NtpReply:
    leap: int
    version: int
    stratum: int
    refid: bytes
    t2: float  # server receive time
    t3: float  # server transmit time
    t4: float  # our receive time
    cookies: list[bytes]

    def offset_delay(self, t1: float) -> tuple[float, float]:
        offset = ((self.t2 - t1) + (self.t3 - self.t4)) / 2
        delay = (self.t4 - t1) - (self.t3 - self.t2)
        return offset, delay


def parse_ntp_reply(packet: bytes, request: NtpRequest, s2c: bytes, t4: float) -> NtpReply:
    if len(packet) < NTP_HEADER:
        raise ProtocolError("ntp", f"NTP reply too short ({len(packet)} bytes)")
    first, stratum = packet[0], packet[1]
    leap, version, mode = first >> 6, (first >> 3) & 7, first & 7
    if mode != 4:
        raise ProtocolError("ntp", f"NTP reply has mode {mode}, not 4 (server)")
    if packet[24:32] != request.packet[40:48]:
        raise ProtocolError("ntp", "NTP reply does not answer our request (origin timestamp differs)")
    refid = packet[12:16]
    efs = parse_efs(packet)
    uids = [body for t, _, body in efs if t == EF_UNIQUE_IDENTIFIER]
    if len(uids) != 1 or uids[0][: len(request.uid)] != request.uid:
        raise ProtocolError(
            "ntp", "NTP reply does not echo our unique identifier" if uids else "NTP reply has no unique identifier"
        )
    auths = [(off, body) for t, off, body in efs if t == EF_AUTHENTICATOR]
    kiss = refid.decode("ascii", "replace").rstrip("\x00") if stratum == 0 else None
    if kiss is not None and not auths:
        if kiss == "NTSN":
            raise ProtocolError("ntp", "server sent an NTS NAK (kiss code NTSN): it did not accept our cookie")
        raise ProtocolError("ntp", f"unauthenticated kiss-o'-death reply (kiss code {kiss!r})")
    if len(auths) != 1:
        raise ProtocolError(
            "ntp",
            "NTP reply is not authenticated (no Authenticator field)"
            if not auths
            else "NTP reply has more than one Authenticator field",
        )
    offset, body = auths[0]
    plaintext = open_authenticator(s2c, packet, offset, body)
    cookies = [b for t, _, b in parse_efs(plaintext, 0) if t == EF_COOKIE] if plaintext else []
    if kiss is not None:
        raise ProtocolError("ntp", f"server sent kiss code {kiss!r}")
    return NtpReply(
        leap, version, stratum, refid, from_ntp_time(packet[32:40]), from_ntp_time(packet[40:48]), t4, cookies
    )


def ntp_exchange(
    host: str, port: int, c2s: bytes, s2c: bytes, cookie: bytes, timeout: float, placeholders: int = 0
) -> tuple[NtpRequest, NtpReply]:
    """One authenticated NTP exchange. The first datagram from the server decides (a probe wants
    the server's own answer reported, not silently skipped)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as e:
        raise ProtocolError("ntp", f"cannot resolve NTP server {host}: {e.strerror}")
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.connect(addr)  # only datagrams from the server's address are delivered
        request = build_ntp_request(c2s, cookie, placeholders)
        deadline = time.monotonic() + timeout
        sock.send(request.packet)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProtocolError("ntp", f"no NTP reply from {_fmt(addr)} within {timeout:g} s")
            sock.settimeout(left)
            try:
                packet = sock.recv(4096)
            except TimeoutError:
                continue
            except ConnectionRefusedError:
                raise ProtocolError("ntp", f"NTP port {_fmt(addr)} refused the request (nothing listens there)")
            except OSError as e:
                raise ProtocolError("ntp", f"NTP exchange with {_fmt(addr)} failed: {e.strerror or e}")
            t4 = time.time()
            return request, parse_ntp_reply(packet, request, s2c, t4)
