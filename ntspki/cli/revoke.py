"""`ntspki revoke`, `ntspki crl`."""

from __future__ import annotations

import click

from ntspki.cli import echo_json, get_home


@click.command()
@click.argument("name", required=False)
@click.option("--serial", metavar="HEX", help="Revoke the certificate with this serial (any version in the ledger).")
@click.option(
    "--reason",
    default="unspecified",
    show_default=True,
    metavar="REASON",
    help="unspecified, key-compromise, affiliation-changed, superseded, cessation-of-operation or privilege-withdrawn.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def revoke(ctx, name, serial, reason, as_json):
    """Revoke lineage NAME's current certificate (or --serial HEX) and rewrite HOME/ca/crl.pem.

    NTS clients do not fetch CRLs: after a key leak, re-issue with a new key and deploy
    (`ntspki renew NAME` does both for a revoked lineage)."""
    from ntspki.issuing import revocation

    done = revocation.revoke(get_home(ctx), name, serial, reason)
    if as_json:
        echo_json(done.to_dict())
        return
    what = f"{done.name} version {done.version}" if done.name else "certificate"
    verb = "was already revoked" if done.already else "revoked"
    click.echo(f"{what} (serial {done.serial}) {verb} on {done.revoked_at[:10]} ({done.reason}); CRL: {done.crl}")
    click.echo(done.advice)


@click.command()
@click.option(
    "--days", type=int, default=7, show_default=True, help="nextUpdate: days until the CRL must be re-signed."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def crl(ctx, days, as_json):
    """Sign fresh CRLs into HOME/ca/crl.pem (run it from a timer: each has a nextUpdate)."""
    from ntspki.issuing import revocation

    home = get_home(ctx)
    revocation.write_crl(home, days)
    st = revocation.crl_status(home) or {"path": str(revocation.crl_path(home)), "crls": []}
    if as_json:
        echo_json(st)
        return
    for c in st["crls"]:
        click.echo(
            f"{st['path']}: CRL #{c['number']} of {c['issuer']}, {len(c['revoked'])} revoked, "
            f"next update {c['next_update'][:16]}"
        )
