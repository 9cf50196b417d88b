"""`probe` against small hostile or broken servers (threads on 127.0.0.1, random ports): each must
end in a clear one-line error within the timeout, never a hang or a traceback."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import threading
import time

import pytest
from OpenSSL import SSL

from ntspki.nts import ntske
from ntspki.nts.ntske import encode_ef, encode_record, u16
from ntspki.nts.probe import probe, probe_many
from ntspki.servers import lab
from tests.conftest import make_site, run_cli

TIMEOUT = 1.0  # what a hanging server costs each test


@pytest.fixture(scope="module")
def pki():
    path = lab.make_workdir("ntspki-hostile-")
    site = make_site(path / "home")
    yield site
    shutil.rmtree(path, ignore_errors=True)


class FakeServer:
    """A TCP server on 127.0.0.1 that runs `handle(sock)` for each connection in its own thread."""

    def __init__(self, handle):
        self.handle = handle
        self.stop_event = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target = f"127.0.0.1:{self.port}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop_event.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._run, args=(sock,), daemon=True).start()

    def _run(self, sock):
        try:
            self.handle(self, sock)
        except Exception:
            pass  # a hostile server's own failures are not what is tested
        finally:
            sock.close()

    def hang(self):
        self.stop_event.wait(30)

    def close(self):
        self.stop_event.set()
        self.listener.close()


@pytest.fixture
def serve():
    servers = []

    def start(handle):
        servers.append(FakeServer(handle))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def tls_context(site, alpn=b"ntske/1", max_version=None, alpn_pick=None):
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.use_certificate_chain_file(str(site.live / "fullchain.pem"))
    ctx.use_privatekey_file(str(site.live / "privkey.pem"))
    if max_version:
        ctx.set_max_proto_version(max_version)
    if alpn_pick is not None:
        ctx.set_alpn_select_callback(lambda conn, offered: alpn_pick)
    elif alpn:
        ctx.set_alpn_select_callback(lambda conn, offered: alpn if alpn in offered else SSL.NO_OVERLAPPING_PROTOCOLS)
    return ctx


def tls_accept(ctx, sock):
    conn = SSL.Connection(ctx, sock)
    conn.set_accept_state()
    conn.do_handshake()
    return conn


def read_request(conn) -> list[ntske.Record]:
    buf, records = b"", []
    while not records or records[-1].type != ntske.END_OF_MESSAGE:
        new, buf = ntske.parse_records(buf + conn.recv(4096))
        records += new
    return records


def ke_server(site, response: bytes | None = None, then: str = "close", trickle: bool = False, **tls):
    """TLS + ALPN ntske/1, read the request, send `response` (bytes), then close or hang."""
    ctx = tls_context(site, **tls)

    def handle(server, sock):
        conn = tls_accept(ctx, sock)
        read_request(conn)
        if trickle:
            for b in response:
                conn.sendall(bytes([b]))
                if server.stop_event.wait(0.3):
                    return
        else:
            conn.sendall(response)
        if then == "hang":
            server.hang()
        else:
            conn.shutdown()

    return handle


GOOD = (
    encode_record(ntske.NEXT_PROTOCOL, u16(0), True)
    + encode_record(ntske.AEAD, u16(15), True)
    + encode_record(ntske.NEW_COOKIE, os.urandom(64))
)
EOM = encode_record(ntske.END_OF_MESSAGE, b"", True)


def assert_fails(result, stage: str, *words: str):
    assert not result.ok, result
    assert result.stage == stage, (result.stage, result.error)
    assert "\n" not in result.error
    for w in words:
        assert w.lower() in result.error.lower(), result.error
    return result


# ---- transport and TLS --------------------------------------------------------------------------


def test_silent_server_times_out(serve, pki):
    server = serve(lambda srv, sock: srv.hang())
    start = time.monotonic()
    r = probe(server.target, ca_files=[pki.root], timeout=TIMEOUT)
    assert time.monotonic() - start < TIMEOUT + 1
    assert_fails(r, "tls", "timed out", "handshake")


def test_plain_tcp_that_closes_at_once(serve, pki):
    server = serve(lambda srv, sock: None)
    r = probe(server.target, ca_files=[pki.root], timeout=TIMEOUT)
    # Closed or reset, depending on whether the ClientHello was read first.
    assert_fails(r, "tls", "by the server in the TLS handshake", "Could not set credentials")


def test_non_tls_service(serve, pki):
    def handle(srv, sock):
        sock.recv(4096)
        sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        srv.hang()

    r = probe(serve(handle).target, ca_files=[pki.root], timeout=TIMEOUT)
    assert_fails(r, "tls", "does not speak TLS")


def test_nothing_listening(pki):
    port = lab.free_port()
    r = probe(f"127.0.0.1:{port}", ca_files=[pki.root], timeout=TIMEOUT)
    assert_fails(r, "connect", "cannot connect", "refused")


def test_tls12_only_server(serve, pki):
    server = serve(ke_server(pki, GOOD + EOM, max_version=SSL.TLS1_2_VERSION))
    r = probe(server.target, ca_files=[pki.root], timeout=TIMEOUT)
    assert_fails(r, "tls", "TLSv1.2", "requires TLS 1.3")
    assert r.tls_version == "TLSv1.2"


def test_server_without_alpn(serve, pki):
    server = serve(ke_server(pki, GOOD + EOM, alpn=None))
    r = probe(server.target, ca_files=[pki.root], timeout=TIMEOUT)
    assert_fails(r, "tls", "ALPN ntske/1", "no ALPN")


def test_server_picks_another_alpn(serve, pki):
    server = serve(ke_server(pki, GOOD + EOM, alpn_pick=b"http/1.1"))
    r = probe(server.target, ca_files=[pki.root], timeout=TIMEOUT)
    assert_fails(r, "tls", "bad extension", "ALPN other than ntske/1")


# ---- NTS-KE records ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response, then, words",
    [
        (GOOD, "close", ["closed before End of Message", "3 records"]),
        (GOOD, "hang", ["timed out", "NTS-KE response"]),
        (b"", "close", ["without an NTS-KE response"]),
        (
            GOOD + struct.pack("!HH", ntske.NEW_COOKIE, 100) + b"x" * 10,
            "close",
            ["truncated record", "announced 100 bytes, 10 arrived"],
        ),
        (GOOD + b"\x80", "close", ["truncated record"]),
        (encode_record(ntske.ERROR, u16(1), True) + EOM, "close", ["Error record", "Bad Request"]),
        (encode_record(ntske.WARNING, u16(7), True) + EOM, "close", ["Warning record", "code 7"]),
        (GOOD + encode_record(99, b"??", True) + EOM, "close", ["unrecognised critical record", "type 99"]),
        (encode_record(ntske.NEXT_PROTOCOL, b"", True) + EOM, "close", ["none of the protocols"]),
        (
            encode_record(ntske.NEXT_PROTOCOL, u16(0), True) + encode_record(ntske.NEW_COOKIE, b"c" * 8) + EOM,
            "close",
            ["none of the AEAD"],
        ),
        (
            encode_record(ntske.NEXT_PROTOCOL, u16(0), True) + encode_record(ntske.AEAD, u16(30)) + EOM,
            "close",
            ["AEAD 30", "not offered"],
        ),
        (
            encode_record(ntske.NEXT_PROTOCOL, u16(0), True) + encode_record(ntske.AEAD, u16(15)) + EOM,
            "close",
            ["no cookie"],
        ),
        (
            encode_record(ntske.AEAD, u16(15)) + encode_record(ntske.NEW_COOKIE, b"c" * 8) + EOM,
            "close",
            ["no Next Protocol"],
        ),
        (GOOD + encode_record(ntske.PORT, b"\x01") + EOM, "close", ["malformed NTPv4 Port"]),
        (GOOD + encode_record(ntske.SERVER, b"bad host\n") + EOM, "close", ["not a host name"]),
        (GOOD + GOOD + EOM, "close", ["more than one Next Protocol"]),
        (GOOD + encode_record(ntske.END_OF_MESSAGE, b""), "close", ["End of Message", "critical bit", "4.1.1"]),
        (
            encode_record(ntske.NEXT_PROTOCOL, u16(0)) + GOOD[6:] + EOM,
            "close",
            ["Next Protocol", "critical bit", "4.1.2"],
        ),
    ],
    ids=[
        "no-eom-close",
        "no-eom-hang",
        "empty",
        "truncated-body",
        "truncated-header",
        "error-record",
        "warning-record",
        "unknown-critical",
        "no-next-protocol-accepted",
        "no-aead",
        "aead-not-offered",
        "no-cookie",
        "no-next-protocol-record",
        "bad-port",
        "bad-server",
        "duplicate",
        "eom-not-critical",
        "next-protocol-not-critical",
    ],
)
def test_bad_ntske_response(serve, pki, response, then, words):
    server = serve(ke_server(pki, response, then=then))
    start = time.monotonic()
    r = probe(server.target, ca_files=[pki.root], timeout=TIMEOUT)
    assert time.monotonic() - start < TIMEOUT + 1
    assert_fails(r, "ntske", *words)
    assert r.verified and r.tls_version == "TLSv1.3" and r.alpn == "ntske/1"


def test_endless_records_are_bounded(serve, pki):
    ctx = tls_context(pki)

    def handle(srv, sock):
        conn = tls_accept(ctx, sock)
        read_request(conn)
        record = encode_record(ntske.NEW_COOKIE, b"x" * 60000)
        while not srv.stop_event.is_set():
            conn.sendall(record)

    r = probe(serve(handle).target, ca_files=[pki.root], timeout=5)
    assert_fails(r, "ntske", "larger than 65536 bytes")


def test_trickling_server_hits_the_deadline(serve, pki):
    # One byte every 0.3 s: each read succeeds, only an overall deadline stops it.
    server = serve(ke_server(pki, GOOD + EOM, trickle=True))
    start = time.monotonic()
    r = probe(server.target, ca_files=[pki.root], timeout=TIMEOUT)
    assert time.monotonic() - start < TIMEOUT + 1
    assert_fails(r, "ntske", "timed out")


# ---- a complete fake NTS server, for the NTP step ------------------------------------------------


class FakeNts:
    """NTS-KE over TLS plus an NTP responder on UDP whose reply is spoiled as `mode` says."""

    def __init__(self, serve, site, mode="good", extra_records=b"", server_record=None):
        self.mode, self.keys = mode, {}
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.settimeout(0.2)
        self.requests = 0
        ctx = tls_context(site)
        self.alive = True

        def handle(srv, sock):
            conn = tls_accept(ctx, sock)
            read_request(conn)
            c2s, s2c = ntske.export_keys(conn, 15)
            cookie = os.urandom(96)
            self.keys[cookie] = (c2s, s2c)
            resp = GOOD[: -(4 + 64)] + encode_record(ntske.NEW_COOKIE, cookie) + extra_records
            resp += encode_record(ntske.PORT, u16(self.udp.getsockname()[1]))
            if server_record:
                resp += encode_record(ntske.SERVER, server_record.encode())
            conn.sendall(resp + EOM)
            conn.shutdown()

        self.tcp = serve(handle)
        self.target = self.tcp.target
        threading.Thread(target=self._udp_loop, daemon=True).start()

    def _udp_loop(self):
        while self.alive:
            try:
                packet, addr = self.udp.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.requests += 1
            if self.mode == "noisy":
                self.noise(packet, addr)
            reply = self.reply(packet)
            if reply:
                self.udp.sendto(reply, addr)

    NOISE = ("short", "wrong-origin", "wrong-uid", "bad-auth", "unauthenticated", "bad-ef", "ntsn-wrong-uid", "mode-3")

    def noise(self, packet, addr):
        """What an attacker who cannot read the keys can send first: garbage, replies to someone
        else, forgeries; and from another port, a reply that would be authentic (the kernel drops it:
        the probe's socket is connected to the server's address and port)."""
        self.udp.sendto(os.urandom(7), addr)
        for mode in self.NOISE:
            self.udp.sendto(self.reply(packet, mode), addr)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.sendto(self.reply(packet, "good", stratum=9), addr)
        time.sleep(0.05)  # the noise arrives first

    def reply(self, packet, mode=None, stratum=2):
        mode = mode or self.mode
        cookie = next(b for t, _, b in ntske.parse_efs(packet) if t == ntske.EF_COOKIE)
        c2s, s2c = self.keys[cookie]
        uid, _, _, xmt = parse_ntp_request(packet, c2s)
        if mode == "silent":
            return None
        if mode == "short":
            return b"\x24" * 20
        now = ntske.ntp_time(time.time())
        stratum, refid = (0, b"NTSN") if mode.startswith("ntsn") else (stratum, bytes([127, 0, 0, 1]))
        first = 0x23 if mode == "mode-3" else 0x24
        header = struct.pack("!BBbb", first, stratum, 6, -20) + b"\x00" * 8 + refid + now + xmt + now + now
        if mode == "wrong-origin":
            header = header[:24] + os.urandom(8) + header[32:]
        echoed = os.urandom(32) if mode in ("wrong-uid", "ntsn-wrong-uid") else uid
        body = header + encode_ef(ntske.EF_UNIQUE_IDENTIFIER, echoed)
        if mode.startswith("ntsn") or mode == "unauthenticated":
            return body
        if mode == "bad-ef":
            return body + struct.pack("!HH", ntske.EF_AUTHENTICATOR, 4000) + b"\x00" * 12
        key = c2s if mode == "bad-auth" else s2c  # bad-auth: sealed with the wrong key
        return body + ntske.authenticator(key, body, encode_ef(ntske.EF_COOKIE, os.urandom(96)))

    def close(self):
        self.alive = False
        self.udp.close()


@pytest.fixture
def fake_nts(serve, pki):
    made = []

    def make(mode="good", **kw):
        made.append(FakeNts(serve, pki, mode, **kw))
        return made[-1]

    yield make
    for f in made:
        f.close()


def test_fake_server_is_a_real_nts_server(fake_nts, pki):
    # The baseline: every spoiled variant below differs from this one only in its flaw.
    fake = fake_nts("good", extra_records=encode_record(1234, b"ignored"), server_record="127.0.0.1")
    r = probe(fake.target, ca_files=[pki.root], timeout=TIMEOUT)
    assert r.ok, r.error
    assert r.authenticated and r.stratum == 2 and r.new_cookies == 1 and r.cookies == 1
    assert r.ntp_server == "127.0.0.1" and r.ntp_port == fake.udp.getsockname()[1]
    assert abs(r.offset_s) < 0.5 and 0 <= r.delay_s < 0.5


DISCARDED = ["no NTP reply", "within 1 s", "discarded 1 datagram"]


@pytest.mark.parametrize(
    "mode, words",
    [
        # Not the authentic answer to the request: discarded (RFC 8915 section 5.7), and said at the timeout.
        ("bad-auth", [*DISCARDED, "failed authentication"]),
        ("wrong-uid", [*DISCARDED, "does not echo our unique identifier"]),
        ("unauthenticated", [*DISCARDED, "not authenticated"]),
        ("wrong-origin", [*DISCARDED, "origin timestamp"]),
        ("short", [*DISCARDED, "too short"]),
        ("bad-ef", [*DISCARDED, "malformed extension field", "length 4000"]),
        ("ntsn-wrong-uid", [*DISCARDED, "does not echo our unique identifier"]),
        ("mode-3", [*DISCARDED, "mode 3"]),
        # An answer that says no: reported at once.
        ("ntsn", ["NTS NAK", "NTSN"]),
        ("silent", ["no NTP reply", "within 1 s"]),
    ],
)
def test_bad_ntp_reply(fake_nts, pki, mode, words):
    fake = fake_nts(mode)
    start = time.monotonic()
    r = probe(fake.target, ca_files=[pki.root], timeout=TIMEOUT)
    assert time.monotonic() - start < TIMEOUT + 1
    assert fake.requests == 1  # the request itself was well formed and authenticated
    assert_fails(r, "ntp", *words)
    assert not r.authenticated and r.cookies == 1


def test_forged_and_stray_datagrams_before_the_real_reply_are_ignored(fake_nts, pki):
    """Garbage, replies to other requests, forgeries and a datagram from another port arrive
    before the server's real reply: the probe discards them all and succeeds with the real one."""
    fake = fake_nts("noisy")
    r = probe(fake.target, ca_files=[pki.root], timeout=TIMEOUT)
    assert r.ok, r.error
    assert r.authenticated and r.stratum == 2  # not the other port's stratum 9
    assert fake.requests == 1


