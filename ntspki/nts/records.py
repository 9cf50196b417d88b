"""NTS-KE records (RFC 8915 section 4): the protocol's constants, the record codec, the request
this client sends and the rules a response must follow. Pure bytes in, bytes out: no sockets, no
TLS (the TLS client is `keclient`, NTP over NTS is `ntp`; `ntske` gathers all three).

Everything a server sends is untrusted: every malformed input becomes a `ProtocolError` with a
one-line message saying what was wrong.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

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
# Records whose critical bit RFC 8915 requires in a response (type -> section). Error and Warning
# require it too, but end the exchange whatever their bit says.
MUST_BE_CRITICAL = {END_OF_MESSAGE: "4.1.1", NEXT_PROTOCOL: "4.1.2"}

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
        if rec.type in MUST_BE_CRITICAL and not rec.critical:
            raise ProtocolError(
                "ntske",
                f"server's {name} record does not have the critical bit set, which RFC 8915 "
                f"(section {MUST_BE_CRITICAL[rec.type]}) requires: not a conforming NTS-KE server",
            )
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


def fmt_addr(addr) -> str:
    """A socket address as HOST:PORT ([HOST]:PORT for IPv6), for messages."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
