"""`ntspki check`: audit chrony's NTS setup (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)."""

from __future__ import annotations

import click

from ntspki.cli import Seconds, echo_json, get_home

MARK = {"ok": "ok", "info": "info", "warning": "WARNING", "critical": "CRITICAL", "unknown": "UNKNOWN"}


class UnknownUsage(click.UsageError):
    exit_code = 3


class MonitoringCommand(click.Command):
    """check is a monitoring plugin: a usage error is UNKNOWN (3), never 2, which means CRITICAL."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            raise UnknownUsage(e.message, e.ctx) from e


@click.command(cls=MonitoringCommand)
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
    help="Verify chains against FILE (repeatable) instead of the site's trust bundle; the system store is "
    "trusted too unless --trust ca.",
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
    type=Seconds(0.1, 300),
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
@click.pass_context
def check(
    ctx, conf, ca_files, trust, trust_bundle, user, warn_days, critical_days, do_probe, timeout, verbose, as_json, prom
):
    """Audit chrony's NTS server and client configuration: certificate chains, keys, permissions as
    chronyd's user sees them, ntsdumpdir, unauthenticated or too few sources, ntstrustedcerts files,
    chronyd's own parser as a second opinion, and (with --probe) what is served.

    Exits 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (monitoring plugin convention; a usage error or an
    unreadable input is UNKNOWN).
    """
    from ntspki.audit import check as check_mod

    report = check_mod.check(
        conf,
        ca_files=ca_files,
        home=get_home(ctx),
        trust=trust,
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
    click.echo(f"  {report.role}")
    for f in report.findings:
        if f.severity in ("ok", "info") and not verbose:
            continue
        click.echo(f"  [{MARK[f.severity]}] {f.code}: {f.message}")
        if f.where and f.severity not in ("ok", "info"):
            click.echo(f"      in {f.where}")
        if f.hint and f.severity not in ("ok", "info"):
            click.echo(f"      fix: {f.hint}")
    return report.exit_code