def test_ntp_port_closed(serve, pki):
    closed = lab.free_port()
    server = serve(ke_server(pki, GOOD + encode_record(ntske.PORT, u16(closed)) + EOM))
    r = probe(server.target, ca_files=[pki.root], timeout=TIMEOUT)
    assert_fails(r, "ntp", "refused")


# ---- many at once, and the CLI -----------------------------------------------------------------


def test_many_hanging_servers_run_concurrently(serve, pki, fake_nts):
    silent = [serve(lambda srv, sock: srv.hang()).target for _ in range(12)]
    good = fake_nts("good").target
    start = time.monotonic()
    results = probe_many([*silent, good], concurrency=13, ca_files=[pki.root], timeout=TIMEOUT)
    elapsed = time.monotonic() - start
    assert elapsed < 3 * TIMEOUT, elapsed  # one timeout, not thirteen
    assert [r.ok for r in results] == [False] * 12 + [True]
    assert all("timed out" in r.error for r in results[:12])


def test_cli_reports_hostile_server_in_one_line(serve, pki):
    server = serve(ke_server(pki, GOOD + b"\x00\x05\xff"))
    proc = run_cli("probe", server.target, "--ca", pki.root, "--timeout", TIMEOUT)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "FAILED (ntske)" in proc.stdout and "truncated record" in proc.stdout


def parse_ntp_request(packet: bytes, c2s: bytes) -> tuple[bytes, bytes, int, bytes]:
    """The server side of an NTS-protected NTP request, for the hostile test servers here:
    (unique identifier, cookie, placeholders, transmit timestamp) of an authenticated request."""
    efs = ntske.parse_efs(packet)
    uid = next(b for t, _, b in efs if t == ntske.EF_UNIQUE_IDENTIFIER)
    cookie = next(b for t, _, b in efs if t == ntske.EF_COOKIE)
    placeholders = sum(1 for t, _, _ in efs if t == ntske.EF_COOKIE_PLACEHOLDER)
    off, body = next((o, b) for t, o, b in efs if t == ntske.EF_AUTHENTICATOR)
    ntske.open_authenticator(c2s, packet, off, body)
    return uid, cookie, placeholders, packet[40:48]
