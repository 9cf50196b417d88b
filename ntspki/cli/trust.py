"""`ntspki trust export`."""

from __future__ import annotations

import click

from ntspki.cli import echo_json, get_home


@click.group()
def trust():
    """The roots NTS clients must trust (HOME/ca/trust.pem)."""


@trust.command()
@click.option("--out", type=click.Path(), metavar="FILE", help="Write the trust bundle to FILE (default: stdout).")
@click.option(
    "--chrony-snippet",
    "snippet",
    type=click.Path(),
    metavar="FILE",
    help="Also write a chrony client snippet: ntstrustedcerts and one `server NAME iburst nts` line "
    "per server lineage.",
)
@click.option(
    "--client-path",
    metavar="PATH",
    help="Where clients keep the bundle, for the snippet's ntstrustedcerts line "
    "(default: --out, else /etc/chrony/ntspki-trust.pem).",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@click.pass_context
def export(ctx, out, snippet, client_path, as_json):
    """Export the trust bundle (every root clients must trust now) and a chrony client snippet.

    During a root rollover the bundle holds both roots: give it to every client between
    `ca rollover start` and `ca rollover switch`, and again after `finish`."""
    from ntspki.issuing import trust as trust_mod

    done = trust_mod.export(get_home(ctx), out, snippet, client_path)
    if as_json:
        echo_json(done.to_dict())
        return
    if not out:
        click.echo(done.pem.decode(), nl=False)
        return
    click.echo(f"Trust bundle ({len(done.roots)} root(s)) written to {done.out}")
    if done.snippet_path:
        click.echo(f"chrony snippet ({len(done.servers)} server(s)) written to {done.snippet_path}")
