"""`ntspki acme register|issue` and `ntspki renew` (acme/josepy are imported inside the commands)."""

from __future__ import annotations

import click

from ntspki.cli import Seconds, SuggestingGroup, echo_json, fail, get_home, progress
from ntspki.constants import ACME_KEY_TYPES


def _say(message: str, as_json: bool = False) -> None:
    """Progress: on stdout with the results (stderr is for problems), on stderr under --json."""
    click.echo(message, err=as_json)


def _directory(directory: str | None, staging: bool) -> str:
    if staging and directory not in (None, "letsencrypt-staging"):
        fail("give either --staging or --directory, not both", 2)
    if directory is not None and not directory.strip():
        fail("--directory is empty: give letsencrypt, letsencrypt-staging or an https:// URL", 2)
    return "letsencrypt-staging" if staging else (directory or "letsencrypt")


def directory_options(f):
    f = click.option(
        "--ca-bundle",
        type=click.Path(dir_okay=False),
        metavar="FILE",
        help="PEM file of CA certificates that verify the ACME server's HTTPS (private ACME CAs).",
    )(f)
    f = click.option(
        "--staging", is_flag=True, help="Shorthand for --directory letsencrypt-staging (untrusted test certificates)."
    )(f)
    f = click.option(
        "--directory",
        metavar="letsencrypt|letsencrypt-staging|URL",
        help="The ACME directory.  [default: letsencrypt (production)]",
    )(f)
    return f


def account_options(f):
    f = click.option("--eab-hmac-key", metavar="KEY", help="External Account Binding HMAC key (base64url).")(f)
    f = click.option("--eab-kid", metavar="KID", help="External Account Binding key identifier, from your CA.")(f)
    f = click.option("--email", metavar="ADDRESS", help="Contact address for expiry and policy mail (optional).")(f)
    f = click.option("--agree-tos", is_flag=True, help="Agree to the ACME CA's terms of service.")(f)
    return f


@click.group(cls=SuggestingGroup)
def acme():
    """Certificates from Let's Encrypt or any ACME CA, into ordinary ntspki lineages."""


@acme.command()
@directory_options
@account_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def register(ctx, directory, staging, ca_bundle, agree_tos, email, eab_kid, eab_hmac_key, as_json):
    """Create the ACME account for a directory (or find it again).

    The account key (ECDSA P-256, ES256) is kept mode 0600 in HOME/accounts/ID/, one account per
    directory URL. Running it again reuses the key, so it is safe to repeat.
    """
    from ntspki.acme import accounts

    home = get_home(ctx)
    account = accounts.register(
        home, _directory(directory, staging), ca_bundle, email, agree_tos, eab_kid, eab_hmac_key
    )
    if as_json:
        echo_json(account.to_dict())
        return
    click.echo(f"{'Registered' if account.new else 'Account exists'} at {account.directory}")
    click.echo(f"  account:  {account.uri}")
    click.echo(f"  contact:  {', '.join(account.contact) or 'none'}")
    click.echo(f"  key:      {account.path}/private_key.pem (ES256, mode 0600)")


@acme.command("issue")
@click.argument("name")
@click.option(
    "--san",
    "sans",
    multiple=True,
    metavar="NAME_OR_IP",
    help="Another name: a host name or an IP address (http-01 only). Repeatable.",
)
@directory_options
@click.option(
    "--key-type", type=click.Choice(ACME_KEY_TYPES), help="Key type.  [default: the lineage's own, else ec-p256]"
)
@click.option(
    "--allow-change",
    is_flag=True,
    help="Let this version change an existing lineage's names, key type or source (refused otherwise).",
)
@click.option("--profile", metavar="NAME", help="ACME profile to order (e.g. Let's Encrypt's `shortlived`).")
@click.option(
    "--http-port",
    type=click.IntRange(1, 65535),
    default=80,
    show_default=True,
    help="http-01 standalone: port to answer on (the CA always connects to port 80; forward it here if needed).",
)
@click.option(
    "--http-address",
    default="",
    metavar="ADDRESS",
    help="http-01 standalone: address to listen on.  [default: every address]",
)
@click.option(
    "--webroot",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="http-01 through a running web server: write the answer under DIR/.well-known/acme-challenge/.",
)
@click.option(
    "--dns-hook",
    type=click.Path(dir_okay=False),
    metavar="SCRIPT",
    help="dns-01: run `SCRIPT set TXT_NAME VALUE` before validation and `SCRIPT clean TXT_NAME VALUE` "
    "after (see ntspki-acme(1)).",
)
@click.option(
    "--dns-wait",
    type=Seconds(0, 3600),
    default=0,
    show_default=True,
    metavar="SECONDS",
    help="dns-01: wait this long after the hook for the record to propagate.",
)
@account_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def issue_cmd(
    ctx,
    name,
    sans,
    directory,
    staging,
    ca_bundle,
    key_type,
    allow_change,
    profile,
    http_port,
    http_address,
    webroot,
    dns_hook,
    dns_wait,
    agree_tos,
    email,
    eab_kid,
    eab_hmac_key,
    as_json,
):
    """Obtain a certificate for NAME (plus --san names) from an ACME CA.

    The result is a lineage like any other (HOME/live/NAME/, versions in HOME/archive/NAME/) and
    its parameters go to HOME/renewal/NAME.json, so `ntspki renew` orders the next one the same
    way. With --agree-tos an account is registered first when there is none for the directory.
    An existing lineage keeps its names and key type; other names, another key type or a lineage
    from the site CA are refused unless --allow-change.
    """
    from ntspki.acme import acmeclient, solvers

    if webroot and dns_hook:
        fail(
            "give one challenge: --webroot DIR (http-01), --dns-hook SCRIPT (dns-01) or neither (http-01 standalone)", 2
        )
    challenge = solvers.Challenge(
        type="dns-01" if dns_hook else "http-01",
        webroot=webroot,
        http_port=http_port,
        http_address=http_address,
        dns_hook=dns_hook,
        dns_wait=dns_wait,
    )
    spec = acmeclient.OrderSpec(
        name=name,
        sans=list(sans),
        directory=_directory(directory, staging),
        ca_bundle=ca_bundle,
        key_type=key_type,
        profile=profile,
        challenge=challenge,
    )
    home = get_home(ctx)
    result = acmeclient.obtain(
        home,
        spec,
        agree_tos=agree_tos,
        email=email,
        eab_kid=eab_kid,
        eab_hmac_key=eab_hmac_key,
        progress=lambda message: _say(message, as_json),
        allow_change=allow_change,
    )
    if as_json:
        echo_json({**result.to_dict(), "directory": spec.directory})
        return
    click.echo(f"Issued {result.name} version {result.version}: {', '.join(result.sans)}")
    click.echo(f"  from {spec.directory}, valid until {result.not_after[:10]}, {result.key_type}")
    click.echo(f"  key:       {result.live}/privkey.pem")
    click.echo(f"  fullchain: {result.live}/fullchain.pem")
    click.echo("  renewal:   ntspki renew (run it from a timer: examples/ntspki-renew.timer)")


