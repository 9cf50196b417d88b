"""Is the server serving it? The probe a deploy runs after a restart (and before deciding that
an unchanged pair needs nothing)."""

from __future__ import annotations

import time

from ntspki.deploy.deployconfig import Target


def check_served(
    target: Target, fingerprint: str, name: str, timeout: float, verify: bool = True
) -> tuple[bool, str | None, str]:
    """Probe until the server serves `fingerprint` or `timeout` passes: (ok, served sha256, detail).
    verify=False only pins the fingerprint: for a restored pair, whose chain and names may not
    be what the target now asks for, but which is exactly what was served before."""
    deadline = time.monotonic() + timeout
    while True:
        attempt = min(3.0, max(0.5, deadline - time.monotonic()))
        if verify:
            ok, served, detail = _probe_once(target, fingerprint, name, attempt)
        else:
            ok, served, detail = _pinned_once(target, fingerprint, name, attempt)
        if ok or time.monotonic() >= deadline:
            return ok, served, detail
        time.sleep(0.1)


def _pinned_once(target: Target, fingerprint: str, name: str, timeout: float) -> tuple[bool, str | None, str]:
    from ntspki.nts.ntske import ProtocolError
    from ntspki.nts.probe import parse_target, served_fingerprint

    assert target.probe is not None  # only called for targets that probe
    host, port = parse_target(target.probe)
    try:
        served = served_fingerprint(host, port, name, timeout)
    except ProtocolError as e:
        return False, None, f"no TLS handshake with {target.probe}: {e}"
    if served != fingerprint:
        return False, served, f"serves sha256 {served}, not {fingerprint}"
    return True, served, "served"


def _probe_once(target: Target, fingerprint: str, name: str, timeout: float = 3.0) -> tuple[bool, str | None, str]:
    """`ntspki probe` up to NTS-KE: chain and name checked, this fingerprint expected.
    (passed, sha256 of the served leaf or None, what was seen)."""
    from ntspki.nts.probe import probe

    assert target.probe is not None  # only called for targets that probe
    res = probe(
        target.probe,
        ca_files=tuple(str(c) for c in target.ca),
        name=name,
        timeout=timeout,
        expect_fingerprint=fingerprint,
        ntp=False,
    )
    served = res.chain[0].get("sha256") if res.chain else None
    return res.ok, served, "served" if res.ok else (res.error or "probe failed")
