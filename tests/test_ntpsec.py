"""A real NTPsec (Debian's ntpd, extracted by `make ntpsec`) as the NTS server, in a network
namespace on its standard ports, for every key type ntspki issues: NTPsec loads the key, `ntspki
probe` and a real chrony client authenticate to it, and `ntspki deploy --service ntpsec` reloads it
with SIGHUP (same process, no restart) and the new certificate is served."""

from __future__ import annotations

import os
import pwd

import pytest

from ntspki.issuing import issue
from ntspki.nts.probe import probe
from ntspki.pki import keys
from ntspki.servers import lab, nslab, services
from ntspki.store import fsutil
from tests.conftest import make_site, run_cli

pytestmark = pytest.mark.skipif(not nslab.ntpd_available(), reason=f"no {nslab.NTPD}: run `make ntpsec`")
KEY_TYPES = ["ec-p256", "ec-p384", "ed25519", "rsa-2048", "rsa-3072", "rsa-4096"]


@pytest.fixture(scope="module")
def netns():
    with nslab.Netns("servers-ntpsec", 2) as ns:
        yield ns


def _install(site, workdir, sans):
    """The lineage's current pair where NTPsec reads it: key root:ntp 0640, chain 0644."""
    live = site.home.read_lineage("ntpserver")
    gid = pwd.getpwnam(nslab.NTPSEC_USER).pw_gid
    nts = workdir / "nts"
    nts.mkdir(exist_ok=True)
    nts.chmod(0o755)
    fsutil.atomic_write(nts / "ntpserver.key", live.privkey, 0o640, 0, gid)
    fsutil.atomic_write(nts / "ntpserver.crt", live.fullchain, 0o644, 0, 0)
    return nts / "ntpserver.key", nts / "ntpserver.crt"


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_ntpsec_serves_every_key_type_and_reloads_on_hup(key_type, netns, workdir):
    site = make_site(workdir / "home", leaf_key_type=key_type)
    addr = netns.address
    issue.issue(site.home, "ntpserver", ["ntpserver-ipv6", addr], key_type=key_type, allow_change=True)
    key_path, cert_path = _install(site, workdir, [addr])
    with nslab.NtpsecServer(key_path, cert_path, netns, workdir / "ntpsec") as server:
        log = server.log()
        assert "NTSs: Private Key OK" in log and "ntp_adjtime: Operation not permitted" in log, log
        assert keys.key_type_of(keys.load_private_pem(key_path.read_bytes())) == key_type

        r = probe(f"{addr}:4460", ca_files=[site.root], name="ntpserver", timeout=5)
        assert r.ok and r.authenticated and r.stratum == 8, r.error
        client = lab.chrony_client(addr, 123, 4460, site.root, timeout=5)
        assert client.ok, client.output
        by_name = lab.chrony_client("ntpserver", 123, 4460, site.root, hosts={"ntpserver": addr}, timeout=5)
        assert by_name.ok, by_name.output

        pid = server.pid
        renewed = issue.issue(site.home, "ntpserver", ["ntpserver-ipv6", addr], key_type=key_type, allow_change=True)
        proc = run_cli(
            "deploy", "--lineage", "ntpserver", "--service", "ntpsec",
            "--key", key_path, "--cert", cert_path,
            "--restart-command", server.reload_command(), "--probe", f"{addr}:4460",
            home=site.home.path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "served" in proc.stdout + proc.stderr
        assert server.pid == pid and server.running(), "a reload, not a restart"
        assert server.log().count("Saw SIGHUP") == 1
        served = probe(f"{addr}:4460", ca_files=[site.root], name="ntpserver", expect_fingerprint=renewed.sha256)
        assert served.ok and served.authenticated, served.error
        assert lab.chrony_client(addr, 123, 4460, site.root, timeout=5).ok
        # The deploy used NTPsec's own owner and modes: the key is root:ntp 0640.
        st = key_path.stat()
        assert (st.st_uid, oct(st.st_mode & 0o777)) == (0, "0o640")
        assert st.st_gid == pwd.getpwnam(nslab.NTPSEC_USER).pw_gid


def test_ntpsec_cannot_read_a_root_only_key(netns, workdir, site):
    """NTPsec reads its key as user ntp (here for real, not as root): root:root 0600 fails."""
    addr = netns.address
    issue.issue(site.home, "ntpserver", [addr], key_type="ec-p256", allow_change=True)
    key_path, cert_path = _install(site, workdir, [addr])
    key_path.chmod(0o600)
    os.chown(key_path, 0, 0)
    server = nslab.NtpsecServer(key_path, cert_path, netns, workdir / "ntpsec")
    try:
        with pytest.raises(RuntimeError):
            server.start(timeout=5)
        log = server.log()
        assert "can't load private key" in log and "Permission denied" in log, log
    finally:
        server.stop()


def test_ntpsec_hup_keeps_serving_the_old_key_type(netns, workdir):
    """Why a key-type change needs a restart of NTPsec (services.needs_restart): OpenSSL keeps one
    certificate per key type, so after a HUP with an Ed25519 pair the old EC certificate is still
    handed to clients that prefer ECDSA."""
    site = make_site(workdir / "home")
    addr = netns.address
    old = issue.issue(site.home, "ntpserver", [addr], key_type="ec-p256", allow_change=True)
    key_path, cert_path = _install(site, workdir, [addr])
    with nslab.NtpsecServer(key_path, cert_path, netns, workdir / "ntpsec") as server:
        issue.issue(site.home, "ntpserver", [addr], key_type="ed25519", allow_change=True)
        _install(site, workdir, [addr])
        assert services.needs_restart(services.get("ntpsec"), "ec-p256", "ed25519")
        assert not services.needs_restart(services.get("ntpsec"), "ec-p256", "ec-p256")
        proc = run_cli(
            "deploy", "--lineage", "ntpserver", "--service", "ntpsec", "--key", key_path, "--cert", cert_path,
            "--restart-command", server.reload_command(), "--probe", "none", home=site.home.path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        still = probe(f"{addr}:4460", ca_files=[site.root], timeout=5)
        assert still.sha256 == old.sha256  # the old certificate, although the file holds the new one
        server.restart()
        assert probe(f"{addr}:4460", ca_files=[site.root], timeout=5).sha256 != old.sha256
