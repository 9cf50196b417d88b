"""`ntspki migrate`: an ntpd/NTPsec configuration (autokey or not) as chrony with NTS."""

from __future__ import annotations

import click

from ntspki.cli import Seconds, echo_json

FATE_MARK = {"translated": "ok", "obsolete": "obsolete", "manual": "MANUAL"}


@click.command()
@click.argument("ntp_conf", type=click.Path(dir_okay=False), metavar="NTP.CONF")
@click.option("--probe", "do_probe", is_flag=True, help="Give `nts` only to upstreams that really answer NTS-KE.")
@click.option(
    "--ca",
    "ca_files",
    multiple=True,
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="With --probe: also trust FILE (repeatable; the system store is always used).",
)
@click.option(
    "--timeout",
    type=Seconds(0.1, 60),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="Limit for each probe step.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Write DIR/chrony.conf (and DIR/ntspki-commands.sh when certificates are needed) instead of "
    "printing the configuration.",
)
@click.option("--hostname", metavar="NAME", help="This host's name for its certificate (default: its FQDN).")
@click.option("--json", "as_json", is_flag=True, help="Print the migration as JSON.")
def migrate(ntp_conf, do_probe, ca_files, timeout, out_dir, hostname, as_json):
    """Translate an ntpd or NTPsec configuration (server/pool/peer, autokey, crypto, keysdir, restrict,
    driftfile, includefile, NTPsec's nts) into chrony.conf with NTS.

    Upstreams become `server NAME iburst nts` (with --probe only those that answer NTS-KE), restrict
    lines become allow/deny, a host that served autokey or NTS gets ntsserverkey/ntsservercert/ntsdumpdir
    and the ntspki commands that make its certificate. Every input line is accounted for: translated,
    obsolete (autokey material NTS replaces) or MANUAL (no equivalent: listed, never dropped).
    """
    from ntspki.audit import migrate as migrate_mod

    if hostname is not None:
        from ntspki.pki import names

        names.normalize_dns_name(hostname)  # a one-line BadName (exit 2) before anything is read
    m = migrate_mod.migrate(ntp_conf, probe=do_probe, ca_files=ca_files, timeout=timeout, hostname=hostname)
    written = migrate_mod.write_out(m, out_dir) if out_dir else []
    if as_json:
        echo_json({**m.to_dict(), "written": [str(p) for p in written]})
        return
    click.echo(f"{m.source}: {len(m.fates)} directive(s) from {len(m.files)} file(s)")
    for f in m.fates:
        to = f" -> {'; '.join(f.chrony)}" if f.chrony else ""
        why = f"  ({f.why})" if f.why else ""
        click.echo(f"  [{FATE_MARK[f.fate]}] {f.where}: {f.directive}{to}{why}")
    nts = [u for u in m.upstreams if u.nts]
    plain = [u for u in m.upstreams if not u.nts]
    click.echo(f"NTS upstreams: {', '.join(u.host for u in nts) or 'none'}")
    if plain:
        click.echo("without NTS:")
        for u in plain:
            click.echo(f"  {u.kind} {u.host}: {u.why}")
    if m.obsolete_files:
        click.echo("obsolete autokey material (remove once chrony serves NTS):")
        for path in m.obsolete_files:
            click.echo(f"  {path}")
    for note in m.notes:
        click.echo(f"note: {note}")
    if m.commands:
        click.echo("then run:")
        for command in m.commands:
            click.echo(f"  {command}")
    if written:
        click.echo("wrote " + ", ".join(str(p) for p in written))
    else:
        click.echo("---- chrony.conf ----")
        click.echo(m.chrony_conf, nl=False)
