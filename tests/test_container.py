"""chrony in a container, without a container runtime: a chronyd in its own mount, PID and network
namespaces, running as a uid that exists only "inside" (numeric on the host), reading its key and
certificate from a directory bind-mounted read-only, with ntsdumpdir on a "volume". ntspki deploy,
told the container's uid/gid by number (as examples/docker/deploy.toml does), gives the key to that
uid and nobody else, restarts the container and proves the new certificate is served."""

from __future__ import annotations

import json
import os
import pwd
import stat
from pathlib import Path

import pytest

from ntspki.issuing import issue
from ntspki.nts.probe import probe
from ntspki.servers import lab, nslab
from tests.conftest import make_site, run_cli

UID = 20123  # chronyd's uid inside the container: no such user on the host
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "docker"


def example_conf() -> str:
    """examples/docker/chrony.conf without its Internet upstreams (the lab has none)."""
    return "".join(
        line + "\n" for line in (EXAMPLES / "chrony.conf").read_text().splitlines() if not line.startswith("server ")
    )


@pytest.fixture
def netns():
    with nslab.Netns("servers-ctr", 3) as ns:
        yield ns


def _deploy_toml(path: Path, deploy_dir: Path, container: nslab.ContainerChrony, addr: str, group: str | None):
    """The [targets.ntp] of examples/docker/deploy.toml, with this test's paths and restart command."""
    text = (EXAMPLES / "deploy.toml").read_text()
    text = text.replace("/srv/ntp/nts", str(deploy_dir)).replace(
        '"docker restart ntp"', json.dumps(container.restart_command())
    )
    text = text.replace("127.0.0.1:4460", f"{addr}:4460").replace("/srv/ntp/chrony.conf", str(container.conf_path))
    if group is None:
        text = "\n".join(line for line in text.splitlines() if not line.startswith(("group", "server_user")))
    path.write_text(text + "\n")
    return path


def test_container_reads_a_key_only_its_uid_may_read(netns, workdir):
    assert UID not in {p.pw_uid for p in pwd.getpwall()}
    addr = netns.address
    site = make_site(workdir / "home")
    issue.issue(site.home, "ntpserver", ["ntpserver-ipv6", addr], "ec-p256", allow_change=True)
    deploy_dir = workdir / "ntp" / "nts"
    deploy_dir.mkdir(parents=True)
    container = nslab.ContainerChrony(deploy_dir, netns, workdir / "container", UID, conf_text=example_conf()).prepare()
    config = _deploy_toml(workdir / "deploy.toml", deploy_dir, container, addr, group=str(UID))
    try:
        proc = run_cli("deploy", "--all", "--config", config, home=site.home.path)
        assert proc.returncode == 0, proc.stdout + proc.stderr + container.log()
        assert container.running() and not container.credentials_failed(), container.log()
        key = deploy_dir / "ntpserver.key"
        st = key.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, UID, 0o640)
        # Only the container's uid (through its group) and root may read it: not the host's chrony user.
        host_chrony = pwd.getpwnam(lab.chrony_user())
        assert host_chrony.pw_gid != UID and not st.st_mode & 0o004
        r = probe(f"{addr}:4460", ca_files=[site.root], name="ntpserver")
        assert r.ok and r.authenticated, r.error
        assert lab.chrony_client(addr, 123, 4460, site.root, timeout=5).ok
        first_pid = container.pid

        renewed = issue.issue(site.home, "ntpserver", ["ntpserver-ipv6", addr], "ec-p256", allow_change=True)
        proc = run_cli("deploy", "--all", "--config", config, home=site.home.path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert container.pid != first_pid  # "docker restart ntp" ran
        assert (container.volume / "ntskeys").exists()  # cookie keys kept on the volume across the restart
        served = probe(f"{addr}:4460", ca_files=[site.root], name="ntpserver", expect_fingerprint=renewed.sha256)
        assert served.ok, served.error
    finally:
        container.stop()


def test_container_without_its_group_cannot_read_the_key(netns, workdir):
    """The classic failure: the key given to the host's chrony group, which the container's uid is
    not in. chronyd inside says "Could not set credentials"; deploy notices and rolls back."""
    addr = netns.address
    site = make_site(workdir / "home")
    issue.issue(site.home, "ntpserver", [addr], "ec-p256", allow_change=True)
    deploy_dir = workdir / "ntp" / "nts"
    deploy_dir.mkdir(parents=True)
    container = nslab.ContainerChrony(deploy_dir, netns, workdir / "container", UID, conf_text=example_conf()).prepare()
    config = _deploy_toml(workdir / "deploy.toml", deploy_dir, container, addr, group=None)
    try:
        proc = run_cli("deploy", "--all", "--config", config, home=site.home.path)
        assert proc.returncode != 0, proc.stdout + proc.stderr
        assert container.credentials_failed(), container.log()
        assert "Error while reading file" in container.log()
    finally:
        container.stop()
    assert os.stat(deploy_dir).st_mode & 0o005 == 0o005  # the directory was never the problem
