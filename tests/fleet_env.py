"""A multi-host NTS lab on this one machine: every host a network namespace of its own.

    control node   the root namespace (pytest, ansible-playbook), 198.18.0.1 on the lab bridge
    ca             the CA host: ntspki with the site CA, nothing else
    ntp1..ntpN     NTS servers: chronyd (123/udp, 4460/tcp, -x) serving what `ntspki deploy` installs
    client1..M     chrony NTS clients (-x) that the nts_client role points at the servers

Each host is a namespace PREFIX-NAME with a veth pair to the lab bridge (in the root namespace),
an address from 198.18.0.0/24 (RFC 2544 benchmarking range) and one from fd00:f1ee::/64 (ULA), and
runs Debian's sshd on port 22: Ansible reaches every host over real SSH with a key made here.

Namespaces share the file system, so each host gets a directory of its own (ROOT/hosts/NAME)
holding what would be its /etc/ntspki, /etc/chrony and /var/lib/chrony; the inventory tells the
roles where (ntspki_home, chrony_* variables). Names resolve inside the lab through
/etc/netns/NAMESPACE/hosts, which `ip netns exec` bind-mounts over /etc/hosts for sshd and so for
every session Ansible opens. chronyd never touches the clock (-x) and is restarted by a per-host
script (the inventory's restart command, standing in for `systemctl restart chrony`), which a test
can make fail once.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DOMAIN = "fleet.test"  # RFC 2606: never a real name
CHRONYD = shutil.which("chronyd") or "/usr/sbin/chronyd"
CHRONYC = shutil.which("chronyc") or "/usr/bin/chronyc"
SSHD = "/usr/sbin/sshd"


def _run(*cmd, check=True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(map(str, cmd))} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


@dataclass
class Host:
    name: str  # inventory name, also its DNS name without the domain (ntp1)
    role: str  # ca | server | client
    index: int  # host part of its addresses
    netns: str
    dir: Path
    net4: str  # "198.18.N": the lab's /24
    net6: str  # "fd00:f1ee:N::": the lab's /64

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{DOMAIN}"

    @property
    def ip4(self) -> str:
        return f"{self.net4}.{self.index}"

    @property
    def ip6(self) -> str:
        return f"{self.net6}{self.index:x}"

    # what would be this host's own directories
    @property
    def ntspki_home(self) -> Path:
        return self.dir / "etc" / "ntspki"

    @property
    def chrony_dir(self) -> Path:
        return self.dir / "etc" / "chrony"

    @property
    def chronyd_dir(self) -> Path:
        """chronyd's work dir: chronyd.conf, chronyd.log, run/ (pid, command socket), dump/."""
        return self.dir / "chronyd"

    @property
    def chrony_conf(self) -> Path:
        return self.chronyd_dir / "chronyd.conf"

    @property
    def sock(self) -> Path:
        return self.chronyd_dir / "run" / "chronyd.sock"

    @property
    def restart_script(self) -> Path:
        return self.dir / "restart-chronyd"

    @property
    def fail_flag(self) -> Path:
        return self.dir / "fail-next-restart"

    def exec(self, *cmd, check=True, **kw) -> subprocess.CompletedProcess:
        """Run a command on this host (in its namespace, with its /etc/hosts)."""
        return _run("ip", "netns", "exec", self.netns, *cmd, check=check, **kw)

    def chronyc(self, *args) -> str:
        return self.exec(
            CHRONYC, "-h", self.sock, "-n" if "-N" not in args else "-N", *[a for a in args if a != "-N"]
        ).stdout


