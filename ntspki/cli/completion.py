"""`ntspki completion SHELL`: the shell's completion script, from click's own mechanism."""

from __future__ import annotations

import click

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_NTSPKI_COMPLETE"  # what click reads: _NTSPKI_COMPLETE=bash_complete ntspki ...


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell):
    """Print the completion script for SHELL (bash, zsh or fish).

    \b
    bash:  ntspki completion bash > /etc/bash_completion.d/ntspki
    zsh:   ntspki completion zsh > "${fpath[1]}/_ntspki"
    fish:  ntspki completion fish > ~/.config/fish/completions/ntspki.fish
    """
    from click.shell_completion import get_completion_class

    from ntspki.cli import cli

    cls = get_completion_class(shell)
    assert cls is not None  # click ships all three
    click.echo(cls(cli, {}, "ntspki", COMPLETE_VAR).source())
