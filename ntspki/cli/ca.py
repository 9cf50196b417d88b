"""`ntspki ca create|show|status|rotate-intermediate|rollover`."""

from __future__ import annotations

import os
import sys

import click

from ntspki.cli import echo_json, fail, get_home
from ntspki.constants import DEFAULT_KEY_TYPE, KEY_TYPES


def read_passphrase(passphrase_file: str | None, confirm: bool) -> bytes:
    """--passphrase-file, else $NTSPKI_PASSPHRASE, else a prompt on a terminal."""
    from ntspki.pki.keys import MAX_PASSPHRASE, check_passphrase
    from ntspki.store import fsutil

    if passphrase_file:
        data = fsutil.read_bounded(passphrase_file, MAX_PASSPHRASE + 2, "passphrase file", binary=True)
        value = data[:-1] if data.endswith(b"\n") else data
        value = value[:-1] if value.endswith(b"\r") else value
        return check_passphrase(value, f"the passphrase in {passphrase_file}")
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
    return check_passphrase(value)


@click.group()
def ca():
    """Create, inspect, rotate and roll over the site's root and intermediate CA."""


KEY_TYPE_HELP = "Key type of the root and the intermediate."


@ca.command()
@click.option(
    "--name",
    default="ntspki",
    show_default=True,
    metavar="NAME",
    help="The CA's organisation, and the start of its common names (NAME root CA XXXX).",
)
@click.option(
    "--key-type", type=click.Choice(KEY_TYPES), default=DEFAULT_KEY_TYPE, show_default=True, help=KEY_TYPE_HELP
)
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False),
    help="File holding the root key passphrase (else $NTSPKI_PASSPHRASE, else a prompt).",
)
@click.option("--no-passphrase", is_flag=True, help="Store the root key unencrypted (labs only).")
@click.option("--root-days", type=click.IntRange(1, 36500), default=3650, show_default=True)
@click.option("--intermediate-days", type=click.IntRange(1, 36500), default=1825, show_default=True)
@click.option(
    "--permit-dns",
    multiple=True,
    metavar="DOMAIN",
    help="Name constraint: the intermediate may only issue for DOMAIN and below (repeatable).",
)
@click.option(
    "--permit-ip", multiple=True, metavar="CIDR", help="Name constraint on IP SANs, e.g. 192.0.2.0/24 (repeatable)."
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace an existing CA (the old one keeps working until the new one is complete, then is moved aside).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def create(
    ctx,
    name,
    key_type,
    passphrase_file,
    no_passphrase,
    root_days,
    intermediate_days,
    permit_dns,
    permit_ip,
    force,
    as_json,
):
    """Create a root CA and an intermediate CA that issues server certificates."""
    from ntspki import pki
    from ntspki.issuing import ca as ca_mod

    home = get_home(ctx)
    if no_passphrase and passphrase_file:
        fail("--no-passphrase and --passphrase-file contradict each other", 2)
    ca_mod.check_name(name)
    dns, ips = ca_mod.name_constraints(permit_dns, permit_ip)
    ca_mod.refuse_overwrite(home, force)  # before asking for a passphrase
    passphrase = None if no_passphrase else read_passphrase(passphrase_file, confirm=True)
    made = ca_mod.create(home, key_type, passphrase, root_days, intermediate_days, dns, ips, force, name)
    result = {
        "home": str(home.path),
        "name": name,
        "root": str(home.ca_dir / "root.pem"),
        "intermediate": str(home.ca_dir / "intermediate.pem"),
        "trust_bundle": str(home.ca_dir / "trust.pem"),
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
    click.echo(f"Clients trust it with:  ntstrustedcerts {result['trust_bundle']}  (ntspki trust export)")


def _constraints_text(dns: list[str], ips: list[str]) -> str:
    if not (dns or ips):
        return "none (the intermediate may issue for any name)"
    return ", ".join([*(f"DNS {d}" for d in dns), *(f"IP {n}" for n in ips)])


@ca.command()
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def show(ctx, as_json):
    """Show the root and intermediate CA certificates and the name constraints."""
    from dataclasses import asdict

    from ntspki import pki
    from ntspki.issuing import ca as ca_mod

    home = get_home(ctx)
    made = ca_mod.load(home)
    dns, ips = ca_mod.constraints_of(made.intermediate)
    info: dict = {
        "home": str(home.path),
        "root": asdict(pki.CertInfo.of(made.root)),
        "intermediate": asdict(pki.CertInfo.of(made.intermediate)),
        "name_constraints": {"permit_dns": dns, "permit_ip": ips},
    }
    if as_json:
        echo_json(info)
        return
    for label in ("root", "intermediate"):
        c = info[label]
        click.echo(f"{label}: {c['subject']}")
        click.echo(f"  valid {c['not_before']} .. {c['not_after']}")
        click.echo(f"  SHA-256 {c['sha256']}")
    click.echo(f"name constraints: {_constraints_text(dns, ips)}")


@ca.command()
@click.option(
    "--warn-days",
    type=click.IntRange(0, 36500),
    default=21,
    show_default=True,
    help="Warn when the root or the intermediate expires within this many days (as `check`).",
)
@click.option(
    "--critical-days",
    type=click.IntRange(0, 36500),
    default=7,
    show_default=True,
    help="Critical when it expires within this many days (as `check`).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def status(ctx, warn_days, critical_days, as_json):
    """The CA's state: root and intermediate, rollover phase, trust bundle, CRL, warnings."""
    from ntspki.issuing import castatus

    home = get_home(ctx)
    st = castatus.status(home, warn_days, critical_days)
    if as_json:
        echo_json(st)
        return
    click.echo(f"{st['status']}: CA in {home.ca_dir}")
    for label in ("root", "intermediate"):
        c = st[label]
        click.echo(f"  {label + ':':<14}{c['subject']}")
        click.echo(f"  {'':<14}{c['key_type']}, serial {c['serial']}, SHA-256 {c['sha256'][:32]}...")
        click.echo(f"  {'':<14}not after {c['not_after'][:10]} ({c['days_left']:.0f} days left)")
    protection = (
        f"encrypted, PBKDF2 {st['root']['kdf_rounds']} rounds"
        if st["root"]["kdf_rounds"]
        else "encrypted"
        if st["root"]["key_encrypted"]
        else "NOT encrypted"
    )
    click.echo(f"  {'root key:':<14}{protection}")
    inter = st["intermediate"]
    click.echo(f"  {'constraints:':<14}{_constraints_text(inter['permit_dns'], inter['permit_ip'])}")
    if st["retired_intermediates"]:
        click.echo(f"  {'retired:':<14}{len(st['retired_intermediates'])} intermediate(s), still signing CRLs")
    ro = st["rollover"]
    click.echo(f"  {'rollover:':<14}{ro['phase'] if ro else 'none'}")
    if ro and ro.get("next_root"):
        click.echo(f"  {'next root:':<14}{ro['next_root']['subject']}")
    click.echo(f"  {'trust bundle:':<14}{st['trust_bundle']['path']}")
    for r in st["trust_bundle"]["roots"]:
        click.echo(f"  {'':<14}- {r['subject']} (SHA-256 {r['sha256'][:16]}..., until {r['not_after'][:10]})")
    crl = st["crl"]
    if crl:
        revoked = sum(len(c["revoked"]) for c in crl["crls"])
        nxt = min((c["next_update"] for c in crl["crls"] if c["next_update"]), default=None)
        click.echo(f"  {'CRL:':<14}{crl['path']}: {revoked} revoked, next update {nxt[:16] if nxt else '-'}")
    for w in st["warnings"]:
        click.echo(f"  [{w['severity'].upper()}] {w['code']}: {w['message']}")
        click.echo(f"      fix: {w['fix']}")


def _root_passphrase(home, passphrase_file):
    from ntspki.issuing import ca as ca_mod

    if ca_mod.root_key_encrypted(home):
        return read_passphrase(passphrase_file, confirm=False)
    if passphrase_file:
        read_passphrase(passphrase_file, confirm=False)  # given, so it must be usable (checked, unused)
    return None


@ca.command("rotate-intermediate")
@click.option("--passphrase-file", type=click.Path(dir_okay=False), help="File holding the root key passphrase.")
@click.option("--intermediate-days", type=click.IntRange(1, 36500), default=1825, show_default=True)
@click.option(
    "--permit-dns",
    multiple=True,
    metavar="DOMAIN",
    help="Name constraint (repeatable; default: the current intermediate's).",
)
@click.option(
    "--permit-ip",
    multiple=True,
    metavar="CIDR",
    help="Name constraint on IP SANs (repeatable; default: the current intermediate's).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def rotate_intermediate(ctx, passphrase_file, intermediate_days, permit_dns, permit_ip, as_json):
    """A new intermediate CA under the same root (needs the root passphrase).

    New certificates chain to it; existing ones stay valid (clients trust the root, so they need
    nothing). `ntspki renew --force` re-issues them all under the new intermediate."""
    from ntspki import pki
    from ntspki.issuing import ca as ca_mod

    home = get_home(ctx)
    dns, ips = ca_mod.name_constraints(permit_dns, permit_ip)
    old = ca_mod.load(home).intermediate  # no CA: say so before asking for a passphrase
    passphrase = _root_passphrase(home, passphrase_file)
    made = ca_mod.rotate_intermediate(home, passphrase, intermediate_days, dns, ips)
    advice = ROTATE_ADVICE.format(serial=ca_mod.serial_hex(old))
    result = {
        "intermediate": str(home.ca_dir / "intermediate.pem"),
        "subject": made.intermediate.subject.rfc4514_string(),
        "sha256": pki.fingerprint(made.intermediate),
        "not_after": made.intermediate.not_valid_after_utc.isoformat(),
        "retired": ca_mod.serial_hex(old),
        "advice": advice,
    }
    if as_json:
        echo_json(result)
        return
    click.echo(
        f"New intermediate CA {result['intermediate']} (until {result['not_after'][:10]}); "
        "certificates issued from now on chain to it"
    )
    click.echo(advice)


ROTATE_ADVICE = (
    "If the old intermediate's key leaked: NTS clients (chrony, GnuTLS) do not fetch CRLs, so re-issue every "
    "certificate (`ntspki renew --force`, which deploys) and revoke the old intermediate "
    "(`ntspki revoke --serial {serial}`); a client trusts whatever the leaked key signs as long as it trusts "
    "the root: `ntspki ca rollover` removes that."
)

# The older name of rotate-intermediate, kept for scripts.
ca.add_command(rotate_intermediate, "intermediate")


@ca.group()
def rollover():
    """Replace the root without a client losing NTS: start, switch, finish."""


def _print_step(step, as_json):
    if as_json:
        echo_json(step.to_dict())
    else:
        click.echo(f"rollover {step.phase}{'' if step.changed else ' (nothing to do)'}: {step.message}")


@rollover.command()
@click.option(
    "--key-type",
    type=click.Choice(KEY_TYPES),
    help="Key type of the new root and intermediate (default: the current root's).",
)
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False),
    help="File holding the NEW root key's passphrase (else $NTSPKI_PASSPHRASE, else a prompt).",
)
@click.option("--no-passphrase", is_flag=True, help="Store the new root key unencrypted (labs only).")
@click.option("--root-days", type=click.IntRange(1, 36500), default=3650, show_default=True)
@click.option("--intermediate-days", type=click.IntRange(1, 36500), default=1825, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def start(ctx, key_type, passphrase_file, no_passphrase, root_days, intermediate_days, as_json):
    """Make the new root and intermediate; the trust bundle then holds both roots."""
    from ntspki.issuing import ca as ca_mod
    from ntspki.issuing import rollover as rollover_mod

    home = get_home(ctx)
    if no_passphrase and passphrase_file:
        fail("--no-passphrase and --passphrase-file contradict each other", 2)
    ca_mod.load(home)
    st = rollover_mod.state(home)
    if st and st["phase"] == "started":
        passphrase = None  # already started: nothing to encrypt
    else:
        passphrase = None if no_passphrase else read_passphrase(passphrase_file, confirm=True)
    _print_step(rollover_mod.start(home, passphrase, key_type, root_days, intermediate_days), as_json)


@rollover.command()
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def switch(ctx, as_json):
    """Issue from the new root from now on (then re-issue and deploy every server)."""
    from ntspki.issuing import rollover as rollover_mod

    _print_step(rollover_mod.switch(get_home(ctx)), as_json)


@rollover.command()
@click.option("--force", is_flag=True, help="Finish even while lineages still hold old-chain certificates.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def finish(ctx, force, as_json):
    """Take the old root out of the trust bundle."""
    from ntspki.issuing import rollover as rollover_mod

    _print_step(rollover_mod.finish(get_home(ctx), force), as_json)
