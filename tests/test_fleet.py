"""The Ansible collection (examples/ansible) against a real multi-host lab: a CA host, three NTS
servers and two chrony clients, each a network namespace with its own addresses, sshd and chronyd
(see tests/fleet_env.py). Ansible connects over real SSH with a key made for the test.

The tests run in order on one lab: first roll-out, a second run and a check-mode run that change
nothing, a forced renewal rolling through the fleet while a probe loop watches availability,
and a server whose restart fails."""

from __future__ import annotations

import grp
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ntspki.nts import probe as probe_mod
from ntspki.servers.lab import make_workdir
from tests.fleet_env import FleetLab

REPO = Path(__file__).resolve().parent.parent
PLAYBOOKS = REPO / "examples" / "ansible"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
RECAP = re.compile(r"^(\S+)\s*: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@pytest.fixture(scope="module")
def fleet():
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.skip("ansible-core is not installed (pip install -e '.[test]')")
    lab = FleetLab(make_workdir("ntspki-fleet-"), servers=3, clients=2)  # _chrony traverses it
    lab.start()
    try:
        lab.make_ca()
        lab.inventory_path = lab.inventory()
        lab.env = lab.ansible_env()
        yield lab
    finally:
        lab.stop()
        shutil.rmtree(lab.root, ignore_errors=True)


def play(lab: FleetLab, playbook: str, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", lab.inventory_path, str(PLAYBOOKS / playbook), *args],
        capture_output=True,
        text=True,
        env=lab.env,
        timeout=600,
    )
    recap = {
        m[0]: {"ok": int(m[1]), "changed": int(m[2]), "unreachable": int(m[3]), "failed": int(m[4])}
        for m in RECAP.findall(proc.stdout)
    }
    return proc, recap


def output(proc) -> str:
    return proc.stdout[-8000:] + proc.stderr[-3000:]


def served(lab: FleetLab) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for h in lab.servers:
        try:
            out[h.fqdn] = probe_mod.served_fingerprint(h.ip4, 4460, h.fqdn)
        except Exception:
            out[h.fqdn] = None
    return out


def versions(lab: FleetLab) -> dict[str, list[str]]:
    return {h.fqdn: sorted(p.name for p in (h.ntspki_home / "archive" / h.fqdn).glob("cert*.pem")) for h in lab.servers}


def authdata(h) -> dict[str, list[str]]:
    """chronyc -c -N authdata on a client: name -> CSV fields."""
    text = h.exec("chronyc", "-h", h.sock, "-c", "-N", "authdata").stdout
    return {f[0]: f for f in (line.split(",") for line in text.splitlines()) if len(f) >= 10}


def test_site_rolls_out_keys_stay_on_their_servers(fleet):
    proc, recap = play(fleet, "site.yml")
    assert proc.returncode == 0, output(proc)
    assert set(recap) == {h.fqdn for h in fleet.servers + fleet.clients}, output(proc)

    # Every client synchronises over NTS to every server, by name.
    for client in fleet.clients:
        deadline = time.monotonic() + 30
        while True:
            auth = authdata(client)
            ntp = client.exec("chronyc", "-h", client.sock, "-N", "ntpdata").stdout
            sources = client.exec("chronyc", "-h", client.sock, "-c", "-N", "sources").stdout
            good = [
                h.fqdn
                for h in fleet.servers
                if h.fqdn in auth
                and auth[h.fqdn][1] == "NTS"
                and int(auth[h.fqdn][8]) > 0
                and int(auth[h.fqdn][7]) == 0
            ]
            authenticated = ntp.count("Authenticated   : Yes")
            if len(good) == len(fleet.servers) and authenticated == len(fleet.servers) and ",*," in sources:
                break
            assert time.monotonic() < deadline, f"{client.name}: {auth}\n{sources}\n{ntp}"
            time.sleep(1)
        for h in fleet.servers:
            assert re.search(rf"^\^,[*+-],{re.escape(h.fqdn)},", sources, re.M), sources

    # Each key is root:_chrony 0640 where chronyd reads it, and is the key of the served certificate.
    chrony_gid = grp.getgrnam("_chrony").gr_gid
    server_publics = []
    for h in fleet.servers:
        key = h.chrony_dir / "nts" / f"{h.fqdn}.key"
        st = key.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, chrony_gid, 0o640)
        public = serialization.load_pem_private_key(key.read_bytes(), None).public_key()
        leaf = x509.load_pem_x509_certificates((h.chrony_dir / "nts" / f"{h.fqdn}.crt").read_bytes())[0]
        assert leaf.public_key() == public
        server_publics.append(public)
    assert all(served(fleet).values())

    # No server key anywhere but on its server: not on the CA host, not on the control node (the
    # lab's own files, Ansible's directory), not in anything Ansible printed.
    assert "PRIVATE KEY" not in proc.stdout + proc.stderr
    own = [h.dir for h in fleet.servers]
    suspects = [p for p in fleet.root.rglob("*") if p.is_file() and not any(d in p.parents for d in own)]
    suspects += [p for p in (Path.home() / ".ansible").rglob("*") if p.is_file()]
    for path in suspects:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        for block in re.findall(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END [A-Z ]*PRIVATE KEY-----", data, re.S):
            load = serialization.load_ssh_private_key if b"OPENSSH" in block else serialization.load_pem_private_key
            key = load(block, None)
            assert key.public_key() not in server_publics, f"a server's private key is in {path}"
    ca_keys = sorted(p.name for p in fleet.ca.dir.rglob("*.key"))
    assert ca_keys == ["intermediate.key", "root.key"]
    # The CA host's ledger knows what it signed; each server's home knows its own lineage.
    listed = fleet.cli(fleet.ca, "list", "--json")
    assert sorted((r["name"], r["source"]) for r in listed) == [(h.fqdn, "remote") for h in fleet.servers]


def test_second_run_and_check_mode_change_nothing(fleet):
    before = served(fleet), versions(fleet)
    proc, recap = play(fleet, "site.yml")
    assert proc.returncode == 0, output(proc)
    assert {h: r["changed"] for h, r in recap.items()} == dict.fromkeys(recap, 0), output(proc)
    proc, recap = play(fleet, "site.yml", "--check")
    assert proc.returncode == 0, output(proc)
    assert {h: r["changed"] for h, r in recap.items()} == dict.fromkeys(recap, 0), output(proc)
    # Check mode with everything due reports the renewals it would make, and makes none.
    proc, recap = play(fleet, "renew.yml", "--check", "-e", "force=true")
    assert proc.returncode == 0, output(proc)
    assert all(recap[h.fqdn]["changed"] > 0 for h in fleet.servers), output(proc)
    assert (served(fleet), versions(fleet)) == before


class Watch:
    """During a rollout: every 0.2 s, NTS-KE with chain and name checks against every server (from
    the control node), and every client's view of its NTS sources."""

    def __init__(self, lab: FleetLab):
        self.lab, self.samples, self.clients = lab, [], []
        self.trust = probe_mod.trust_store([lab.ca.ntspki_home / "ca" / "root.pem"])
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _one(self, h) -> bool:
        r = probe_mod.probe(f"{h.ip4}:4460", name=h.fqdn, ntp=False, timeout=2, trust=self.trust)
        return r.ok and r.verified

    def _run(self) -> None:
        with ThreadPoolExecutor(len(self.lab.servers)) as pool:
            while not self.stop_flag.is_set():
                ok = list(pool.map(self._one, self.lab.servers))
                self.samples.append((time.monotonic(), ok))
                self.clients.append([authdata(c) for c in self.lab.clients])
                time.sleep(0.2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join(30)


def test_forced_renewal_rolls_through_the_fleet_keeping_service(fleet):
    before_served, before_versions = served(fleet), versions(fleet)
    with Watch(fleet) as watch:
        proc, recap = play(fleet, "renew.yml", "-e", "force=true")
    assert proc.returncode == 0, output(proc)
    after = served(fleet)
    assert all(after[n] and after[n] != before_served[n] for n in after), (before_served, after)
    assert all(len(versions(fleet)[n]) == len(before_versions[n]) + 1 for n in before_versions)
    n = len(fleet.servers)
    valid = [sum(ok) for _, ok in watch.samples]
    assert len(valid) > 20, "the probe loop hardly ran"
    assert min(valid) >= n - 1, f"fewer than {n - 1} servers valid at some moment: {valid}"
    # Every client kept NTS with every server: never a NAK, never out of cookies.
    for i, client in enumerate(fleet.clients):
        for sample in [s[i] for s in watch.clients]:
            for h in fleet.servers:
                fields = sample[h.fqdn]
                assert fields[1] == "NTS" and int(fields[7]) == 0 and int(fields[8]) > 0, (client.name, fields)


def test_failed_restart_rolls_back_and_stops_the_rollout(fleet):
    first, failing, last = fleet.servers[0], fleet.servers[1], fleet.servers[2]
    before_served, before_versions = served(fleet), versions(fleet)
    failing.fail_flag.touch()  # its next restart fails (once), as a broken unit would
    proc, recap = play(fleet, "renew.yml", "-e", "force=true")
    assert proc.returncode != 0, output(proc)
    assert "rolled-back" in proc.stdout, output(proc)
    assert not failing.fail_flag.exists()
    now_served, now_versions = served(fleet), versions(fleet)
    assert now_served[first.fqdn] != before_served[first.fqdn]  # before the failure: renewed
    assert now_served[failing.fqdn] == before_served[failing.fqdn]  # rolled back: the previous one
    assert now_served[last.fqdn] == before_served[last.fqdn]  # after it: untouched
    assert now_versions[last.fqdn] == before_versions[last.fqdn]
    assert last.fqdn not in recap or recap[last.fqdn]["ok"] == 0, output(proc)
    assert not list((last.ntspki_home / "pending").glob("*"))
    # The failed server's previous pair is in place with its owner and modes, and it still works.
    r = probe_mod.probe(f"{failing.ip4}:4460", name=failing.fqdn, ca_files=[fleet.ca.ntspki_home / "ca" / "root.pem"])
    assert r.ok and r.authenticated, r.error
