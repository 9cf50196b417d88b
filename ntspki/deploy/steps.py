"""The deploy's named steps and the hook they are announced to.

Every step in STEPS is announced to `ntspki.deploy.on_step` (a no-op): the crash tests replace it,
in a process of their own (tests/pause_at.py), to stop at a step and SIGKILL the deploy exactly
there. It is looked up on each call, so setting the package's attribute is all a test does.
"""

from __future__ import annotations

import logging

log = logging.getLogger("ntspki.deploy")

STEPS = (
    "locked",
    "validated",
    "previous-saved",
    "staged",
    "key-installed",
    "installed",
    "restarted",
    "probed",
    "restored",
    "restarted-again",
)


def step(name: str, detail: str = "") -> None:
    from ntspki import deploy

    log.debug("step %s%s", name, f": {detail}" if detail else "")
    deploy.on_step(name)
