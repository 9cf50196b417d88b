"""Run the ntspki CLI so that it stops itself (SIGSTOP) when it reaches a named step, so a test
can SIGKILL it at exactly that point: `python -m tests.pause_at STEP ntspki-args...`.

STEP is a name from `ntspki.deploy.STEPS` or `ntspki.store.live.STEPS`, optionally `STEP#N` to
stop at its N-th occurrence (a batch passes each step once per lineage). `--no-exchange` before
the ntspki arguments stands in for a file system without renameat2(RENAME_EXCHANGE).

The product only calls its no-op step hooks (`ntspki.deploy.on_step`, `ntspki.store.live.on_step`);
this test-only wrapper is what turns one of them into a pause, so no environment variable in the
product changes its behaviour. `before-rename:NAME` pauses instead inside `fsutil.atomic_write` of
a file called NAME, after its temp file is complete and before the rename: where a kill leaves a
stray temp file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ntspki import deploy
from ntspki.cli import main
from ntspki.store import fsutil, live


def _pause_at(step: str):
    name, _, nth = step.partition("#")
    seen = 0

    def hook(reached: str) -> None:
        nonlocal seen
        if reached == name:
            seen += 1
            if seen == int(nth or 1):
                os.kill(os.getpid(), signal.SIGSTOP)

    return hook


def _pause_before_rename(name: str) -> None:
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == name and str(src).endswith(".tmp"):
            os.kill(os.getpid(), signal.SIGSTOP)
        return real(src, dst, *args, **kwargs)

    os.replace = replace  # type: ignore[assignment]


ROOT = Path(__file__).resolve().parent.parent


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def kill_at(step: str, *ntspki_args: str, no_exchange: bool = False, limit: float = 60) -> None:
    """Run ntspki with `ntspki_args`, wait until it stops itself at `step`, SIGKILL it there."""
    cmd = [sys.executable, "-m", "tests.pause_at", step, *(["--no-exchange"] if no_exchange else [])]
    proc = subprocess.Popen([*cmd, *ntspki_args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + limit
    while _state(proc.pid) != "T":
        assert proc.poll() is None, f"ntspki ended before step {step}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"ntspki never reached step {step}"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


if __name__ == "__main__":
    args = sys.argv[2:]
    if args[:1] == ["--no-exchange"]:
        args = args[1:]
        fsutil.exchange = lambda a, b: False  # type: ignore[assignment]
    if sys.argv[1].startswith("before-rename:"):
        _pause_before_rename(sys.argv[1].split(":", 1)[1])
    else:
        deploy.on_step = live.on_step = _pause_at(sys.argv[1])
    main(args)
