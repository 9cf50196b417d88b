"""`ntspki deploy`, `ntspki watch`, `ntspki hook install certbot`."""

from __future__ import annotations

import sys

import click

from ntspki.cli import Seconds, SuggestingGroup, echo_json, fail, get_home


def _targets(ctx, names, all_, sources, config, oneoff: dict):
    """The targets a command line asks for: one-off flags, or chosen from the config."""
    from pathlib import Path

    from ntspki.deploy import deployconfig, load_targets

    home = get_home(ctx)
    if oneoff.get("source"):
        if names or all_ or sources or config:
            fail(
                "--lineage deploys one target from flags: do not combine it with TARGET, --all, --source or --config", 2
            )
        src = oneoff.pop("source")
        is_dir = "/" in src or src.startswith(".")
        label = Path(src).name if is_dir else home.require_lineage(src)
        settings = {k: list(v) if isinstance(v, tuple) else v for k, v in oneoff.items() if v not in (None, ())}
        return [deployconfig.make_target(label, {"source": src, **settings}, home)], None
    given = {k for k, v in oneoff.items() if v not in (None, ())}
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in sorted(given))
        fail(f"{flags} describe a one-off target: give --lineage too (or put them in the config)", 2)
    targets = load_targets(home, Path(config) if config else None)
    if targets is None:
        # An error, not "nothing to do": a timer or hook pointed at a mistyped home must fail.
        fail(
            f"no deploy config {deployconfig.default_config_path(home)}: nothing is configured to deploy "
            "(list targets there, see examples/deploy.toml, or deploy one lineage with --lineage NAME)",
            2,
        )
    if sources:
        chosen = deployconfig.by_source(targets, [Path(s) for s in sources])
        return chosen, None if chosen else f"no target uses {', '.join(sources)}"
    if names:
        return deployconfig.select(targets, list(names)), None
    if all_:
        if not targets:
            fail(f"{config or deployconfig.default_config_path(home)} has no targets: nothing to deploy", 2)
        return targets, None
    fail("name the targets to deploy, or give --all (or --lineage for a one-off)", 2)


@click.command()
@click.argument("names", nargs=-1, metavar="[TARGET]...")
@click.option("--all", "all_", is_flag=True, help="Every target in the config.")
@click.option(
    "--source",
    "sources",
    multiple=True,
    metavar="DIR",
    help="Every target whose source is this live directory (what the certbot hook uses). Repeatable.",
)
@click.option("--config", type=click.Path(dir_okay=False), help="Deploy config (default: HOME/deploy.toml).")
@click.option("--dry-run", is_flag=True, help="Validate and say what would change; write and restart nothing.")
@click.option("--force", is_flag=True, help="Install and restart even when the certificate is already served.")
@click.option(
    "--recover",
    is_flag=True,
    help="Only finish deploys a crash interrupted (no restart, no probe): for the server's ExecStartPre.",
)
@click.option(
    "--lineage",
    "source",
    metavar="DIR|NAME",
    help="One-off: deploy this live directory (or ntspki lineage) without a config.",
)
@click.option("--cert", metavar="PATH", help="One-off: where the full chain goes (default /etc/chrony/nts/NAME.crt).")
@click.option("--key", metavar="PATH", help="One-off: where the private key goes (default /etc/chrony/nts/NAME.key).")
@click.option("--owner", metavar="USER", help="One-off: owner of both files (default root).")
@click.option("--group", metavar="GROUP", help="One-off: group (default: the server user's group, e.g. _chrony).")
@click.option("--key-mode", metavar="MODE", help="One-off: key mode (default 0640).")
@click.option("--cert-mode", metavar="MODE", help="One-off: certificate mode (default 0644).")
@click.option(
    "--service", type=click.Choice(["chrony", "ntpsec", "ntpd-rs"]), help="One-off: the server (default chrony)."
)
@click.option(
    "--restart-command",
    metavar="CMD",
    help="One-off: how to restart it (default: systemctl restart on the unit that exists).",
)
@click.option(
    "--service-conf",
    metavar="FILE|none",
    help="One-off: the server's config: the key and certificate it reads must be --key and --cert; "
    "also read for ntsdumpdir and ntsport (default: the service's usual file; none: don't read one).",
)
@click.option(
    "--probe",
    "probe",
    metavar="HOST:PORT",
    help="One-off: where to check the served certificate (default 127.0.0.1 and chrony's ntsport; 'none': don't).",
)
@click.option(
    "--probe-name", metavar="NAME", help="One-off: name the certificate must be valid for (default: its first)."
)
@click.option(
    "--probe-timeout",
    type=Seconds(0, 3600, low_open=True),
    help="One-off: seconds to wait for the new certificate to be served (default 10).",
)
@click.option(
    "--ca",
    "ca",
    multiple=True,
    metavar="FILE",
    help="One-off: root(s) the chain must verify to (default: site CA for ntspki lineages, else the system store).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Log warnings and errors only.")
