"""One NTS-protected NTP exchange (RFC 8915 section 5): extension fields, the AES-SIV-CMAC-256
authenticator, the request and the checks its reply must pass. No TLS here: the keys and cookie
come from an NTS-KE exchange (`keclient`).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass

from ntspki.nts.records import (
    EF_AUTHENTICATOR,
    EF_COOKIE,
    EF_COOKIE_PLACEHOLDER,
    EF_UNIQUE_IDENTIFIER,
    NONCE_LENGTH,
    NTP_EPOCH_OFFSET,
    NTP_HEADER,
    ProtocolError,
    fmt_addr,
)


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


class NotAnAnswer(ProtocolError):
    """A datagram that is not the authentic answer to our request: RFC 8915 section 5.7 has the
    client discard it (anyone can send datagrams; only the server holds the keys)."""

    def __init__(self, message: str):
        super().__init__("ntp", message)


def parse_ntp_reply(packet: bytes, request: NtpRequest, s2c: bytes, t4: float) -> NtpReply:
    """The reply, checked. NotAnAnswer for what is to be discarded (unparsable, not answering this
    request, not authentic); ProtocolError for an answer that says something went wrong (an NTS NAK
    echoing our unique identifier, an authenticated kiss code)."""
    if len(packet) < NTP_HEADER:
        raise NotAnAnswer(f"NTP reply too short ({len(packet)} bytes)")
    first, stratum = packet[0], packet[1]
    leap, version, mode = first >> 6, (first >> 3) & 7, first & 7
    if mode != 4:
        raise NotAnAnswer(f"NTP reply has mode {mode}, not 4 (server)")
    if packet[24:32] != request.packet[40:48]:
        raise NotAnAnswer("NTP reply does not answer our request (origin timestamp differs)")
    refid = packet[12:16]
    try:
        efs = parse_efs(packet)
    except ProtocolError as e:
        raise NotAnAnswer(str(e))
    uids = [body for t, _, body in efs if t == EF_UNIQUE_IDENTIFIER]
    if len(uids) != 1 or uids[0][: len(request.uid)] != request.uid:
        raise NotAnAnswer(
            "NTP reply does not echo our unique identifier" if uids else "NTP reply has no unique identifier"
        )
    auths = [(off, body) for t, off, body in efs if t == EF_AUTHENTICATOR]
    kiss = refid.decode("ascii", "replace").rstrip("\x00") if stratum == 0 else None
    if kiss is not None and not auths:
        if kiss == "NTSN":  # unauthenticated by design; the echoed identifier is its only proof
            raise ProtocolError("ntp", "server sent an NTS NAK (kiss code NTSN): it did not accept our cookie")
        raise NotAnAnswer(f"unauthenticated kiss-o'-death reply (kiss code {kiss!r})")
    if len(auths) != 1:
        raise NotAnAnswer(
            "NTP reply is not authenticated (no Authenticator field)"
            if not auths
            else "NTP reply has more than one Authenticator field"
        )
    offset, body = auths[0]
    try:
        plaintext = open_authenticator(s2c, packet, offset, body)
    except ProtocolError as e:
        raise NotAnAnswer(str(e))
    cookies = [b for t, _, b in parse_efs(plaintext, 0) if t == EF_COOKIE] if plaintext else []
    if kiss is not None:
        raise ProtocolError("ntp", f"server sent kiss code {kiss!r}")
    return NtpReply(
        leap, version, stratum, refid, from_ntp_time(packet[32:40]), from_ntp_time(packet[40:48]), t4, cookies
    )


def ntp_exchange(
    host: str, port: int, c2s: bytes, s2c: bytes, cookie: bytes, timeout: float, placeholders: int = 0
) -> tuple[NtpRequest, NtpReply]:
    """One authenticated NTP exchange. Datagrams that do not answer the request (from another
    address or port, not echoing it, not authentic, unparsable) are discarded and the wait goes on
    until `timeout`, as RFC 8915 asks; the timeout message says what was discarded, so a server
    that answers wrongly is still told apart from one that does not answer."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as e:
        raise ProtocolError("ntp", f"cannot resolve NTP server {host}: {e.strerror}")
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.connect(addr)  # only datagrams from the server's address and port are delivered
        request = build_ntp_request(c2s, cookie, placeholders)
        deadline = time.monotonic() + timeout
        sock.send(request.packet)
        ignored, last = 0, ""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                seen = f" (discarded {ignored} datagram(s) that did not answer it; the last: {last})" if ignored else ""
                raise ProtocolError("ntp", f"no NTP reply from {fmt_addr(addr)} within {timeout:g} s{seen}")
            sock.settimeout(left)
            try:
                packet = sock.recv(4096)
            except TimeoutError:
                continue
            except ConnectionRefusedError:
                raise ProtocolError("ntp", f"NTP port {fmt_addr(addr)} refused the request (nothing listens there)")
            except OSError as e:
                raise ProtocolError("ntp", f"NTP exchange with {fmt_addr(addr)} failed: {e.strerror or e}")
            try:
                return request, parse_ntp_reply(packet, request, s2c, time.time())
            except NotAnAnswer as e:
                ignored, last = ignored + 1, str(e)
