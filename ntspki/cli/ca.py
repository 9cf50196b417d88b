"""`ntspki ca create|show|intermediate`."""

from __future__ import annotations

import os
import sys

import click

from ntspki.cli import echo_json, fail, get_home
from ntspki.pki.keys import DEFAULT_KEY_TYPE, KEY_TYPES


def read_passphrase(passphrase_file: str | None, confirm: bool) -> bytes:
    """--passphrase-file, else $NTSPKI_PASSPHRASE, else a prompt on a terminal."""
    if passphrase_file:
        try:
            with open(passphrase_file, "rb") as f:
                value = f.read().rstrip(b"\r\n")
        except OSError as e:
            fail(f"cannot read passphrase file {passphrase_file}: {e.strerror}", 2)
    elif os.environ.get("NTSPKI_PASSPHRASE"):
        value = os.environ["NTSPKI_PASSPHRASE"].encode()
    elif sys.stdin.isatty():
        value = click.prompt("Root CA passphrase", hide_input=True, confirmation_prompt=confirm).encode()
    else:
        fail(
            "the root CA key needs a passphrase: give --passphrase-file, set NTSPKI_PASSPHRASE, "
            "or use --no-passphrase (labs only)",
            2,
        )
    if not value:
        fail("the passphrase is empty", 2)
    return value


@click.group()
def ca():
    """Create and inspect the site's root and intermediate CA."""


@ca.command()
@click.option("--key-type", type=click.Choice(KEY_TYPES), default=DEFAULT_KEY_TYPE, show_default=True)
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False),
    help="File holding the root key passphrase (else $NTSPKI_PASSPHRASE, else a prompt).",
)
@click.option("--no-passphrase", is_flag=True, help="Store the root key unencrypted (labs only).")
@click.option("--root-days", type=click.IntRange(1), default=3650, show_default=True)
@click.option("--intermediate-days", type=click.IntRange(1), default=1825, show_default=True)
@click.option(
    "--permit-dns",
    multiple=True,
    metavar="DOMAIN",
    help="Name constraint: the intermediate may only issue for DOMAIN and below (repeatable).",
)
@click.option(
    "--permit-ip", multiple=True, metavar="CIDR", help="Name constraint on IP SANs, e.g. 192.0.2.0/24 (repeatable)."
)
@click.option("--force", is_flag=True, help="Replace an existing CA (the old one is moved aside).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def create(
    ctx, key_type, passphrase_file, no_passphrase, root_days, intermediate_days, permit_dns, permit_ip, force, as_json
):
    """Create a root CA and an intermediate CA that issues server certificates."""
    from ntspki import pki
    from ntspki.issuing import ca as ca_mod

    home = get_home(ctx)
    if no_passphrase and passphrase_file:
        fail("--no-passphrase and --passphrase-file contradict each other", 2)
    dns, ips = ca_mod.name_constraints(permit_dns, permit_ip)
    ca_mod.refuse_overwrite(home, force)  # before asking for a passphrase
    passphrase = None if no_passphrase else read_passphrase(passphrase_file, confirm=True)
    made = ca_mod.create(home, key_type, passphrase, root_days, intermediate_days, dns, ips, force)
    result = {
        "home": str(home.path),
        "root": str(home.ca_dir / "root.pem"),
        "intermediate": str(home.ca_dir / "intermediate.pem"),
        "key_type": key_type,
        "root_encrypted": passphrase is not None,
        "root_sha256": pki.fingerprint(made.root),
        "root_not_after": made.root.not_valid_after_utc.isoformat(),
        "intermediate_not_after": made.intermediate.not_valid_after_utc.isoformat(),
        "permit_dns": dns,
        "permit_ip": ips,
    }
    if as_json:
        echo_json(result)
        return
    click.echo(f"Created a {key_type} root and intermediate CA in {home.ca_dir}")
    click.echo(f"  root:         {result['root']} (until {made.root.not_valid_after_utc:%Y-%m-%d})")
    click.echo(f"  intermediate: {result['intermediate']} (until {made.intermediate.not_valid_after_utc:%Y-%m-%d})")
    click.echo(f"  root SHA-256: {result['root_sha256']}")
    if passphrase is None:
        click.echo("  warning: the root key is NOT encrypted (--no-passphrase)")
    click.echo(f"Clients trust it with:  ntstrustedcerts {result['root']}")


@ca.command()
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def show(ctx, as_json):
    """Show the root and intermediate CA certificates."""
    from dataclasses import asdict

    from ntspki import pki
    from ntspki.issuing import ca as ca_mod

    home = get_home(ctx)
    made = ca_mod.load(home)
    info: dict = {
        "home": str(home.path),
        "root": asdict(pki.CertInfo.of(made.root)),
        "intermediate": asdict(pki.CertInfo.of(made.intermediate)),
    }
    if as_json:
        echo_json(info)
        return
    for label in ("root", "intermediate"):
        c = info[label]
        click.echo(f"{label}: {c['subject']}")
        click.echo(f"  valid {c['not_before']} .. {c['not_after']}")
        click.echo(f"  SHA-256 {c['sha256']}")


@ca.command()
@click.option("--passphrase-file", type=click.Path(dir_okay=False), help="File holding the root key passphrase.")
@click.option("--intermediate-days", type=click.IntRange(1), default=1825, show_default=True)
@click.option("--permit-dns", multiple=True, metavar="DOMAIN", help="Name constraint (repeatable).")
@click.option("--permit-ip", multiple=True, metavar="CIDR", help="Name constraint on IP SANs (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def intermediate(ctx, passphrase_file, intermediate_days, permit_dns, permit_ip, as_json):
    """Replace the intermediate CA with a new one signed by the root (needs the root passphrase)."""
    from ntspki import pki
    from ntspki.issuing import ca as ca_mod

    home = get_home(ctx)
    dns, ips = ca_mod.name_constraints(permit_dns, permit_ip)
    ca_mod.load(home)  # no CA: say so before asking for a passphrase
    encrypted = b"ENCRYPTED" in (home.private_dir / "root.key").read_bytes().split(b"\n", 1)[0]
    passphrase = read_passphrase(passphrase_file, confirm=False) if encrypted else None
    # A wrong passphrase fails there, before anything is written.
    made = ca_mod.new_intermediate(home, passphrase, intermediate_days, dns, ips)
    result = {
        "intermediate": str(home.ca_dir / "intermediate.pem"),
        "sha256": pki.fingerprint(made.intermediate),
        "not_after": made.intermediate.not_valid_after_utc.isoformat(),
    }
    if as_json:
        echo_json(result)
    else:
        click.echo(
            f"New intermediate CA {result['intermediate']} (until {result['not_after'][:10]}); "
            "certificates issued from now on chain to it"
        )
