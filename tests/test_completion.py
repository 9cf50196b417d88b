"""Shell completion through click's own mechanism: `ntspki completion SHELL` prints a script a real
bash loads and that completes commands and options of the installed ntspki."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ntspki.cli import COMMANDS
from tests.conftest import run_cli

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_script_for_each_shell(shell):
    proc = run_cli("completion", shell)
    assert proc.returncode == 0, proc.stderr
    assert "_NTSPKI_COMPLETE" in proc.stdout and f"{shell}_complete" in proc.stdout


def _bash_complete(words: str) -> list[str]:
    """Load the script into a real bash and ask it to complete `words` (the last one partial)."""
    script = run_cli("completion", "bash", check=True).stdout
    n = len(words.split()) - 1
    prog = (
        f"{script}\nCOMP_WORDS=({words}); COMP_CWORD={n}; "
        'complete -p ntspki >/dev/null && _ntspki_completion ntspki && printf "%s\\n" "${COMPREPLY[@]}"'
    )
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_bash_completes_commands_options_and_choices():
    assert _bash_complete("ntspki mig") == ["migrate"]
    assert set(_bash_complete("ntspki c")) == {name for name in COMMANDS if name.startswith("c")} >= {"check"}
    assert set(_bash_complete("ntspki check --pr")) == {"--probe", "--prometheus"}
    assert _bash_complete("ntspki completion f") == ["fish"]


def test_unknown_shell_is_a_usage_error():
    proc = run_cli("completion", "tcsh")
    assert proc.returncode == 2 and proc.stderr.startswith("ntspki: error:")
