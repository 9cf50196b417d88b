"""Shared fixtures: a site CA with an NTS server certificate, and real chronyd servers on loopback.

On CI (CI set) a skipped test fails the run: every test here must run on a fresh machine."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ntspki.issuing import ca, issue
from ntspki.servers import lab
from ntspki.store import Home

NTSPKI = [sys.executable, "-m", "ntspki"]


def _as_at_a_terminal() -> None:
    """Ctrl-C works in the CLI as at a terminal, also when the suite itself runs in the background
    (a non-interactive shell starts background jobs with SIGINT ignored, and Python keeps that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(
    *args, home: Path | None = None, input: str | None = None, env: dict | None = None, check: bool = False
) -> subprocess.CompletedProcess:
    """Run the real `ntspki` CLI in a subprocess (exit codes, stderr and all)."""
    full_env = {**os.environ, **(env or {})}
    cmd = [*NTSPKI, *(["--home", str(home)] if home else []), *map(str, args)]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        input=input,
        env=full_env,
        timeout=300,
        preexec_fn=_as_at_a_terminal,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@dataclass
class Site:
    """A home with a CA (no passphrase) and lineage `ntpserver` for ntpserver, ntpserver-ipv6,
    127.0.0.1 and ::1."""

    home: Home
    root: Path
    live: Path


def make_site(path: Path, key_type: str = "ec-p256", leaf_key_type: str | None = None) -> Site:
    home = Home(path)
    ca.create(home, key_type=key_type, passphrase=None)
    issue.issue(home, "ntpserver", ["ntpserver-ipv6", "127.0.0.1", "::1"], key_type=leaf_key_type or key_type)
    return Site(home, home.ca_dir / "root.pem", home.live / "ntpserver")


@pytest.fixture
def workdir():
    """A directory chronyd's own user can traverse (pytest's tmp_path is 0700)."""
    path = lab.make_workdir("ntspki-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def site(workdir) -> Site:
    return make_site(workdir / "home")


@pytest.fixture
def chrony_servers():
    """Factory: start a real chronyd NTS server; every one is stopped at teardown, and the work
    directory the lab made for it under /tmp (no workdir given) is removed."""
    started: list[tuple[lab.ChronyServer, bool]] = []

    def start(key, cert, **kw) -> lab.ChronyServer:
        server = lab.ChronyServer(key, cert, **kw)
        started.append((server, "workdir" not in kw))
        return server.start()

    yield start
    for server, own_dir in started:
        server.stop()
        if own_dir:
            shutil.rmtree(server.workdir, ignore_errors=True)


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("CI") and skipped:
        if reporter:
            reporter.write_line(f"FAILED: {skipped} test(s) skipped on CI; every test must run here", red=True)
        session.exitstatus = 1


# ---- a real ACME CA (pebble + challtestsrv on loopback), one per test session ------------------
from tests.pebble_env import PebbleEnv, start_pebble  # noqa: E402


@pytest.fixture(scope="session")
def pebble(tmp_path_factory) -> PebbleEnv:
    """Real pebble with real validation; see tests/pebble_env.py for the API."""
    env = start_pebble(tmp_path_factory.mktemp("pebble"))
    yield env
    env.stop()
