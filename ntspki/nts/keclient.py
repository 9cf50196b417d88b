"""The NTS-KE client over TLS 1.3 (RFC 8915 section 4): handshake, request, response, key export.

pyOpenSSL is used (not `ssl`) because NTS needs the TLS exporter (RFC 5705), and it runs over
memory BIOs so that this module, not OpenSSL, owns every socket read and its timeout. Every read
has a deadline and the response a size bound (`records.MAX_RESPONSE`).
"""

from __future__ import annotations

import functools
import socket
import struct
import time
from dataclasses import dataclass, field

from OpenSSL import SSL

from ntspki.nts.records import (
    AEAD_AES_SIV_CMAC_256,
    ALPN,
    END_OF_MESSAGE,
    EXPORTER_LABEL,
    KEY_LENGTH,
    MAX_RESPONSE,
    KeResponse,
    ProtocolError,
    Record,
    build_request,
    fmt_addr,
    interpret_response,
    parse_records,
    u16,
)


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
                last = f"timed out after {self.timeout:g} s connecting to {fmt_addr(addr)}"
            except OSError as e:
                sock.close()
                last = f"cannot connect to {fmt_addr(addr)}: {e.strerror or e}"
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
