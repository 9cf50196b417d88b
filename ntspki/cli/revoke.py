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
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False),
    help="The root key passphrase, for revoking a retired intermediate (else $NTSPKI_PASSPHRASE, else a prompt).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def revoke(ctx, name, serial, reason, passphrase_file, as_json):
    """Revoke lineage NAME's current certificate (or --serial HEX) and rewrite HOME/ca/crl.pem.

    The serial of a retired intermediate revokes it in HOME/ca/arl.pem, signed by the root.
    NTS clients do not fetch CRLs: after a key leak, re-issue with a new key and deploy
    (`ntspki renew NAME` does both for a revoked lineage)."""
    from ntspki.issuing import ca as ca_mod
    from ntspki.issuing import revocation

    home = get_home(ctx)
    passphrase = None
    if passphrase_file:
        from ntspki.cli.ca import read_passphrase

        read_passphrase(passphrase_file, confirm=False)  # given, so it must be usable before anything
    if serial is not None and name is None and revocation.needs_root_key(home, serial):
        if ca_mod.root_key_encrypted(home):
            from ntspki.cli.ca import read_passphrase

            passphrase = read_passphrase(passphrase_file, confirm=False)
    done = revocation.revoke(home, name, serial, reason, passphrase=passphrase)
    if as_json:
        echo_json(done.to_dict())
        return
    what = f"{done.name} version {done.version}" if done.name else "certificate"
    verb = "was already revoked" if done.already else "revoked"
    click.echo(f"{what} (serial {done.serial}) {verb} on {done.revoked_at[:10]} ({done.reason}); CRL: {done.crl}")
    click.echo(done.advice)


@click.command()
@click.option(
    "--days",
    type=click.IntRange(1, 3650),
    default=7,
    show_default=True,
    help="nextUpdate: days until the CRL must be re-signed.",
)
@click.option(
    "--arl",
    is_flag=True,
    help="Also re-sign the root's CRL of intermediates (HOME/ca/arl.pem; needs the root passphrase).",
)
@click.option(
    "--arl-days",
    type=click.IntRange(1, 3650),
    default=365,
    show_default=True,
    help="nextUpdate of the root's CRL, in days.",
)
@click.option("--passphrase-file", type=click.Path(dir_okay=False), help="The root key passphrase (with --arl).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def crl(ctx, days, arl, arl_days, passphrase_file, as_json):
    """Sign fresh CRLs into HOME/ca/crl.pem (run it from a timer: each has a nextUpdate)."""
    from ntspki.issuing import ca as ca_mod
    from ntspki.issuing import revocation

    home = get_home(ctx)
    revocation.check_days(days, arl_days)
    passphrase = None
    if arl:
        ca_mod.load(home)  # no CA: say so before asking for a passphrase
        if ca_mod.root_key_encrypted(home):
            from ntspki.cli.ca import read_passphrase

            passphrase = read_passphrase(passphrase_file, confirm=False)
    if passphrase_file and passphrase is None:
        from ntspki.cli.ca import read_passphrase

        read_passphrase(passphrase_file, confirm=False)  # given, so it must be usable before anything
    revocation.write_crl(home, days, arl, passphrase, arl_days)
    st = revocation.crl_status(home) or {"path": str(revocation.crl_path(home)), "crls": []}
    if as_json:
        echo_json(st)
        return
    for c in st["crls"]:
        click.echo(
            f"{c['file']}: CRL #{c['number']} of {c['issuer']}, {len(c['revoked'])} revoked, "
            f"next update {c['next_update'][:16]}"
        )
