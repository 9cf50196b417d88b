"""`ntspki issue`, `ntspki list`, `ntspki show`."""

from __future__ import annotations

import click

from ntspki.cli import echo_json, fail, get_home, progress
from ntspki.constants import DEFAULT_KEY_TYPE, KEY_TYPES, MAX_DAYS


@click.command()
@click.argument("name", required=False)
@click.option(
    "--san",
    "sans",
    multiple=True,
    metavar="NAME_OR_IP",
    help="Another name clients use: a host name (DNS SAN) or an IPv4/IPv6 address (IP SAN). Repeatable.",
)
@click.option(
    "--days", type=click.IntRange(1, MAX_DAYS), help="Validity in days.  [default: the lineage's own, else 90]"
)
@click.option(
    "--key-type",
    type=click.Choice(KEY_TYPES),
    help=f"Key type.  [default: the lineage's own, else {DEFAULT_KEY_TYPE}]",
)
@click.option(
    "--allow-change",
    is_flag=True,
    help="Let this version change an existing lineage's names, key type or source (refused otherwise).",
)
@click.option(
    "--from",
    "from_file",
    type=click.Path(dir_okay=False, allow_dash=True),
    metavar="FILE",
    help="Issue a fleet: one `NAME [SAN ...]` a line.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def issue(ctx, name, sans, days, key_type, allow_change, from_file, as_json):
    """Issue a server certificate NAME (plus --san names) from the site CA.

    Writes HOME/live/NAME/{privkey,cert,chain,fullchain}.pem; issuing the same NAME again makes a
    new version and keeps the old ones in HOME/archive/NAME/. A new version keeps the lineage's
    names, key type and lifetime; a different --san set or --key-type, or a lineage that came from
    ACME, is refused unless --allow-change.
    """
    from ntspki.issuing import issue as issue_mod

    home = get_home(ctx)
    if days is not None and days < 1:
        fail("--days must be at least 1", 2)
    if from_file:
        if name or sans:
            fail("give either NAME [--san ...] or --from FILE, not both", 2)
        requests = issue_mod.read_batch_file(from_file)
        with progress(len(requests), "issuing") as bar:
            results = issue_mod.issue_many(
                home, requests, key_type, days, progress=bar.update, allow_change=allow_change
            )
        if as_json:
            echo_json([r.to_dict() for r in results])
        else:
            click.echo(f"Issued {len(results)} certificates into {home.live}")
        return
    if not name:
        fail("missing NAME (or --from FILE)", 2)
    result = issue_mod.issue(home, name, list(sans), key_type, days, allow_change=allow_change)
    from ntspki.deploy import deployconfig

    advice = deployconfig.advice(home, result.name)
    if as_json:
        echo_json({**result.to_dict(), "deploy": advice})
        return
    click.echo(f"Issued {result.name} version {result.version}: {', '.join(result.sans)}")
    click.echo(f"  valid until {result.not_after[:10]}, {result.key_type}, SHA-256 {result.sha256}")
    click.echo(f"  key:       {result.live}/privkey.pem")
    click.echo(f"  fullchain: {result.live}/fullchain.pem")
    # Never the live/ paths: the server reads as its own user, who cannot enter HOME (0700).
    for a in advice:
        click.echo(f"Deploy with `{a['command']}`: it copies the pair to {a['key']} and {a['cert']}")
        click.echo(f"  with {a['service']}'s owner and modes. {a['conf_file']} then needs:")
        for line in a["conf_lines"]:
            click.echo(f"  {line}")


def _days_left(not_after: str) -> int:
    import datetime as dt

    return (dt.datetime.fromisoformat(not_after) - dt.datetime.now(dt.UTC)).days


@click.command("list")
@click.option(
    "--expiring",
    type=click.IntRange(-MAX_DAYS, MAX_DAYS),
    metavar="DAYS",
    help="Only certificates expiring within DAYS.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def list_(ctx, expiring, as_json):
    """List every lineage's current certificate (from the ledger)."""
    from ntspki.issuing import castatus

    home = get_home(ctx).require_readable()
    for w in castatus.quick_warnings(home):  # on stderr: the table and the JSON keep their shape
        click.echo(f"ntspki: warning: {w['message']} (fix: {w['fix']})", err=True)
    bad: list[str] = []
    rows = home.ledger_rows(bad=bad)
    for r in rows:
        r["days_left"] = _days_left(r["not_after"])
    if expiring is not None:
        rows = [r for r in rows if r["days_left"] <= expiring]
    _print_rows(home, rows, expiring, as_json)
    if bad:
        # The good rows are printed; the bad ones are one error line, and the exit status says so.
        fail(f"{len(bad)} bad ledger row(s) left out: {'; '.join(bad)}", 1)


def _print_rows(home, rows: list[dict], expiring: int | None, as_json: bool) -> None:
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no certificates" + (f" expiring within {expiring} days" if expiring is not None else ""))
        return
    width = max(len(r["name"]) for r in rows)
    click.echo(f"{'NAME':<{width}}  VER  {'EXPIRES':<10}  DAYS  {'KEY':<9}  SOURCE    NAMES")
    for r in rows:
        click.echo(
            f"{r['name']:<{width}}  {r['version']:>3}  {r['not_after'][:10]}  {r['days_left']:>4}  "
            f"{r['key_type']:<9}  {r['source']:<8}  {' '.join(r['sans'])}"
        )
        # As `certbot certificates`: where the files are, and whether it is still valid.
        live = home.live / r["name"]
        state = f"VALID: {r['days_left']} days" if r["days_left"] >= 0 else "INVALID: EXPIRED"
        click.echo(f"{'':<{width}}    {state}; {live / 'fullchain.pem'}, {live / 'privkey.pem'}")


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def show(ctx, name, as_json):
    """Show a lineage: names, validity, fingerprint, versions and a chain check."""
    from dataclasses import asdict

    from ntspki import pki
    from ntspki.errors import NtspkiError
    from ntspki.pki import keys, verify
    from ntspki.store import fsutil

    home = get_home(ctx).require_readable()
    lineage = home.read_lineage(name)
    # What the ledger recorded (a bad row or a foreign ledger is an error naming it).
    recorded = [r["version"] for r in home.ledger_rows(name, latest_only=False)]
    chain = verify.load_chain(lineage.fullchain, f"{name} fullchain.pem")
    leaf = chain[0]
    try:
        cert_ok = pki.load_certs(lineage.cert, f"{name} cert.pem")[0] == leaf
    except NtspkiError:
        cert_ok = False
    info = asdict(pki.CertInfo.of(leaf))
    info.update(
        name=name,
        version=lineage.version,
        live=str(lineage.live_dir),
        versions=home.versions(name),
        recorded=recorded,
        days_left=_days_left(info["not_after"]),
        key_type=keys.key_type_of(leaf.public_key()),
    )
    try:
        key = keys.load_private_pem(lineage.privkey, what=f"{name} privkey.pem")
        info["key_matches"] = keys.key_matches_cert(key, leaf)
    except NtspkiError as e:
        info["key_matches"] = False
        info["key_error"] = str(e)
    root_path = home.trust_path
    try:
        roots = (
            pki.load_certs(fsutil.read_bounded(root_path, fsutil.PEM_LIMIT, "trust file", exit_code=1), str(root_path))
            if root_path.exists()
            else []
        )
        if not roots:
            raise NtspkiError("no site CA to check against")
        verify.verify_chain(roots, chain)
        info["chain_ok"], info["chain_error"] = True, None
    except NtspkiError as e:
        info["chain_ok"], info["chain_error"] = False, str(e)
    info["cert_matches"] = cert_ok
    problems = [
        p
        for p, bad in (
            ("the key does not match the certificate", not info["key_matches"]),
            (f"the chain fails ({info['chain_error']})", not info["chain_ok"]),
            ("cert.pem is not the leaf of fullchain.pem", not cert_ok),
        )
        if bad
    ]
    if as_json:
        echo_json(info)
        _show_fails(name, problems)  # the same status as without --json: scripts read both
        return
    state = f"VALID: {info['days_left']} days" if info["days_left"] >= 0 else "INVALID: EXPIRED"
    click.echo(f"{name} (version {lineage.version}, versions {info['versions']}, in the ledger {recorded})")
    click.echo(f"  names:     {', '.join(info['sans'])}")
    click.echo(f"  valid:     {info['not_before'][:19]} .. {info['not_after'][:19]} ({state})")
    click.echo(f"  fullchain: {lineage.live_dir / 'fullchain.pem'}")
    click.echo(f"  key file:  {lineage.live_dir / 'privkey.pem'}")
    click.echo(f"  serial:    {info['serial']}")
    click.echo(f"  SHA-256:   {info['sha256']}")
    click.echo(
        f"  key:       {info['key_type']}, {'matches' if info['key_matches'] else 'DOES NOT MATCH'} the certificate"
    )
    click.echo(
        f"  chain:     {'verifies against ' + str(root_path) if info['chain_ok'] else 'FAILS: ' + info['chain_error']}"
    )
    _show_fails(name, problems)


def _show_fails(name: str, problems: list[str]) -> None:
    if problems:
        fail(f"{name}: {'; '.join(problems)}", 1)