class FleetLab:
    def __init__(self, root: Path, servers: int = 3, clients: int = 2, prefix: str | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # chronyd's own user traverses it
        tag = secrets.token_hex(2)
        self.prefix = prefix or f"fleet-{tag}"
        self.bridge = f"flbr{tag}"
        # A /24 of the benchmarking range and a /64 of a ULA of its own, so that labs never collide.
        subnet = 1 + int(tag, 16) % 254
        self.net4, self.net6 = f"198.18.{subnet}", f"fd00:f1ee:{subnet:x}::"
        self.hosts: list[Host] = []
        for role, count, base, first in (
            ("ca", 1, "ca", 10),
            ("server", servers, "ntp", 20),
            ("client", clients, "client", 40),
        ):
            for i in range(count):
                name = base if role == "ca" else f"{base}{i + 1}"
                self.hosts.append(
                    Host(
                        name, role, first + i, f"{self.prefix}-{name}", self.root / "hosts" / name, self.net4, self.net6
                    )
                )
        self.ssh_dir = self.root / "ssh"
        self.key = self.ssh_dir / "id_ed25519"
        self.known_hosts = self.ssh_dir / "known_hosts"
        self._veths: list[str] = []

    @property
    def ca(self) -> Host:
        return next(h for h in self.hosts if h.role == "ca")

    @property
    def servers(self) -> list[Host]:
        return [h for h in self.hosts if h.role == "server"]

    @property
    def clients(self) -> list[Host]:
        return [h for h in self.hosts if h.role == "client"]

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    # -- set-up ---------------------------------------------------------------------------------
    def start(self) -> FleetLab:
        try:
            self._network()
            self._ssh()
            for h in self.hosts:
                self._host_files(h)
                if h.role != "ca":
                    self.start_chronyd(h)
        except BaseException:
            self.stop()
            raise
        return self

    def _network(self) -> None:
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.net4}.1/24", "dev", self.bridge)
        _run("ip", "addr", "add", f"{self.net6}1/64", "dev", self.bridge, "nodad")
        _run("ip", "link", "set", self.bridge, "up")
        hosts_file = "127.0.0.1 localhost\n::1 localhost\n" + "".join(
            f"{h.ip4} {h.fqdn} {h.name}\n{h.ip6} {h.fqdn} {h.name}\n" for h in self.hosts
        )
        for i, h in enumerate(self.hosts):
            _run("ip", "netns", "add", h.netns)
            outer, inner = f"{self.bridge}h{i}", f"{self.bridge}n{i}"
            _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            self._veths.append(outer)
            _run("ip", "link", "set", outer, "master", self.bridge, "up")
            _run("ip", "link", "set", inner, "netns", h.netns)
            h.exec("ip", "link", "set", "lo", "up")
            h.exec("ip", "link", "set", inner, "name", "eth0")
            h.exec("ip", "addr", "add", f"{h.ip4}/24", "dev", "eth0")
            h.exec("ip", "addr", "add", f"{h.ip6}/64", "dev", "eth0", "nodad")
            h.exec("ip", "link", "set", "eth0", "up")
            etc = Path("/etc/netns") / h.netns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(hosts_file)
            (etc / "hostname").write_text(h.fqdn + "\n")

    def _ssh(self) -> None:
        self.ssh_dir.mkdir(mode=0o700, exist_ok=True)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ntspki fleet lab", "-f", self.key)
        (self.ssh_dir / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())
        known = []
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        for h in self.hosts:
            h.dir.mkdir(parents=True, exist_ok=True)
            h.dir.chmod(0o755)
            hostkey = h.dir / "ssh_host_ed25519_key"
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostkey)
            pub = " ".join(Path(f"{hostkey}.pub").read_text().split()[:2])
            known.append(f"{h.ip4},{h.ip6},{h.fqdn},{h.name} {pub}\n")
            conf = h.dir / "sshd_config"
            conf.write_text(
                "\n".join(
                    [
                        f"ListenAddress {h.ip4}",
                        f"ListenAddress {h.ip6}",
                        "Port 22",
                        f"HostKey {hostkey}",
                        f"PidFile {h.dir}/sshd.pid",
                        f"AuthorizedKeysFile {self.ssh_dir}/authorized_keys",
                        "PermitRootLogin prohibit-password",
                        "PasswordAuthentication no",
                        "KbdInteractiveAuthentication no",
                        "UsePAM no",
                        "StrictModes no",
                        "Subsystem sftp internal-sftp",
                        "MaxStartups 100",
                        "MaxSessions 100",
                        "",
                    ]
                )
            )
            h.exec(SSHD, "-f", conf, "-E", h.dir / "sshd.log")
        self.known_hosts.write_text("".join(known))

    def _host_files(self, h: Host) -> None:
        for d in (
            h.ntspki_home.parent,
            h.chrony_dir,
            h.chrony_dir / "conf.d",
            h.chrony_dir / "sources.d",
            h.chronyd_dir,
        ):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        if h.role == "ca":
            return
        lines = [
            "port 123" if h.role == "server" else "port 0",
            "cmdport 0",
            f"bindcmdaddress {h.sock}",
            f"pidfile {h.chronyd_dir}/run/chronyd.pid",
            f"driftfile {h.chronyd_dir}/drift",
        ]
        if h.role == "server":
            lines += [
                "ntsport 4460",
                "allow all",
                "local stratum 8",
                f"ntsdumpdir {h.chronyd_dir}/dump",
                f"ntsserverkey {h.chrony_dir}/nts/{h.fqdn}.key",
                f"ntsservercert {h.chrony_dir}/nts/{h.fqdn}.crt",
            ]
        else:
            # the site's own chrony.conf: the nts_client role only adds files to these directories
            lines += [f"confdir {h.chrony_dir}/conf.d", f"sourcedir {h.chrony_dir}/sources.d", "nosystemcert"]
        h.chrony_conf.write_text("\n".join(lines) + "\n")
        q = shlex.quote
        pidfile = h.chronyd_dir / "run" / "chronyd.pid"
        h.restart_script.write_text(f"""#!/bin/sh
# The lab's `systemctl restart chrony` for {h.name}: stop chronyd, start it again (-x: never the clock).
if [ -e {q(str(h.fail_flag))} ]; then
    rm -f {q(str(h.fail_flag))}
    echo "restart of chronyd on {h.name} failed (lab fault injection)" >&2
    exit 1
fi
if pid=$(cat {q(str(pidfile))} 2>/dev/null) && kill "$pid" 2>/dev/null; then
    # gone, or a zombie the container's init has not reaped yet
    while [ -e /proc/"$pid" ] && ! grep -q '^[0-9]* (.*) Z' /proc/"$pid"/stat 2>/dev/null; do sleep 0.02; done
fi
mkdir -p {q(str(h.chronyd_dir / "run"))} {q(str(h.chronyd_dir / "dump"))}
chown _chrony:_chrony {q(str(h.chronyd_dir / "run"))} {q(str(h.chronyd_dir / "dump"))}
chmod 0770 {q(str(h.chronyd_dir / "run"))}; chmod 0700 {q(str(h.chronyd_dir / "dump"))}
exec {CHRONYD} -x -u _chrony -f {q(str(h.chrony_conf))} -l {q(str(h.chronyd_dir / "chronyd.log"))}
""")
        h.restart_script.chmod(0o755)

    def start_chronyd(self, h: Host) -> None:
        h.exec(h.restart_script)

    def make_ca(self) -> None:
        """The site CA on the CA host, constrained to the lab's names and networks."""
        from tests.conftest import run_cli

        run_cli(
            "ca",
            "create",
            "--no-passphrase",
            "--permit-dns",
            DOMAIN,
            "--permit-ip",
            f"{self.net4}.0/24",
            "--permit-ip",
            f"{self.net6}/64",
            home=self.ca.ntspki_home,
            check=True,
        )

    def cli(self, h: Host, *args) -> object:
        """`ntspki --home HOST_HOME ARGS --json` (on the shared file system), parsed."""
        from tests.conftest import run_cli

        return json.loads(run_cli(*args, home=h.ntspki_home, check=True).stdout)

    # -- Ansible --------------------------------------------------------------------------------
    def inventory(self, **extra_vars) -> Path:
        """The lab's inventory: each host's own paths, its restart command, the SSH key."""
        py = sys.executable
        common = {
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_python_interpreter": py,
            "ntspki_command": [py, "-m", "ntspki"],
            "ntspki_control_command": [py, "-m", "ntspki"],
            "ntspki_control_root": str(self.root / "control" / "site-root.pem"),
            "chrony_group": "_chrony",
            **extra_vars,
        }

        def host_vars(h: Host) -> dict:
            v = {"ansible_host": h.ip4, "ntspki_home": str(h.ntspki_home)}
            if h.role != "ca":
                v.update(chrony_conf=str(h.chrony_conf), chrony_restart_command=str(h.restart_script))
            if h.role == "server":
                v.update(ntspki_sans=[h.ip4, h.ip6], chrony_nts_dir=str(h.chrony_dir / "nts"), ntspki_probe_timeout=5)
            if h.role == "client":
                v.update(
                    chrony_trust_file=str(h.chrony_dir / "ntspki-site-root.pem"),
                    chrony_confdir=str(h.chrony_dir / "conf.d"),
                    chrony_sourcedir=str(h.chrony_dir / "sources.d"),
                    chronyc_command=[CHRONYC, "-h", str(h.sock)],
                    # poll every 2 s so that a test sees NTS kept (or lost) during a rollout
                    ntspki_server_options="minpoll 1 maxpoll 1",
                    ntspki_verify_delay=1,
                )
            return v

        groups = {"ntspki_ca": [self.ca], "nts_servers": self.servers, "nts_clients": self.clients}
        inv = {
            "all": {
                "vars": common,
                "children": {g: {"hosts": {h.fqdn: host_vars(h) for h in hosts}} for g, hosts in groups.items()},
            }
        }
        path = self.root / "inventory.json"
        path.write_text(json.dumps(inv, indent=2))
        return path

    def ansible_env(self) -> dict:
        cfg = self.root / "ansible.cfg"
        cfg.write_text(
            "\n".join(
                [
                    "[defaults]",
                    "host_key_checking = True",
                    "forks = 10",
                    "interpreter_python = " + sys.executable,
                    f"collections_path = {self.root / 'collections'}",
                    "retry_files_enabled = False",
                    "[ssh_connection]",
                    "pipelining = True",
                    f"ssh_args = -o UserKnownHostsFile={self.known_hosts} -o ControlMaster=auto -o ControlPersist=30s "
                    "-o IdentitiesOnly=yes -o BatchMode=yes",
                    f"control_path = {self.ssh_dir}/cm-%%C",
                    "",
                ]
            )
        )
        return {**os.environ, "ANSIBLE_CONFIG": str(cfg)}

    # -- teardown -------------------------------------------------------------------------------
    def stop(self) -> None:
        for h in self.hosts:
            for pidfile in (h.dir / "sshd.pid", h.chronyd_dir / "run" / "chronyd.pid"):
                try:
                    os.kill(int(pidfile.read_text().split()[0]), signal.SIGTERM)
                except (OSError, ValueError, IndexError):
                    pass
        # ssh control masters the playbooks left behind
        for sock in self.ssh_dir.glob("cm-*") if self.ssh_dir.exists() else []:
            _run("ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x", check=False)
        for h in self.hosts:
            _run("ip", "netns", "del", h.netns, check=False)
            shutil.rmtree(Path("/etc/netns") / h.netns, ignore_errors=True)
        _run("ip", "link", "del", self.bridge, check=False)
