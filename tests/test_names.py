"""Property tests for the names that go into a certificate's subjectAltName (ntspki.pki.names).

chrony matches a server given by name against DNS SANs and one given by address against IP SANs
only, so the split and the validation here decide whether a certificate works at all."""

from __future__ import annotations

import ipaddress
import string

import idna
import pytest
from cryptography import x509
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from ntspki.errors import NtspkiError
from ntspki.pki import names
from ntspki.pki.names import BadName

LDH = string.ascii_lowercase + string.digits + "-"


@st.composite
def ldh_label(draw, min_size=1, max_size=63):
    """An RFC 1123 label: letters, digits, inner hyphens; no '--' in positions 3-4 (IDNA's mark)."""
    size = draw(st.integers(min_size, max_size))
    inner = draw(st.text(LDH, min_size=max(size - 2, 0), max_size=max(size - 2, 0))) if size > 2 else ""
    ends = string.ascii_lowercase + string.digits
    label = draw(st.sampled_from(ends)) + inner + (draw(st.sampled_from(ends)) if size > 1 else "")
    assume(label[2:4] != "--")
    return label


@st.composite
def host_name(draw, max_labels=6):
    """A valid host name, lower-case: the last label has a letter (an all-digit one reads as an IP)."""
    labels = draw(st.lists(ldh_label(max_size=20), min_size=0, max_size=max_labels - 1))
    last = draw(ldh_label(max_size=20))
    assume(not last.isdigit())
    return ".".join([*labels, last])


def random_case(draw, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if f else c for c, f in zip(text, flips))


# ---- valid names ---------------------------------------------------------------------------------


@given(host_name())
def test_valid_name_round_trips(name):
    assert names.normalize_dns_name(name) == name
    assert names.parse_san(name) == x509.DNSName(name)
    assert not names.is_ip(name)


@given(st.data(), host_name())
def test_case_and_trailing_dot_normalise(data, name):
    typed = random_case(data.draw, name) + data.draw(st.sampled_from(["", "."]))
    assert names.normalize_dns_name(typed) == name
    assert names.normalize_dns_name(names.normalize_dns_name(typed)) == name  # idempotent
    assert names.unique_sans([name, typed]) == [x509.DNSName(name)]  # the same name once


ACCENTED = "äöüéèñçåøßœ" + string.ascii_lowercase


@given(st.lists(st.text(ACCENTED, min_size=1, max_size=12), min_size=1, max_size=3), host_name(max_labels=2))
@example(["bücher"], "example")
@example(["ntp"], "zürich")
def test_idn_becomes_a_labels(unicode_labels, tail):
    typed = ".".join([*unicode_labels, tail])
    try:
        expected = idna.encode(typed, uts46=True).decode("ascii")
    except idna.IDNAError:
        with pytest.raises(BadName):
            names.normalize_dns_name(typed)
        return
    assume(len(expected) <= 253)
    out = names.normalize_dns_name(typed)
    assert out.isascii()
    assert out == expected
    for label, original in zip(out.split("."), typed.split(".")):
        assert label.startswith("xn--") == (not original.isascii())
    assert idna.decode(out) == idna.decode(expected)  # the A-labels decode back to the same U-labels


def test_idn_known_values():
    assert names.normalize_dns_name("Bücher.Example") == "xn--bcher-kva.example"
    assert names.parse_san("ntp.zürich.example") == x509.DNSName("ntp.xn--zrich-kva.example")
    assert names.normalize_dns_name("xn--bcher-kva.example") == "xn--bcher-kva.example"


@pytest.mark.parametrize("bad", ["xn--zz.example", "xn--.example"])
def test_bad_punycode_is_refused(bad):
    with pytest.raises(BadName, match="punycode|label"):
        names.normalize_dns_name(bad)


# ---- wildcards -----------------------------------------------------------------------------------


@given(host_name())
def test_wildcard_only_as_whole_left_most_label(name):
    assume(name.count(".") >= 1)  # a wildcard needs at least two labels after it
    assert names.parse_san(f"*.{name}") == x509.DNSName(f"*.{name}")


@given(st.data(), host_name(), st.sampled_from(["*{}", "{}*", "f*{}"]))
def test_wildcard_elsewhere_is_refused(data, name, shape):
    labels = name.split(".")
    where = data.draw(st.integers(0, len(labels) - 1))
    assume(not (where == 0 and shape == "*{}" and labels[0] == ""))
    labels[where] = shape.format(labels[where])
    with pytest.raises(BadName, match="wildcard|label"):
        names.normalize_dns_name(".".join(labels))


