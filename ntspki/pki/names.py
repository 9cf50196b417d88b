"""Host names and IP literals as they go into a certificate's subjectAltName.

chrony (through GnuTLS) matches a server configured by name against DNS SANs only, and one
configured by address against IP SANs only, so every value is classified once, here.
"""

from __future__ import annotations

import functools
import ipaddress
import re

from cryptography import x509

from ntspki.errors import NtspkiError

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class BadName(NtspkiError):
    exit_code = 2


def parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address for an IPv4/IPv6 literal (IPv6 may be in brackets), else None."""
    text = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    if "%" in text:  # a zone index only means something on this host
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


# Invisible and control characters: IDNA either refuses them or (soft hyphen, word joiner, BOM,
# variation selectors) maps them to nothing. A name must never change silently, so both are errors.
_INVISIBLE = {"Cc", "Cf", "Co", "Cs", "Cn", "Zs", "Zl", "Zp"}


def _check_chars(label: str, whole: str) -> None:
    import unicodedata

    import idna

    for ch in label:
        if ch.isascii():
            continue
        what = f"U+{ord(ch):04X} ({unicodedata.name(ch, 'unnamed')})"
        if unicodedata.category(ch) in _INVISIBLE:
            raise BadName(f"bad host name {whole!r}: {what} is an invisible or control character IDNA does not allow")
        try:
            mapped = idna.uts46_remap(ch, std3_rules=True, transitional=False)
        except (idna.IDNAError, ValueError):
            raise BadName(f"bad host name {whole!r}: {what} is not allowed in a host name") from None
        if not mapped:
            raise BadName(f"bad host name {whole!r}: {what} is ignored by IDNA (it would be dropped silently)")


def _to_alabel(label: str, whole: str) -> str:
    if label.isascii():
        return label.lower()
    _check_chars(label, whole)
    try:
        import idna  # IDNA 2008 + UTS 46 mapping, as browsers and certbot use

        return idna.encode(label, uts46=True).decode("ascii")
    except Exception:
        raise BadName(f"bad host name {whole!r}: label {label!r} is not a valid internationalised label")


# A batch names each host several times (parsing the list, the lineage, the identity, the
# certificate); the answer for a string never changes and a refusal is not cached (it raises).
@functools.lru_cache(maxsize=8192)
def normalize_dns_name(value: str) -> str:
    """RFC 1123 host name (optionally with a whole left-most `*` label), lower-case A-labels."""
    whole = value
    name = value.strip()
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise BadName(f"bad host name {whole!r}: empty")
    labels = [_to_alabel(label, whole) for label in name.split(".")]
    for i, label in enumerate(labels):
        if label == "*" and i == 0:
            if len(labels) < 3:
                raise BadName(f"bad host name {whole!r}: a wildcard needs at least two labels after it")
            continue
        if "*" in label:
            raise BadName(f"bad host name {whole!r}: a wildcard may only be the whole left-most label")
        if not label:
            raise BadName(f"bad host name {whole!r}: empty label")
        if len(label) > 63:
            raise BadName(f"bad host name {whole!r}: label longer than 63 characters")
        if not _LABEL.match(label):
            raise BadName(f"bad host name {whole!r}: label {label!r} may hold only letters, digits and inner hyphens")
        if label[2:4] == "--" and not label.startswith("xn--"):
            raise BadName(f"bad host name {whole!r}: label {label!r} has '--' in positions 3-4")
        if label.startswith("xn--"):
            try:
                import idna

                idna.decode(label)
            except Exception:
                raise BadName(f"bad host name {whole!r}: label {label!r} is not valid punycode")
    if labels[-1].isdigit():
        raise BadName(f"bad host name {whole!r}: the last label is numeric (not an IP address either)")
    out = ".".join(labels)
    if len(out) > 253:
        raise BadName(f"bad host name {whole!r}: longer than 253 characters")
    return out


@functools.lru_cache(maxsize=8192)
def parse_san(value: str) -> x509.GeneralName:
    """An IP literal becomes an IP SAN, anything else a validated DNS SAN."""
    ip = parse_ip(value.strip())
    if ip is not None:
        return x509.IPAddress(ip)
    return x509.DNSName(normalize_dns_name(value))


def san_text(general_name: x509.GeneralName) -> str:
    """The plain text of a DNS or IP SAN, as users type it."""
    return str(general_name.value)


def unique_sans(values: list[str]) -> list[x509.GeneralName]:
    """Parse in order, dropping repeats (first occurrence wins)."""
    seen: set = set()
    out: list[x509.GeneralName] = []
    for value in values:
        gn = parse_san(value)
        if gn not in seen:
            seen.add(gn)
            out.append(gn)
    return out


def is_ip(value: str) -> bool:
    return parse_ip(value) is not None
