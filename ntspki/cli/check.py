"""`ntspki check`: audit chrony's NTS setup (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)."""

from __future__ import annotations

import click

from ntspki.cli import echo_json

MARK = {"ok": "ok", "info": "info", "warning": "WARNING", "critical": "CRITICAL", "unknown": "UNKNOWN"}


@click.command()
@click.option(
    "--chrony-conf",
    "conf",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="chrony.conf to audit (include/confdir/sourcedir followed). "
    "Default: /etc/chrony/chrony.conf, else /etc/chrony.conf.",
)
@click.option(
    "--ca",
    "ca_files",
    multiple=True,
    type=click.Path(),
    metavar="FILE",
    help="Verify served chains against FILE (repeatable). Default: the system trust store.",
)
@click.option(
    "--trust-bundle",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Warn when the client's ntstrustedcerts lacks a root of FILE (ntspki trust export; for root rollovers).",
)
@click.option(
    "--user", metavar="USER", help="chronyd's run user. Default: the `user` directive, else _chrony or chrony."
)
@click.option(
    "--warn-days",
    type=click.IntRange(0),
    default=21,
    show_default=True,
    help="WARNING when a certificate expires within this many days.",
)
@click.option(
    "--critical-days",
    type=click.IntRange(0),
    default=7,
    show_default=True,
    help="CRITICAL when a certificate expires within this many days.",
)
@click.option(
    "--probe",
    "do_probe",
    is_flag=True,
    help="Also probe the local NTS-KE port (and each NTS source) and compare the served "
    "certificate with the one on disk.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 300),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="Limit for each probe step.",
)
@click.option("--verbose", "-v", is_flag=True, help="Also list the checks that passed.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--prometheus",
    "prom",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Also write node_exporter textfile metrics to FILE (atomically).",
)
def check(conf, ca_files, trust_bundle, user, warn_days, critical_days, do_probe, timeout, verbose, as_json, prom):
    """Audit chrony's NTS server and client configuration: certificate chains, keys, permissions as
    chronyd's user sees them, ntsdumpdir, trust for NTS sources and (with --probe) what is served.

    Exits 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (monitoring plugin convention).
    """
    from ntspki.audit import check as check_mod

    report = check_mod.check(
        conf,
        ca_files=ca_files,
        user=user,
        warn_days=warn_days,
        critical_days=critical_days,
        probe=do_probe,
        timeout=timeout,
        trust_bundle=trust_bundle,
    )
    if prom:
        check_mod.write_prometheus(report, prom)
    if as_json:
        echo_json(report.to_dict())
        return report.exit_code
    counts = report.counts()
    click.echo(
        f"{report.status}: {counts['critical']} critical, {counts['warning']} warning(s), "
        f"{counts['unknown']} unknown; {report.conf} as {report.user}"
    )
    for f in report.findings:
        if f.severity in ("ok", "info") and not verbose:
            continue
        click.echo(f"  [{MARK[f.severity]}] {f.code}: {f.message}")
        if f.where and f.severity not in ("ok", "info"):
            click.echo(f"      in {f.where}")
        if f.hint and f.severity not in ("ok", "info"):
            click.echo(f"      fix: {f.hint}")
    return report.exit_code
