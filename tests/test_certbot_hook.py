"""Real certbot 2.1 against real pebble (loopback, real http-01 validation) with ntspki's deploy
hook, and with the watcher: each time chronyd (running as `_chrony`) ends up serving the new
certificate, and the files it reads have its owner, group and modes."""

from __future__ import annotations

import grp
import os
import shlex
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ntspki import deploy, pki
from ntspki.servers import lab
from tests.deploy_env import DeployLab
from tests.test_watch import WatchProcess, wait_for

REPO = Path(__file__).resolve().parent.parent
HOOK = REPO / "hooks" / "ntspki-certbot-deploy-hook"
DOMAIN = "ntp.example.test"


class Certbot:
    def __init__(self, root: Path, pebble):
        self.root, self.pebble = root, pebble
        self.config_dir = root / "letsencrypt"
        self.live = self.config_dir / "live" / DOMAIN

    def run(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        argv = [
            "certbot",
            "--non-interactive",
            "--config-dir",
            str(self.config_dir),
            "--work-dir",
            str(self.root / "certbot-work"),
            "--logs-dir",
            str(self.root / "certbot-logs"),
            "--server",
            self.pebble.directory_url,
            *args,
        ]
        full_env = {**os.environ, "REQUESTS_CA_BUNDLE": str(self.pebble.ca_bundle), **(env or {})}
        proc = subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def certonly(self, *args: str, env=None):
        return self.run(
            "certonly",
            "--agree-tos",
            "--register-unsafely-without-email",
            "--standalone",
            "--http-01-port",
            str(self.pebble.http_port),
            "--http-01-address",
            "127.0.0.1",
            "-d",
            DOMAIN,
            *args,
            env=env,
        )

    def renew(self, *args: str, env=None):
        return self.run("renew", "--force-renewal", "--no-random-sleep-on-renew", *args, env=env)

    def fingerprint(self) -> str:
        return pki.fingerprint(pki.load_certs((self.live / "cert.pem").read_bytes())[0])

    def log(self) -> str:
        return (self.root / "certbot-logs" / "letsencrypt.log").read_text()


@pytest.fixture(scope="module")
def bed(pebble):
    dl = DeployLab()
    dl.certbot = Certbot(dl.root, pebble)
    dl.pebble_root = dl.root / "pebble-root.pem"
    dl.pebble_root.write_bytes(pebble.root_pem())
    dl.write_config({"ntp": dl.settings(source=str(dl.certbot.live), ca=str(dl.pebble_root), probe_name=DOMAIN)})
    yield dl
    dl.stop()


def _owner_modes(dl):
    return [(os.stat(p).st_uid, os.stat(p).st_gid, stat.S_IMODE(os.stat(p).st_mode)) for p in (dl.key, dl.cert)]


def test_certbot_certonly_then_renew_each_time_chronyd_serves_the_new_certificate(bed):
    hook_dir = bed.certbot.config_dir / "renewal-hooks" / "deploy"
    hook_dir.mkdir(parents=True, exist_ok=True)  # as certbot makes it on its first run
    installed = bed.cli("hook", "install", "certbot", "--dir", hook_dir, check=True)
    assert "installed" in installed.stdout
    hook = hook_dir / "ntspki"
    assert os.access(hook, os.X_OK) and sys.executable in hook.read_text()

    # certonly with the hook straight from the source tree (ntspki given through $NTSPKI).
    env = {"NTSPKI": shlex.join([sys.executable, "-m", "ntspki", "--home", str(bed.home.path)])}
    restarts = bed.restarts()
    bed.certbot.certonly("--deploy-hook", str(HOOK), env=env)
    first = bed.certbot.fingerprint()
    assert bed.served() == first and bed.deployed().fingerprint == first
    assert bed.restarts() == restarts + 1
    chrony = grp.getgrnam("_chrony").gr_gid
    assert _owner_modes(bed) == [(0, chrony, 0o640), (0, chrony, 0o644)]
    assert f"ntspki hook: certbot renewed {DOMAIN} in {bed.certbot.live}" in bed.certbot.log()
    client = lab.chrony_client(
        DOMAIN, bed.server.ntp_port, bed.server.nts_port, bed.pebble_root, hosts={DOMAIN: "127.0.0.1"}
    )
    assert client.ok, client.output

    # renew: certbot runs the saved hook and the installed one; the lock and the "already served"
    # check make that one restart.
    restarts = bed.restarts()
    bed.certbot.renew(env=env)
    second = bed.certbot.fingerprint()
    assert second != first
    assert bed.served() == second and bed.deployed().fingerprint == second
    assert bed.restarts() == restarts + 1
    assert _owner_modes(bed) == [(0, chrony, 0o640), (0, chrony, 0o644)]


def test_watcher_deploys_a_certbot_renewal_without_any_hook(bed):
    w = WatchProcess(bed.home.path, "--debounce", "0.1")
    try:
        wait_for(lambda: "watching" in w.log() and "unchanged" in w.log(), 15, "the watcher to start", w)
        restarts = bed.restarts()
        started = time.monotonic()
        bed.certbot.renew("--no-directory-hooks", "--deploy-hook", "true")
        new = bed.certbot.fingerprint()
        wait_for(lambda: bed.served() == new, 15, "the renewal to be served", w)
        assert time.monotonic() - started < 15
        assert bed.restarts() == restarts + 1
        assert "source changed" in w.log()
    finally:
        assert w.stop() == 0


def test_hook_contract(bed, tmp_path):
    # The file in hooks/ is what `hook install` writes, with the plain `ntspki` command.
    assert HOOK.read_text() == deploy.certbot_hook_script()
    assert os.access(HOOK, os.X_OK)
    proc = subprocess.run([str(HOOK)], capture_output=True, text=True, env={**os.environ, "RENEWED_LINEAGE": ""})
    assert proc.returncode == 2 and "RENEWED_LINEAGE is not set" in proc.stderr
    env = {
        **os.environ,
        "RENEWED_LINEAGE": str(tmp_path / "live" / "other"),
        "RENEWED_DOMAINS": "other.test",
        "NTSPKI": shlex.join([sys.executable, "-m", "ntspki", "--home", str(bed.home.path)]),
    }
    proc = subprocess.run([str(HOOK)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "no target uses" in proc.stdout, proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr  # certbot logs a hook's stderr as error output
    # install: never into a directory that does not exist (a mistyped --dir), idempotent, refuses
    # to overwrite something else unless forced.
    d = tmp_path / "hooks"
    proc = bed.cli("hook", "install", "certbot", "--dir", d)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and not d.exists()
    d.mkdir()
    assert "installed" in bed.cli("hook", "install", "certbot", "--dir", d, check=True).stdout
    assert "already installed" in bed.cli("hook", "install", "certbot", "--dir", d, check=True).stdout
    (d / "ntspki").write_text("#!/bin/sh\necho mine\n")
    proc = bed.cli("hook", "install", "certbot", "--dir", d)
    assert proc.returncode == 1 and "--force" in proc.stderr
    assert (d / "ntspki").read_text() == "#!/bin/sh\necho mine\n"
    assert bed.cli("hook", "install", "certbot", "--dir", d, "--force").returncode == 0
    assert stat.S_IMODE(os.stat(d / "ntspki").st_mode) == 0o755
