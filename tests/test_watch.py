"""`ntspki watch` (the real CLI, in the background) against a real chronyd running as `_chrony`:
new versions are deployed and served without any command, half-switched lineages are waited
for, invalid ones are skipped, SIGHUP re-reads the config, SIGTERM stops it."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509

from ntspki import deploy, pki
from ntspki.issuing import ca as ca_mod
from ntspki.nts.ntske import ProtocolError
from ntspki.pki import keys
from ntspki.store import fsutil
from tests.conftest import NTSPKI
from tests.deploy_env import DeployLab


class WatchProcess:
    def __init__(self, home: Path, *args: str):
        self.log_path = Path(home) / f"watch-{time.monotonic_ns()}.log"
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [*NTSPKI, "--home", str(home), "watch", *args], stdout=self.log_file, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        finally:
            self.log_file.close()


def wait_for(condition, timeout: float, what: str, watcher: WatchProcess | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except ProtocolError:  # chronyd is restarting: nothing served for a moment
            value = None
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{watcher.log()}" if watcher else ""))


@pytest.fixture(scope="module")
def dl():
    bed = DeployLab()
    yield bed
    bed.stop()


def _served_is(dl, fp):
    return lambda: dl.served() == fp


def test_watcher_deploys_without_any_command(dl):
    dl.write_config()
    missed = dl.new_version()  # renewed while no watcher was running
    w = WatchProcess(dl.home.path, "--debounce", "0.1")
    try:
        wait_for(_served_is(dl, missed), 15, "the catch-up deploy", w)
        for _ in range(2):
            fp = dl.new_version()
            wait_for(_served_is(dl, fp), 10, "the new version to be served", w)
        assert dl.deployed().fingerprint == fp
        assert w.alive()
    finally:
        assert w.stop() == 0
    log = w.log()
    assert "catching up on start" in log and "source changed" in log and "stopped" in log


def _next_version_files(dl, expired: bool = False) -> tuple[bytes, bytes, bytes]:
    ca = ca_mod.load(dl.home)
    key = keys.generate("ec-p256")
    sans = [x509.DNSName("ntpserver"), x509.DNSName("ntpserver-ipv6")]
    cert = pki.make_leaf(key, ca.intermediate, ca.intermediate_key, sans)
    if expired:
        now = pki.now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(cert.subject)
            .issuer_name(ca.intermediate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=10))
            .not_valid_after(now - dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca.intermediate_key, keys.signature_hash(ca.intermediate_key))
        )
    return keys.private_pem(key), pki.cert_pem(cert), ca.chain_pem


def test_half_switched_lineage_is_waited_for_and_invalid_material_skipped(dl):
    dl.write_config()
    w = WatchProcess(dl.home.path, "--debounce", "0.1")
    try:
        wait_for(lambda: "watching" in w.log(), 10, "the watcher to start", w)
        start = dl.deployed().fingerprint
        wait_for(_served_is(dl, start), 10, "the start-up state", w)
        # Switch the links one by one, slower than the debounce, the way a slow renewal would.
        key_pem, cert_pem, chain_pem = _next_version_files(dl)
        version = max(dl.home.versions("ntpserver")) + 1
        archive, live = dl.home.archive / "ntpserver", dl.home.live / "ntpserver"
        content = {"privkey": key_pem, "cert": cert_pem, "chain": chain_pem, "fullchain": cert_pem + chain_pem}
        for kind, data in content.items():
            fsutil.atomic_write(archive / f"{kind}{version}.pem", data, 0o600)
        seen = set()
        for kind in list(content)[:-1]:
            fsutil.atomic_symlink(f"../../archive/ntpserver/{kind}{version}.pem", live / f"{kind}.pem")
            end = time.monotonic() + 0.4
            while time.monotonic() < end:
                pair = dl.deployed()
                assert pair is not None, "destinations never hold a mismatched pair"
                seen.add(pair.fingerprint)
                time.sleep(0.01)
        assert seen == {start}, "nothing is deployed before the last link switched"
        fsutil.atomic_symlink(f"../../archive/ntpserver/fullchain{version}.pem", live / "fullchain.pem")
        new = pki.fingerprint(pki.load_certs(cert_pem)[0])
        wait_for(_served_is(dl, new), 10, "the completed lineage to be served", w)

        # An expired certificate: refused, logged, skipped; the watcher keeps running.
        bad_key, bad_cert, chain_pem = _next_version_files(dl, expired=True)
        with dl.home.lock():
            dl.home.write_version("ntpserver", bad_key, bad_cert, chain_pem)
        wait_for(lambda: "refused" in w.log() and "expired" in w.log(), 10, "the refusal in the log", w)
        assert w.alive() and dl.served() == new and dl.deployed().fingerprint == new

        # SIGHUP re-reads the config: a second target appears and is deployed.
        good = dl.new_version()
        wait_for(_served_is(dl, good), 10, "the good version after a bad one", w)
        copy = dl.root / "etc" / "watch-copy"
        dl.write_config(
            {
                "ntpserver": dl.settings(),
                "copy": dl.settings(
                    cert=str(copy / "c.crt"),
                    key=str(copy / "c.key"),
                    probe=False,
                    restart_command="true",
                    service_conf=False,
                ),
            }
        )
        w.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: (copy / "c.crt").exists(), 10, "the reloaded config's new target", w)
        assert "re-reading the config" in w.log() and w.alive()
    finally:
        assert w.stop() == 0
        dl.write_config()


def test_poll_mode_under_systemd_notify_and_journald(dl, tmp_path):
    """--poll for NFS and container volumes, where inotify sees nothing; run the way the example
    unit runs it (Type=notify: READY=1 after the catch-up deploy; journald priority prefixes)."""
    out = dl.root / "etc" / "polled"
    cfg = tmp_path / "deploy.toml"
    cfg.write_text(
        f'[targets.polled]\nsource = "ntpserver"\ncert = "{out}/p.crt"\nkey = "{out}/p.key"\n'
        f'restart_command = "true"\nprobe = false\nservice_conf = false\n'
    )
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(15)
    os.environ.update(NOTIFY_SOCKET=str(tmp_path / "notify"), JOURNAL_STREAM="8:1234")
    try:
        w = WatchProcess(dl.home.path, "--config", str(cfg), "--poll", "--poll-interval", "0.2", "--debounce", "0.1")
    finally:
        del os.environ["NOTIFY_SOCKET"], os.environ["JOURNAL_STREAM"]
    try:
        assert notify.recv(100) == b"READY=1"
        assert (out / "p.crt").exists(), "READY comes after the catch-up deploy"
        fp = dl.new_version()
        wait_for(
            lambda: (p := deploy.read_pair(out / "p.key", out / "p.crt")) and p.fingerprint == fp,
            10,
            "the polled change to be deployed",
            w,
        )
    finally:
        assert w.stop() == 0
    assert notify.recv(100) == b"STOPPING=1"
    notify.close()
    lines = w.log().splitlines()
    assert lines and all(line[:3] in ("<6>", "<4>", "<3>") for line in lines), lines
    assert any("polling" in line for line in lines)


def test_watch_without_config_is_a_one_line_error(tmp_path):
    proc = subprocess.run([*NTSPKI, "--home", str(tmp_path), "watch"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("ntspki: error:") and "no deploy config" in proc.stderr
    assert "Traceback" not in proc.stderr
