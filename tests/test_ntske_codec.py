"""Property tests of the NTS-KE record codec and response interpretation (RFC 8915 section 4), and
of the NTP extension-field codec: whatever bytes a server sends, the parser answers with records
or a ProtocolError naming what was wrong, never another exception."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from ntspki.nts import ntske

record_types = st.integers(min_value=0, max_value=0x7FFF)
bodies = st.binary(max_size=300)
records = st.builds(ntske.Record, record_types, bodies, st.booleans())


@given(st.lists(records, max_size=20))
def test_records_round_trip(recs):
    wire = b"".join(ntske.encode_record(r.type, r.body, r.critical) for r in recs)
    parsed, rest = ntske.parse_records(wire)
    assert rest == b""
    assert parsed == recs


@given(st.lists(records, min_size=1, max_size=10), st.data())
def test_a_cut_stream_yields_the_complete_records_and_keeps_the_rest(recs, data):
    wire = b"".join(ntske.encode_record(r.type, r.body, r.critical) for r in recs)
    cut = data.draw(st.integers(min_value=0, max_value=len(wire)))
    first, rest = ntske.parse_records(wire[:cut])
    # the records parsed from a prefix are a prefix of the records, and the rest completes them
    assert first == recs[: len(first)]
    more, tail = ntske.parse_records(rest + wire[cut:])
    assert tail == b""
    assert first + more == recs


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_break_the_parser(data):
    parsed, rest = ntske.parse_records(data)
    assert len(rest) <= len(data)
    consumed = sum(4 + len(r.body) for r in parsed)
    assert consumed + len(rest) == len(data)


@settings(max_examples=300)
@given(st.lists(records, max_size=12))
def test_any_response_is_accepted_or_refused_with_a_protocol_error(recs):
    try:
        resp = ntske.interpret_response(recs)
    except ntske.ProtocolError as e:
        assert e.stage == "ntske" and str(e)
        return
    # an accepted response is what RFC 8915 requires of one
    assert resp.next_protocols == [ntske.NEXT_PROTOCOL_NTPV4]
    assert resp.aead == ntske.AEAD_AES_SIV_CMAC_256
    assert resp.cookies and all(resp.cookies)


def _good(cookies: int = 2) -> list[ntske.Record]:
    return [
        ntske.Record(ntske.NEXT_PROTOCOL, ntske.u16(ntske.NEXT_PROTOCOL_NTPV4), True),
        ntske.Record(ntske.AEAD, ntske.u16(ntske.AEAD_AES_SIV_CMAC_256), True),
        *[ntske.Record(ntske.NEW_COOKIE, bytes([i + 1]) * 100) for i in range(cookies)],
        ntske.Record(ntske.END_OF_MESSAGE, b"", True),
    ]


@given(st.integers(min_value=1, max_value=8), st.sampled_from([ntske.SERVER, ntske.PORT]))
def test_a_well_formed_response_is_accepted_and_a_duplicate_refused(cookies, dup_type):
    resp = ntske.interpret_response(_good(cookies))
    assert len(resp.cookies) == cookies
    body = b"ntp.example" if dup_type == ntske.SERVER else struct.pack("!H", 123)
    twice = [ntske.Record(dup_type, body), ntske.Record(dup_type, body), *_good(cookies)]
    try:
        ntske.interpret_response(twice)
    except ntske.ProtocolError as e:
        assert "more than one" in str(e)
    else:
        raise AssertionError("a duplicated record was accepted")


@given(st.lists(st.tuples(st.integers(min_value=0, max_value=0xFFFF), st.binary(max_size=64)), max_size=8))
def test_extension_fields_round_trip(fields):
    packet = b"\x23" + bytes(ntske.NTP_HEADER - 1)
    for ftype, body in fields:
        packet += ntske.encode_ef(ftype, body)
    parsed = ntske.parse_efs(packet)
    assert [(t, b[: len(body)]) for (t, _, b), (_, body) in zip(parsed, fields)] == [(t, body) for t, body in fields]


@given(st.binary(max_size=600))
def test_arbitrary_extension_fields_parse_or_fail_as_a_protocol_error(tail):
    packet = bytes(ntske.NTP_HEADER) + tail
    try:
        parsed = ntske.parse_efs(packet)
    except ntske.ProtocolError as e:
        assert e.stage == "ntp"
        return
    assert all(len(body) + 4 <= len(tail) for _, _, body in parsed)
