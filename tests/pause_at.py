"""Run the ntspki CLI so that it stops itself (SIGSTOP) when it reaches a named step, so a test
can SIGKILL it at exactly that point: `python -m tests.pause_at STEP ntspki-args...`.

The product only calls its no-op step hooks (`ntspki.deploy.on_step`); this test-only wrapper is
what turns one of them into a pause, so no environment variable in the product changes its
behaviour."""

from __future__ import annotations

import os
import signal
import sys

from ntspki import deploy
from ntspki.cli import main


def _pause_at(step: str):
    def hook(name: str) -> None:
        if name == step:
            os.kill(os.getpid(), signal.SIGSTOP)

    return hook


if __name__ == "__main__":
    deploy.on_step = _pause_at(sys.argv[1])
    main(sys.argv[2:])
