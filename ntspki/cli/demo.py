"""`ntspki demo`: the first command a newcomer runs."""

from __future__ import annotations

from dataclasses import asdict

import click

from ntspki.cli import echo_json

# Commands the README's "Typical use" runs as typed (tests/test_readme.py checks they are there).
OWN_SITE_HINT = (
    "ntspki ca create --passphrase-file /root/ntspki.pass; "
    "ntspki issue ntpserver --san ntpserver-ipv6 --san 192.0.2.123; "
    "ntspki deploy --lineage ntpserver"
)


@click.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default="./demo",
    show_default=True,
    help="Where the demo CA, certificate and chronyd files go.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def demo(ctx, directory, as_json):
    """Make a demo CA and a certificate for ntpserver (SANs ntpserver-ipv6, 127.0.0.1), serve it
    with a real chronyd on loopback and synchronise a real chrony NTS client against it."""
    from ntspki import demo as demo_mod

    result = demo_mod.run(directory, say=(lambda _: None) if as_json else click.echo)
    if as_json:
        echo_json({**asdict(result), "ok": result.ok})
    else:
        click.echo("")
        click.echo("RESULT: " + ("every client synchronised over NTS" if result.ok else "FAILED (see above)"))
        click.echo("\nchrony.conf on the server (`ntspki deploy` installs the pair there, owner and modes right):")
        for line in result.server_conf:
            click.echo(f"  {line}")
        click.echo("chrony.conf on each client:")
        for line in result.client_conf:
            click.echo(f"  {line}")
        click.echo(f'\nFor your own site (after `make install`; README "Typical use"): {OWN_SITE_HINT}')
    ctx.exit(0 if result.ok else 1)