@click.pass_context
def deploy(ctx, names, all_, sources, config, dry_run, force, recover, as_json, quiet, **oneoff):
    """Copy certificates to where the NTS server reads them, restart it, prove the new one is served.

    Validates each source first; writes the key then the certificate atomically with their final
    owner and mode; keeps the previous pair; restarts once; probes; and rolls back when the new
    certificate is not served. Exit status: 0 done or unchanged, 1 refused (nothing changed),
    3 not served so rolled back, 4 rollback failed too.
    """
    import logging

    from ntspki import deploy as engine
    from ntspki.cli.logsetup import configure_logging

    configure_logging("ntspki deploy", logging.WARNING if quiet else logging.INFO, not as_json)
    logging.getLogger("ntspki.deploy.result").disabled = True  # each result is printed once, below
    targets, why_none = _targets(ctx, names, all_, sources, config, oneoff)
    if not targets:
        if as_json:
            echo_json(engine.DeployReport(note=why_none).to_dict())
        else:
            click.echo(f"nothing to deploy: {why_none}")
        return
    if recover:
        notes = engine.recover_only(targets, engine.default_lock_path(get_home(ctx)))
        if as_json:
            echo_json({"ok": True, "exit_code": 0, "recovered": notes})
        else:
            click.echo("\n".join(notes) if notes else "nothing to recover")
        return
    report = engine.deploy(targets, dry_run=dry_run, force=force, lock_path=engine.default_lock_path(get_home(ctx)))
    if as_json:
        echo_json(report.to_dict())
    else:
        for r in report.targets:
            sha = f" (sha256 {r.new_sha256[:16]}...)" if r.new_sha256 else ""
            click.echo(f"{r.name}: {r.status}{sha}: {r.message}")
    failed = [f"{r.name} {r.status}" for r in report.targets if r.exit_code]
    if failed:
        # The report above says why for each; one line on stderr says that it failed.
        click.echo(f"ntspki: error: not deployed: {', '.join(failed)}", err=True)
    ctx.exit(report.exit_code)


@click.command()
@click.option("--config", type=click.Path(dir_okay=False), help="Deploy config (default: HOME/deploy.toml).")
@click.option("--poll", is_flag=True, help="Poll the sources instead of inotify (NFS, container volumes).")
@click.option(
    "--poll-interval",
    type=Seconds(0.05, 3600),
    default=2.0,
    show_default=True,
    help="Seconds between polls with --poll.",
)
@click.option(
    "--debounce",
    type=Seconds(0, 3600),
    default=0.2,
    show_default=True,
    help="Quiet seconds after the last change before deploying.",
)
@click.pass_context
def watch(ctx, config, poll, poll_interval, debounce):
    """Watch every target's source and deploy each new version as it appears.

    Deploys anything that changed while it was not running, then waits. Incomplete lineages
    (mid-renewal) are waited for; invalid ones are logged and skipped. SIGHUP re-reads the
    config, SIGTERM stops.
    """
    from pathlib import Path

    from ntspki import deploy as engine
    from ntspki.cli.logsetup import configure_logging
    from ntspki.deploy.deployconfig import default_config_path
    from ntspki.deploy.watch import Watcher

    configure_logging("ntspki watch")
    home = get_home(ctx)
    config_path = Path(config) if config else None

    def load():
        targets = engine.load_targets(home, config_path)
        if targets is None:
            fail(f"no deploy config ({default_config_path(home)}): nothing to watch", 2)
        return targets

    watcher = Watcher(
        load, lock_path=engine.default_lock_path(home), poll=poll, poll_interval=poll_interval, debounce=debounce
    )
    watcher.run()


@click.group(cls=SuggestingGroup)
def hook():
    """Install ntspki as an ACME client's deploy hook."""


@hook.command("install")
@click.argument("client", type=click.Choice(["certbot"]))
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default="/etc/letsencrypt/renewal-hooks/deploy",
    show_default=True,
    help="certbot's deploy hook directory (CONFIG_DIR/renewal-hooks/deploy).",
)
@click.option("--force", is_flag=True, help="Replace a different hook of the same name.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def install(ctx, client, directory, force, as_json):
    """Put the certbot deploy hook in place: after each renewal certbot runs it, and it deploys
    every target whose source is the renewed lineage (`ntspki deploy --source DIR`)."""
    from pathlib import Path

    from ntspki import deploy as engine
    from ntspki.deploy.deployconfig import default_config_path

    home = get_home(ctx)
    argv = [sys.executable, "-m", "ntspki", "--home", str(home.path)]  # Home.path is absolute
    path, changed = engine.install_certbot_hook(Path(directory), argv, force)
    if as_json:
        echo_json({"client": client, "path": str(path), "changed": changed, "command": argv})
        return
    click.echo(f"{'installed' if changed else 'already installed'}: {path}")
    click.echo(f"  certbot runs it after every renewal; it deploys the targets in {default_config_path(home)}")
