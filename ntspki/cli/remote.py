"""`ntspki csr`, `ntspki sign`, `ntspki install`: certificates for keys that never leave their server."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ntspki.cli import echo_json, fail, get_home
from ntspki.constants import DEFAULT_KEY_TYPE, KEY_TYPES, MAX_DAYS
from ntspki.errors import NtspkiError


def _read_input(path: str, what: str) -> bytes:
    from ntspki.store import fsutil

    if path == "-":
        data = sys.stdin.buffer.read(fsutil.PEM_LIMIT + 1)
        if len(data) > fsutil.PEM_LIMIT:
            raise NtspkiError(f"{what} on standard input is larger than {fsutil.PEM_LIMIT} bytes", 2)
        return data
    return fsutil.read_bounded(path, fsutil.PEM_LIMIT, what, binary=True)  # a request may be DER


def _write_output(out: str | None, data: str) -> None:
    if out is None or out == "-":
        click.echo(data, nl=False)
        return
    from ntspki.store import fsutil

    fsutil.atomic_write(Path(out), data.encode(), 0o644)


@click.command()
@click.argument("name")
@click.option(
    "--san",
    "sans",
    multiple=True,
    metavar="NAME_OR_IP",
    help="Another name clients use: a host name (DNS SAN) or an IPv4/IPv6 address (IP SAN). Repeatable.",
)
@click.option("--key-type", type=click.Choice(KEY_TYPES), default=DEFAULT_KEY_TYPE, show_default=True)
@click.option("--out", metavar="FILE", help="Write the request to FILE (default: standard output).")
@click.option("--force", is_flag=True, help="Replace a pending key from an earlier csr that was never installed.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the result as JSON (the request in its `csr` field unless --out is given).",
)
@click.pass_context
def csr(ctx, name, sans, key_type, out, force, as_json):
    """On a server: make a new key for NAME (kept here, pending) and a certificate request to sign.

    The key is written 0600 to HOME/pending/NAME.key and never leaves this host; the PKCS#10
    request (PEM) goes to --out FILE or standard output. Sign it on the CA host with `ntspki sign`,
    then bring the chain back with `ntspki install NAME --cert FILE`.
    """
    from ntspki.issuing import remote

    if out and out != "-":
        from ntspki.store import fsutil

        fsutil.check_destination(out, "--out")  # before the key is made
    result = remote.make_csr(get_home(ctx), name, list(sans), key_type, force)
    if out and out != "-":
        _write_output(out, result.csr)
    if as_json:
        data = result.to_dict()
        if out and out != "-":
            data["csr"], data["out"] = None, out
        echo_json(data)
    elif not out or out == "-":
        _write_output(None, result.csr)
    else:
        click.echo(f"Request for {result.name} ({', '.join(result.sans)}, {result.key_type}) in {out}")
        click.echo(f"  pending key: {result.pending_key}")


@click.command()
@click.argument("csr_file", metavar="CSR_FILE")
@click.option("--days", type=click.IntRange(1, MAX_DAYS), default=90, show_default=True, help="Validity in days.")
@click.option(
    "--out", metavar="FILE", help="Write the full chain (leaf, then intermediate) to FILE (default: standard output)."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the result as JSON (the chain in its `fullchain` field unless --out is given).",
)
@click.pass_context
def sign(ctx, csr_file, days, out, as_json):
    """On the CA host: sign a server's certificate request (CSR_FILE, or - for standard input).

    The request's signature must verify, its key type be one ntspki issues and its names be valid
    and inside the CA's name constraints; the certificate is the one `ntspki issue` makes, every
    extension chosen by the CA. The ledger records it (source `remote`).
    """
    from ntspki.issuing import remote

    if days < 1:
        fail("--days must be at least 1", 2)
    if out and out != "-":
        from ntspki.store import fsutil

        fsutil.check_destination(out, "--out")  # before anything is signed or recorded
    what = "standard input" if csr_file == "-" else csr_file
    result = remote.sign(get_home(ctx), _read_input(csr_file, "request"), days, what)
    if out and out != "-":
        _write_output(out, result.fullchain)
    if as_json:
        data = result.to_dict()
        if out and out != "-":
            data["fullchain"], data["out"] = None, out
        echo_json(data)
    elif not out or out == "-":
        _write_output(None, result.fullchain)
    else:
        click.echo(f"Signed {result.name} ({', '.join(result.sans)}), valid until {result.not_after[:10]}: {out}")
    for ext in result.ignored_extensions:
        click.echo(f"ntspki: note: ignored the requested extension {ext} (the CA decides every extension)", err=True)


@click.command()
@click.argument("name")
@click.option(
    "--cert",
    "cert_file",
    required=True,
    metavar="FILE",
    help="The chain `ntspki sign` made (leaf first; - for standard input).",
)
@click.option(
    "--root",
    "root_file",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="The site roots to verify it to (default: HOME/ca/trust.pem, else HOME/ca/root.pem).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def install(ctx, name, cert_file, root_file, as_json):
    """On a server: install a signed chain as the next version of lineage NAME.

    The chain must be for the key `ntspki csr NAME` left pending and verify to the site root; it
    then becomes HOME/live/NAME/ exactly as `ntspki issue` would write it, so `deploy`, `watch`,
    `renew` and `show` treat it like any lineage. Installing the current certificate again
    changes nothing.
    """
    from ntspki.issuing import remote

    what = "standard input" if cert_file == "-" else cert_file
    result = remote.install(
        get_home(ctx), name, _read_input(cert_file, "certificate file"), Path(root_file) if root_file else None, what
    )
    if as_json:
        echo_json(result.to_dict())
    elif result.changed:
        click.echo(f"Installed {result.name} version {result.version}: {', '.join(result.sans)}")
        click.echo(f"  valid until {result.not_after[:10]}, {result.key_type}, SHA-256 {result.sha256}")
        click.echo(f"  fullchain: {result.live}/fullchain.pem (deploy it: ntspki deploy)")
    else:
        click.echo(f"{result.name}: already installed (version {result.version})")
