"""Crashes and concurrency: the deploy process SIGKILLed at every step, and deploys racing.

`python -m tests.pause_at STEP` runs `ntspki deploy` so that it stops itself (SIGSTOP) at STEP; the
test then SIGKILLs it there, checks what is on disk, and runs a second deploy that must complete."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ntspki import deploy
from tests import pause_at
from tests.conftest import NTSPKI
from tests.deploy_env import DeployLab

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dl():
    bed = DeployLab()
    bed.write_config({"ntpserver": bed.settings(probe_timeout=1)})
    yield bed
    bed.stop()


def _kill_at(dl: DeployLab, step: str) -> None:
    """Run `ntspki deploy --all`, wait until it stops itself at `step`, SIGKILL it there."""
    pause_at.kill_at(step, "--home", str(dl.home.path), "deploy", "--all", limit=30)


def _journal(dl) -> bool:
    return (dl.dest / f".{dl.cert.name}.ntspki-journal").exists()


SUCCESS_STEPS = ["locked", "validated", "previous-saved", "staged", "key-installed", "installed", "restarted", "probed"]


@pytest.mark.parametrize("step", SUCCESS_STEPS)
def test_sigkill_at_every_step_leaves_a_matching_pair_and_the_next_deploy_completes(dl, step):
    old = dl.deployed().fingerprint
    new = dl.new_version()
    _kill_at(dl, step)
    pair = dl.deployed()
    if step == "key-installed":
        # The one instant two files cannot avoid: new key, old certificate. Both new files were
        # complete and journalled before the first rename; the next deploy finishes the renames
        # before anything else (below), so chronyd is never restarted onto this.
        assert pair is None and _journal(dl)
    else:
        assert pair is not None and pair.matches(), step
        assert pair.fingerprint == (old if SUCCESS_STEPS.index(step) < SUCCESS_STEPS.index("installed") else new)
        # From "staged" on, the journal says: complete this pair.
        assert _journal(dl) == (step == "staged")
    assert dl.served() in (old, new)
    second = dl.cli("deploy", "--all")
    assert second.returncode == 0, second.stderr
    assert dl.deployed().fingerprint == new == dl.served()
    assert not list(dl.dest.glob(".*ntspki*"))
    if step in ("staged", "key-installed"):
        assert "finished an interrupted deploy" in second.stderr


def test_a_run_killed_after_installing_restarts_on_the_next_run_even_without_probing(dl):
    """Killed after both files are in place, before the restart: the pair on disk is the new one,
    so without a probe nothing but the journal's "restart owed" tells the next run to restart."""
    dl.write_config({"ntpserver": dl.settings(probe=False)})
    try:
        old = dl.served()
        new = dl.new_version()
        pid, restarts = dl.server.pid, dl.restarts()
        _kill_at(dl, "installed")
        assert dl.deployed().fingerprint == new and dl.served() == old
        assert (dl.dest / f".{dl.cert.name}.ntspki-restart-owed").exists()
        second = dl.cli("deploy", "--all")
        assert second.returncode == 0, second.stderr
        assert "restart owed" in second.stderr
        assert dl.restarts() == restarts + 1 and dl.server.pid != pid
        assert dl.served() == new
        assert not list(dl.dest.glob(".*ntspki*")) and not list(dl.dest.glob(".*.tmp"))
        third = dl.cli("deploy", "--all")  # paid: nothing more to do
        assert third.returncode == 0 and "unchanged" in third.stdout, third.stdout
        assert dl.restarts() == restarts + 1
    finally:
        dl.write_config({"ntpserver": dl.settings(probe_timeout=1)})


@pytest.mark.parametrize("name", [".ntpserver.key.ntspki-new", "ntpserver.key.previous", "ntpserver.crt.previous"])
def test_temp_files_of_a_killed_write_are_removed_by_the_next_run(dl, name):
    """SIGKILL inside atomic_write, after the temp copy is complete (for the key: the private key)
    and before its rename: the next run removes the copy and completes the deploy."""
    new = dl.new_version()
    _kill_at(dl, f"before-rename:{name}")
    stray = list(dl.dest.glob(f".{name}.*.tmp"))
    assert len(stray) == 1, list(dl.dest.iterdir())
    if ".key" in name:
        assert b"PRIVATE KEY" in stray[0].read_bytes()
    second = dl.cli("deploy", "--all")
    assert second.returncode == 0, second.stderr
    assert f"removed {stray[0]}" in second.stderr
    assert not list(dl.dest.glob(".*.tmp")) and not list(dl.dest.glob(".*ntspki*")), list(dl.dest.iterdir())
    assert dl.deployed().fingerprint == new == dl.served()