@click.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--all", "all_", is_flag=True, help="Every lineage (the default when no NAME is given).")
@click.option("--force", is_flag=True, help="Renew even what is not due.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Rehearse: issue what is due into a scratch area, verify it, plan the deploy and say what would "
    "change where; change nothing.",
)
@click.option(
    "--jitter",
    type=Seconds(0, 86400),
    default=0,
    metavar="SECONDS",
    help="First sleep a random time up to SECONDS (for timers on many hosts).",
)
@click.option("--no-deploy", is_flag=True, help="Do not run the deploy engine afterwards.")
@click.option(
    "--deploy-config",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Deploy targets for the renewed lineages.  [default: HOME/deploy.toml]",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def renew(ctx, names, all_, force, dry_run, jitter, no_deploy, deploy_config, as_json):
    """Renew every due lineage, internal or ACME, then deploy the renewed ones.

    Due: under a third of the lifetime left, or inside the renewal window the ACME CA suggests
    (ARI, RFC 9773) when it offers one. Exits 0 when nothing is due.
    """
    import random
    import time
    from pathlib import Path

    from ntspki.issuing import renew as renew_mod

    if all_ and names:
        fail("give NAMEs or --all, not both", 2)
    home = get_home(ctx)
    if not no_deploy:  # a broken deploy config is a usage error before any wait or renewal
        renew_mod.check_deploy_config(home, Path(deploy_config) if deploy_config else None)
    if jitter and not dry_run:
        delay = random.uniform(0, jitter)
        _say(f"waiting {delay:.0f} s (--jitter)", as_json)
        time.sleep(delay)
    bar = None

    def on_plan(plans):
        nonlocal bar
        due = sum(1 for p in plans if p.due)
        if due and not dry_run:
            bar = progress(due, "renewing")
            bar.__enter__()

    try:
        report = renew_mod.renew(
            home,
            list(names),
            force=force,
            dry_run=dry_run,
            deploy=not no_deploy,
            deploy_config=Path(deploy_config) if deploy_config else None,
            on_plan=on_plan,
            on_done=lambda outcome: bar and bar.update(1),
        )
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if as_json:
        echo_json(report.to_dict())
    else:
        _print_report(report)
    if not report.ok:
        failed = [o.name for o in report.failed] + (["deploy"] if report.deploy_error else [])
        click.echo(f"ntspki: error: failed: {', '.join(failed)}", err=True)
        ctx.exit(1)


def _print_report(report) -> None:
    from ntspki.issuing.renew import RENEWABLE

    if not report.outcomes:
        click.echo("no lineages")
    for o in report.outcomes:
        if o.error:
            click.echo(f"{o.name}: FAILED: {o.error}")
        elif o.renewed:
            click.echo(f"{o.name}: renewed ({o.reason}): version {o.version}, valid until {o.not_after[:10]}")
        elif o.needs_ca:
            click.echo(
                f"{o.name}: due ({o.reason}); its CA is on another host: make a request here "
                f"(ntspki csr {o.name} --force), sign it there (ntspki sign), install it (ntspki install)"
            )
        elif o.source not in RENEWABLE:
            click.echo(f"{o.name}: skipped ({o.reason})")
        elif o.due:
            click.echo(f"{o.name}: would renew ({o.reason})" + (f": {o.rehearsal}" if o.rehearsal else ""))
        else:
            click.echo(f"{o.name}: not due ({o.reason})")
    if report.dry_run:
        click.echo("dry run: nothing was changed")
    elif not report.renewed:
        click.echo("nothing renewed")
    for t in getattr(report.deployed, "targets", None) or []:
        click.echo(f"deploy {t.name}: {t.status}" + (f" ({t.message})" if t.message else ""))
    if report.deploy_note:
        click.echo(f"note: {report.deploy_note}")
    if report.deploy_error:
        click.echo(f"deploy FAILED: {report.deploy_error}")
