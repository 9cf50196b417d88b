"""`ntspki probe`: NTS-KE plus one authenticated NTP exchange against each server."""

from __future__ import annotations

import json

import click

from ntspki.cli import Seconds, fail, get_home, progress
from ntspki.nts import NTSKE_PORT

AEAD_NAMES = {15: "AES-SIV-CMAC-256"}


@click.command()
@click.argument("targets", nargs=-1, metavar="HOST[:PORT]...")
@click.option(
    "--from",
    "from_file",
    type=click.Path(dir_okay=False, allow_dash=True),
    metavar="FILE",
    help="Read more targets from FILE (one a line, # comments).",
)
@click.option(
    "--ca",
    "ca_files",
    multiple=True,
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Trust the certificates in FILE (repeatable) instead of the site's trust bundle; the system store "
    "is trusted too unless --trust ca.",
)
@click.option(
    "--trust",
    type=click.Choice(["both", "ca", "system"]),
    default="both",
    show_default=True,
    help="both: the --ca files (default: the site's trust bundle, HOME/ca/trust.pem, else HOME/ca/root.pem) "
    "and the system trust store; "
    "ca: only those files; system: only the system store.",
)
@click.option(
    "--name",
    metavar="NAME",
    help="Check the certificate for NAME instead of the host connected to (a host name needs a "
    "DNS SAN, an address an IP SAN).",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=NTSKE_PORT,
    show_default=True,
    help="NTS-KE port for targets given without one.",
)
@click.option(
    "--timeout",
    type=Seconds(0.1, 300),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="Limit for the NTS-KE exchange and, separately, for the NTP exchange.",
)
@click.option(
    "--expect-fingerprint",
    metavar="SHA256",
    help="Fail unless the served certificate has this SHA-256 fingerprint (hex, colons allowed).",
)
@click.option("--expect-serial", metavar="HEX", help="Fail unless the served certificate has this serial.")
@click.option(
    "--warn-days", type=click.IntRange(0), metavar="N", help="Warn when the served certificate expires within N days."
)
@click.option("--no-ntp", is_flag=True, help="Stop after NTS-KE (skip the NTP exchange).")
@click.option(
    "--concurrency", type=click.IntRange(1, 1024), default=16, show_default=True, help="Servers probed at once."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per server (JSON Lines).")
@click.pass_context
def probe(
    ctx,
    targets,
    from_file,
    ca_files,
    trust,
    name,
    port,
    timeout,
    expect_fingerprint,
    expect_serial,
    warn_days,
    no_ntp,
    concurrency,
    as_json,
):
    """Prove that NTS servers work: NTS-KE over TLS 1.3 with the certificate checked as chrony
    checks it, then one authenticated NTP exchange with a received cookie.

    Trusts the site's roots (HOME/ca/trust.pem, or the --ca files) together with the system store, like a chrony
    client with `ntstrustedcerts ROOT` in certificate set 0; --trust narrows that to one.
    Exits 0 when every server passed, 1 when any failed, 2 on bad usage.
    """
    from ntspki.nts import probe as probe_mod

    targets = list(targets)
    if from_file:
        targets += probe_mod.read_targets(from_file)
    if not targets:
        fail("no server to probe: give HOST[:PORT] or --from FILE", 2)
    for t in targets:
        probe_mod.parse_target(t, port)
    probe_mod.check_expectations(name, expect_fingerprint, expect_serial)
    kw = dict(
        trust=probe_mod.default_trust(ca_files, get_home(ctx), trust).store(),
        name=name,
        timeout=timeout,
        expect_fingerprint=expect_fingerprint,
        expect_serial=expect_serial,
        warn_days=warn_days,
        ntp=not no_ntp,
        default_port=port,
    )
    if len(targets) == 1:
        results = [probe_mod.probe(targets[0], **kw)]
    else:
        with progress(len(targets), "probing") as bar:
            results = probe_mod.probe_many(targets, concurrency=concurrency, progress=lambda r: bar.update(1), **kw)
    if as_json:
        for r in results:
            click.echo(json.dumps(r.to_dict(), default=str))
    elif len(results) == 1:
        _detail(results[0])
    else:
        _table(results)
    return 0 if all(r.ok for r in results) else 1


def _fmt_s(value: float | None, sign: bool = True) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:+.3f} ms" if sign else f"{value * 1000:.3f} ms"


def _detail(r) -> None:
    where = f"{r.host}:{r.port}" if ":" not in r.host else f"[{r.host}]:{r.port}"
    status = "OK" if r.ok else f"FAILED ({r.stage})"
    click.echo(f"{where} (name {r.name}): {status}")
    if r.error:
        click.echo(f"  error:       {r.error}")
    if r.tls_version:
        click.echo(f"  TLS:         {r.tls_version}, ALPN {r.alpn or 'none'}")
    for i, c in enumerate(r.chain):
        label = "certificate:" if i == 0 else "chain:      "
        click.echo(f"  {label} {c['subject']}")
        if i == 0:
            click.echo(f"               names {', '.join(c['sans']) or 'none'}")
            click.echo(f"               serial {c['serial']}")
            click.echo(f"               SHA-256 {c['sha256']}")
            click.echo(f"               expires {c['not_after'][:19]} ({r.days_left} days)")
        else:
            click.echo(f"               expires {c['not_after'][:10]}, issuer {c['issuer']}")
    if r.aead is not None:
        click.echo(
            f"  NTS-KE:      AEAD {r.aead} ({AEAD_NAMES.get(r.aead, '?')}), {r.cookies} cookies, "
            f"NTP at {r.ntp_server} port {r.ntp_port}"
        )
    if r.authenticated:
        click.echo(
            f"  NTP:         authenticated, stratum {r.stratum}, offset {_fmt_s(r.offset_s)}, "
            f"delay {_fmt_s(r.delay_s, False)}, leap {r.leap}, {r.new_cookies} new cookie(s)"
        )
    for w in r.warnings:
        click.echo(f"  warning:     {w}")


def _table(results) -> None:
    rows = [("TARGET", "RESULT", "STRATUM", "OFFSET", "DELAY", "EXPIRES", "DETAIL")]
    for r in results:
        expires = f"{r.days_left}d" if r.days_left is not None else "-"
        detail = r.error or "; ".join(r.warnings) or f"{r.tls_version}, {r.cookies} cookies"
        rows.append(
            (
                r.target,
                "ok" if r.ok else "FAIL",
                "-" if r.stratum is None else str(r.stratum),
                _fmt_s(r.offset_s),
                _fmt_s(r.delay_s, False),
                expires,
                detail,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[6])
    failed = sum(not r.ok for r in results)
    click.echo(f"{len(results) - failed} of {len(results)} servers passed")
