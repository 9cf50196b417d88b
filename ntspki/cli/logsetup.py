"""Logging for long-running and hook-run commands (`deploy`, `watch`): where progress and
problems go, and journald's priority prefix under systemd."""

from __future__ import annotations

import logging
import os
import sys


def configure_logging(prog: str, level: int = logging.INFO, progress_on_stdout: bool = True) -> None:
    """Progress on stdout, problems (warnings and errors) on stderr: a certbot hook's stderr is
    logged as error output. With progress_on_stdout False (stdout carries JSON) both go to stderr.
    Under systemd both carry journald's `<N>` priority prefix."""
    if os.environ.get("JOURNAL_STREAM"):
        prio = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

        class Journal(logging.Formatter):
            def format(self, record):
                return f"<{prio.get(record.levelno, 6)}>{record.getMessage()}"

        formatter: logging.Formatter = Journal()
    else:
        formatter = logging.Formatter(f"{prog}: %(message)s")
    progress = logging.StreamHandler(sys.stdout if progress_on_stdout else sys.stderr)
    problems = logging.StreamHandler(sys.stderr)
    progress.addFilter(lambda record: record.levelno < logging.WARNING)
    problems.setLevel(logging.WARNING)
    for handler in (progress, problems):
        handler.setFormatter(formatter)
    root = logging.getLogger("ntspki")
    root.handlers[:] = [progress, problems]
    root.setLevel(level)
    root.propagate = False
