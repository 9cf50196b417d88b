"""Checks of single deploy settings, shared by deploy.toml and the command-line flags: each
raises a one-line NtspkiError with exit status 2 (a usage error: nothing was changed yet)."""

from __future__ import annotations

import math
from pathlib import Path

from ntspki.errors import NtspkiError


def parse_mode(value, what: str) -> int:
    """'0640', '640', 0o640 or 416 -> 0o640; refuses anything that is not a plain permission mode."""
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    elif isinstance(value, str):
        try:
            mode = int(value, 8)
        except ValueError:
            raise NtspkiError(f"{what}: {value!r} is not an octal mode like 0640", 2)
    else:
        raise NtspkiError(f"{what}: {value!r} is not an octal mode like 0640", 2)
    if not 0 <= mode <= 0o777:
        raise NtspkiError(f"{what}: {value!r} is not a permission mode (0000..0777)", 2)
    return mode


MAX_PROBE_TIMEOUT = 3600.0  # an hour: a server that has not served the new pair by then will not
MAX_TARGET_NAME = 200  # leaves room for ".crt" and a temp-file prefix inside NAME_MAX (255)


def check_target_name(name) -> str:
    """A target name is also a file name (NAME.crt, NAME.key in the service's directory): it must
    stay one, inside that directory."""
    if not isinstance(name, str) or not name:
        raise NtspkiError(f"target name {name!r}: must not be empty", 2)
    bad = next((c for c in name if c in "/\0" or not c.isprintable()), None)
    if bad is not None or name in (".", "..") or name.startswith("."):
        raise NtspkiError(
            f"target name {name!r}: not usable as a file name (no '/', control characters, or leading '.')", 2
        )
    if len(name.encode()) > MAX_TARGET_NAME:
        raise NtspkiError(f"target name {name[:40]!r}...: longer than {MAX_TARGET_NAME} bytes", 2)
    return name


def check_probe_timeout(value, what: str = "probe_timeout") -> float:
    """Seconds, finite, in (0, MAX_PROBE_TIMEOUT]: nan, inf or a year would hang a deploy."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NtspkiError(f"{what}: {value!r} is not a number of seconds", 2)
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_PROBE_TIMEOUT:
        raise NtspkiError(f"{what}: {value!r} is not a number of seconds in (0, {MAX_PROBE_TIMEOUT:g}]", 2)
    return seconds


def check_probe(value: str, what: str = "probe") -> str:
    """HOST:PORT as the probe takes it: a host name or address and a port in 1-65535."""
    from ntspki.nts.probe import parse_target

    try:
        parse_target(value)
    except NtspkiError as e:
        raise NtspkiError(f"{what}: {e}", 2)
    return value


def check_readable(path: Path, what: str) -> bytes:
    from ntspki.store import fsutil

    try:
        return fsutil.read_bounded(path, MAX_CA_FILE, what)
    except NtspkiError as e:
        raise NtspkiError(str(e), 2)


MAX_CA_FILE = 4 << 20  # a system CA bundle is ~200 KiB


def check_ca_file(path: Path, where: str) -> None:
    """A trust file must be certificates: checked now, not after the pair was installed."""
    from ntspki import pki

    data = check_readable(path, f"{where}: ca file")
    try:
        pki.load_certs(data, str(path))
    except NtspkiError as e:
        raise NtspkiError(f"{where}: ca: {e}", 2)