@pytest.mark.parametrize(
    "bad",
    [
        "*",
        "*.example",
        "a.*.example.net",
        "**.example.net",
        "*.*.example.net",
        "w*.example.net",
        "*w.example.net",
        "example.*",
    ],
)
def test_wildcard_examples(bad):
    with pytest.raises(BadName) as e:
        names.parse_san(bad)
    assert repr(bad) in str(e.value)  # the message names the bad value


# ---- lengths -------------------------------------------------------------------------------------


@given(st.integers(1, 63))
def test_label_up_to_63(n):
    name = "a" * n + ".example"
    assert names.normalize_dns_name(name) == name


@given(st.integers(64, 200))
def test_label_over_63_is_refused(n):
    with pytest.raises(BadName, match="63"):
        names.normalize_dns_name("a" * n + ".example")


def _name_of_length(n: int) -> str:
    """Labels of 50, dots between, exactly n characters, last label alphabetic."""
    labels, left = [], n
    while left > 0:
        size = min(50, left)
        labels.append("b" * size)
        left -= size + 1
    name = ".".join(labels)
    return name[:n]


@given(st.integers(1, 253))
def test_name_up_to_253(n):
    name = _name_of_length(n)
    assume(not name.endswith(".") and len(name) == n)
    assert names.normalize_dns_name(name) == name
    assert names.normalize_dns_name(name + ".") == name  # the root dot does not count


@given(st.integers(254, 400))
def test_name_over_253_is_refused(n):
    name = _name_of_length(n)
    assume(not name.endswith("."))
    with pytest.raises(BadName, match="253"):
        names.normalize_dns_name(name)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        " ",
        ".",
        "a..b",
        ".a.b",
        "-a.example",
        "a-.example",
        "a_b.example",
        "ab--cd.example",
        "host.123",
        "1.2.3.256",
        "192.168.1",
        "a b.example",
        "fe80::1%eth0",
        "[::1",
        "::g",
    ],
)
def test_bad_names_examples(bad):
    with pytest.raises(BadName):
        names.parse_san(bad)


# ---- IP literals ---------------------------------------------------------------------------------


@given(st.ip_addresses(v=4))
def test_ipv4_literal_becomes_ip_san(ip):
    assert names.parse_san(str(ip)) == x509.IPAddress(ip)
    assert names.is_ip(str(ip))


@given(st.ip_addresses(v=6), st.sampled_from(["compressed", "exploded"]), st.booleans(), st.booleans())
def test_ipv6_literal_becomes_ip_san(ip, form, upper, brackets):
    text = getattr(ip, form)
    text = text.upper() if upper else text
    text = f"[{text}]" if brackets else text
    assert names.parse_san(text) == x509.IPAddress(ip)
    assert names.parse_ip(text) == ip


@given(st.ip_addresses())
def test_an_address_is_never_a_dns_san(ip):
    assert not isinstance(names.parse_san(str(ip)), x509.DNSName)


def test_unique_sans_keeps_order_and_drops_repeats():
    got = names.unique_sans(
        ["ntpserver", "ntpserver-ipv6", "127.0.0.1", "::1", "NTPSERVER.", "0:0:0:0:0:0:0:1", "[::1]"]
    )
    assert got == [
        x509.DNSName("ntpserver"),
        x509.DNSName("ntpserver-ipv6"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]


# ---- junk ----------------------------------------------------------------------------------------

JUNK = st.one_of(
    st.text(),
    st.text(string.printable),
    st.text(LDH + ".*:[]%_ \t", max_size=300),
    st.text(st.characters(codec="utf-8"), max_size=80),
)


@settings(max_examples=600)
@given(JUNK)
@example("\x00")
@example("a\u3002b")  # ideographic full stop
@example("a\uff0eb.example")  # full-width full stop: UTS 46 maps it to '.'
@example("\u0661.example")  # Arabic-Indic digit
@example("xn--" + "a" * 70)
@example("[" + "1" * 5000 + "]")
def test_junk_raises_only_bad_name(text):
    for parse in (names.parse_san, names.normalize_dns_name):
        try:
            got = parse(text)
        except BadName as e:
            assert "\n" not in str(e)  # the CLI prints it as one line
            continue
        except NtspkiError:
            continue
        if isinstance(got, x509.IPAddress):
            continue
        value = got.value if isinstance(got, x509.DNSName) else got
        # Whatever is accepted is a clean host name.
        assert value.isascii() and value == value.lower() and len(value) <= 253
        labels = value.split(".")
        assert all(label and len(label) <= 63 for label in labels)
        assert all(set(label) <= set(LDH) for label in labels[1:])
        assert labels[0] == "*" or set(labels[0]) <= set(LDH)