def test_recover_at_server_start_closes_the_new_key_old_cert_window(dl):
    """A crash between the two renames, then the server restarts (a reboot) before any deploy:
    its ExecStartPre `ntspki deploy --recover --all` completes the pair without restarting it."""
    new = dl.new_version()
    _kill_at(dl, "key-installed")
    assert dl.deployed() is None and _journal(dl)
    restarts = dl.restarts()
    proc = dl.cli("deploy", "--recover", "--all")
    assert proc.returncode == 0, proc.stderr
    assert "finished an interrupted deploy" in proc.stdout
    pair = dl.deployed()
    assert pair is not None and pair.matches() and pair.fingerprint == new
    assert not _journal(dl) and dl.restarts() == restarts
    again = dl.cli("deploy", "--recover", "--all")
    assert again.returncode == 0 and "nothing to recover" in again.stdout
    # While another deploy holds the lock, --recover returns at once instead of waiting.
    from ntspki.store import fsutil

    with fsutil.locked(deploy.default_lock_path(dl.home)):
        busy = dl.cli("deploy", "--recover", "--all")
    assert busy.returncode == 0 and "nothing to recover" in busy.stdout
    second = dl.cli("deploy", "--all")  # and the regular path serves it
    assert second.returncode == 0, second.stderr
    assert dl.served() == new


@pytest.mark.parametrize("step", ["restored", "restarted-again"])
def test_sigkill_during_rollback_leaves_a_matching_pair(dl, step):
    old = dl.deployed().fingerprint
    new = dl.new_version()
    dl.noop(True)  # the restart does nothing: the probe fails and the rollback starts
    try:
        _kill_at(dl, step)
    finally:
        dl.noop(False)
    pair = dl.deployed()
    assert pair is not None and pair.matches() and pair.fingerprint == old
    assert dl.served() == old
    second = dl.cli("deploy", "--all")
    assert second.returncode == 0, second.stderr
    assert dl.deployed().fingerprint == new == dl.served()


def test_concurrent_deploys_restart_once(dl):
    """Timer, hook and watcher may fire together: the lock serialises them, the second finds the
    certificate deployed and served and does nothing."""
    new = dl.new_version()
    restarts = dl.restarts()
    procs = [
        subprocess.Popen(
            [*NTSPKI, "--home", str(dl.home.path), "deploy", "--all"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    # The result line of each run (progress lines start with "ntspki deploy:").
    results = [next(line for line in o[0].splitlines() if line.startswith("ntpserver: ")) for o in outs]
    statuses = sorted(line.split(":")[1].split()[0] for line in results)
    assert statuses == ["deployed", "unchanged", "unchanged"], outs
    assert dl.restarts() == restarts + 1
    assert dl.served() == new


def test_a_key_type_change_restarts_a_server_that_reloads(dl, monkeypatch):
    """NTPsec reloads on SIGHUP but keeps serving the old key type's certificate after one
    (test_ntpsec.py shows it with a real NTPsec): deploy asks services.needs_restart and restarts
    instead; a run killed after installing such a change owes the next run a restart, not a HUP."""
    from ntspki.issuing import issue

    bindir = dl.root / "fakebin-ntpsec"
    bindir.mkdir()
    log = dl.root / "systemctl-ntpsec.log"
    (bindir / "systemctl").write_text(
        f'#!/bin/sh\necho "$*" >> {log}\n'
        'case "$1" in show) for u; do :; done; [ "$u" = ntpsec.service ] && echo loaded || echo not-found ;; esac\n'
    )
    (bindir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    dest = dl.root / "etc" / "ntpsec" / "nts"
    key, cert = dest / "nsec.key", dest / "nsec.crt"
    conf = dl.root / "ntp.conf"
    conf.write_text(f"nts enable\nnts key {key}\nnts cert {cert}\n")
    target = {"source": "nsec", "service": "ntpsec", "key": str(key), "cert": str(cert), "service_conf": str(conf)}
    dl.write_config({"nsec": {**target, "probe": False}})

    def deploy_with(key_type: str) -> str:
        issue.issue(dl.home, "nsec", ["nsec.example"], key_type=key_type, allow_change=True)
        proc = dl.cli("deploy", "--all")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return log.read_text().splitlines()[-1]

    hup, restart = "kill --signal=HUP --kill-who=main ntpsec.service", "restart ntpsec.service"
    try:
        assert deploy_with("ec-p256") == hup  # the first pair: nothing served to replace
        assert deploy_with("ec-p256") == hup
        assert deploy_with("ed25519") == restart
        assert deploy_with("ed25519") == hup
        issue.issue(dl.home, "nsec", ["nsec.example"], key_type="ec-p384", allow_change=True)
        _kill_at(dl, "installed")
        proc = dl.cli("deploy", "--all")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert log.read_text().splitlines()[-1] == restart
        assert not list(dest.glob(".*ntspki*"))
    finally:
        dl.write_config({"ntpserver": dl.settings(probe_timeout=1)})
