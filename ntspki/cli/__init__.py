"""The `ntspki` command: a thin click layer. Subcommands live in this package's modules and are
only imported when run (hooks and timers call this CLI, so start-up must stay light: no acme, josepy,
watchdog or OpenSSL unless the command needs them).

Layer: top. Commands parse options, call one plain module (issuing, deploy, nts, audit, ...) and
print; no logic of their own. Nothing below imports `cli`. `logsetup`: where the
long-running and hook-run commands (deploy, watch) send progress and problems.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any, NoReturn

import click

from ntspki import __version__
from ntspki.errors import NtspkiError, describe_os_error

# command name -> "module:attribute", imported only when that command runs (or --help lists it).
COMMANDS = {
    "demo": "ntspki.cli.demo:demo",
    "ca": "ntspki.cli.ca:ca",
    "issue": "ntspki.cli.issue:issue",
    "list": "ntspki.cli.issue:list_",
    "show": "ntspki.cli.issue:show",
    "probe": "ntspki.cli.probe:probe",
    "check": "ntspki.cli.check:check",
    "migrate": "ntspki.cli.migrate:migrate",
    "completion": "ntspki.cli.completion:completion",
    "deploy": "ntspki.cli.deploy:deploy",
    "watch": "ntspki.cli.deploy:watch",
    "hook": "ntspki.cli.deploy:hook",
    "acme": "ntspki.cli.acme:acme",
    "renew": "ntspki.cli.acme:renew",
    "csr": "ntspki.cli.remote:csr",
    "sign": "ntspki.cli.remote:sign",
    "install": "ntspki.cli.remote:install",
    "revoke": "ntspki.cli.revoke:revoke",
    "crl": "ntspki.cli.revoke:crl",
    "trust": "ntspki.cli.trust:trust",
}


class SuggestingGroup(click.Group):
    """A group that answers a mistyped subcommand with the closest one ("did you mean")."""

    def resolve_command(self, ctx, args):
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            import difflib

            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1, cutoff=0.6)
            if close:
                raise click.UsageError(f"No such command '{name}'. Did you mean '{close[0]}'?", ctx)
        return super().resolve_command(ctx, args)


class LazyGroup(SuggestingGroup):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False),
    envvar="NTSPKI_HOME",
    help="ntspki's directory (default: $NTSPKI_HOME, /etc/ntspki for root, else the XDG data dir).",
)
@click.version_option(__version__, prog_name="ntspki")
@click.pass_context
def cli(ctx, home):
    """Certificates for NTS time servers: CA, issuance, ACME, deploy to chronyd, probe."""
    from ntspki.store import Home

    ctx.obj = Home(home)


def get_home(ctx: click.Context):
    return ctx.find_root().obj


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False, default=str))


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int = 1) -> None:
        pass


def progress(length: int, label: str) -> Any:
    """A progress bar on stderr when it is a terminal; else nothing (click would still print the
    label, which breaks one-line errors and logs)."""
    stderr = sys.stderr
    if not stderr.isatty():
        return _NoBar()
    return click.progressbar(length=length, label=label, file=stderr, show_pos=True)


class Seconds(click.ParamType):
    """A finite number in [low, high]: click's FloatRange lets nan through and inf means "never"."""

    name = "seconds"

    def __init__(self, low: float, high: float, low_open: bool = False):
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value, param, ctx):
        import math

        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if (
            not math.isfinite(number)
            or number > self.high
            or number < self.low
            or (self.low_open and number == self.low)
        ):
            low = f"more than {self.low:g}" if self.low_open else f"at least {self.low:g}"
            self.fail(f"{value!r} is not {low} and at most {self.high:g} seconds", param, ctx)
        return number

    def get_metavar(self, param, ctx=None):
        return "SECONDS"


def fail(message: str, code: int = 1) -> NoReturn:
    raise NtspkiError(message, code)


def _one_line(text: str) -> str:
    """Errors are one line on stderr: logs and monitoring read them line by line."""
    return " ".join(str(text).split()) or "unknown error"


def _error(message: str, code: int) -> NoReturn:
    click.echo(f"ntspki: error: {_one_line(message)}", err=True)
    sys.exit(code)


def main(argv=None) -> None:
    import os

    if argv is not None and any("\0" in str(a) for a in argv):
        # exec() cannot pass one; a caller in Python can, and no path or name may hold one.
        _error("an argument holds a NUL character", 2)
    try:
        rv = cli.main(args=argv, prog_name="ntspki", standalone_mode=False)
    except NtspkiError as e:
        _error(str(e), e.exit_code)
    except click.exceptions.Abort:
        click.echo("ntspki: aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:
        # One line like every other error (click's own format is usage + blank line + error).
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx else ""
        _error(f"{e.format_message()}{hint}", e.exit_code)
    except click.ClickException as e:
        _error(e.format_message(), e.exit_code)
    except KeyboardInterrupt:
        click.echo("ntspki: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
    except OSError as e:
        _error(describe_os_error(e), 1)
    except Exception as e:
        # A bug, not bad input: still one line for the user; the traceback is for developers.
        if os.environ.get("NTSPKI_DEBUG"):
            raise
        _error(f"internal error: {type(e).__name__}: {e} (NTSPKI_DEBUG=1 shows the traceback)", 1)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
