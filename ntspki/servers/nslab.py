"""Servers in namespaces, for the tests: a real NTPsec on its standard ports, and chronyd the way a
container runs it. Neither can touch the system clock.

- `Netns`: a network namespace with loopback up and a veth pair to the host, addresses from
  198.19.123.0/24 (inside the 198.18.0.0/15 benchmark range), so the host reaches the server at
  `netns.address` on standard ports without ever binding them itself.
- `NtpsecServer`: Debian's ntpd (extracted from its .deb by `make ntpsec`, since the package
  conflicts with chrony) serving NTS on 4460/tcp and 123/udp inside a Netns. It runs as user `ntp`
  mapped to root of a user namespace of its own: the capabilities it keeps there (it insists on
  CAP_SYS_TIME when it drops root) are worthless against the real clock, and it reads its key and
  certificate with `ntp`'s real permissions.
- `ContainerChrony`: a container stand-in: chronyd in its own mount, PID and network namespaces,
  running as a uid that exists only in the bind-mounted /etc/passwd "inside", reading its key and
  certificate from a directory bind-mounted read-only, with a writable "volume" for ntsdumpdir.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ntspki.nts import NTP_PORT, NTSKE_PORT
from ntspki.servers import lab

NTPSEC_ROOT = Path(os.environ.get("NTSPKI_NTPSEC_ROOT", "/var/cache/ntspki/ntpsec/root"))
NTPD = NTPSEC_ROOT / "usr/sbin/ntpd"
NTPSEC_USER = "ntp"
SUBNET = "198.19.123"  # /30 per namespace: .4i+1 inside, .4i+2 on the host


def ntpd_available() -> bool:
    return NTPD.is_file() and os.access(NTPD, os.X_OK)


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


class Netns:
    """A named network namespace (the name should start with the owner's prefix) joined to the
    host by a veth pair; `index` (0-62) picks its /30."""

    def __init__(self, name: str, index: int):
        if not 0 <= index < 63:
            raise ValueError("index must be 0-62")
        self.name, self.index = name, index
        self.address = f"{SUBNET}.{4 * index + 1}"
        self.host_address = f"{SUBNET}.{4 * index + 2}"
        self.veth = f"{name[:11]}-h"

    def create(self) -> Netns:
        self.delete()  # a namespace left by a killed run
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.name)
            _ip("addr", "add", f"{self.host_address}/30", "dev", self.veth)
            _ip("link", "set", self.veth, "up")
            _ip("-n", self.name, "addr", "add", f"{self.address}/30", "dev", "eth0")
            _ip("-n", self.name, "link", "set", "eth0", "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
            # NTPsec binds 123 and 4460 as root of its own user namespace, which has no say here.
            self.run(["sysctl", "-qw", "net.ipv4.ip_unprivileged_port_start=0"], check=True)
        except Exception:
            self.delete()
            raise
        return self

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "delete", self.veth], capture_output=True, timeout=30)

    def cmd(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 60)
        return subprocess.run(self.cmd(argv), **kw)

    def __enter__(self) -> Netns:
        return self.create()

    def __exit__(self, *exc) -> None:
        self.delete()


def wait_port(host: str, port: int, timeout: float, alive=lambda: True, log=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            if not alive():
                raise RuntimeError(f"server exited: {log()[-2000:]}")
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout:.0f} s: {log()[-2000:]}")


def _stop_pid(pid: int | None, name: bytes, timeout: float = 10.0) -> None:
    if pid is None:
        return
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if name not in f.read():
                return  # not ours (any more): never signal a recycled pid
        os.kill(pid, signal.SIGTERM)
    except (OSError, ProcessLookupError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and lab._alive(pid):
        time.sleep(0.02)
    if lab._alive(pid):
        os.kill(pid, signal.SIGKILL)


# ---- NTPsec -----------------------------------------------------------------------------------------


class NtpsecServer:
    """ntpd serving NTS with `key` and `cert` inside `netns`, on 4460/tcp and 123/udp."""

    def __init__(self, key: Path | str, cert: Path | str, netns: Netns, workdir: Path | str | None = None):
        self.key, self.cert, self.netns = Path(key), Path(cert), netns
        self.workdir = Path(workdir) if workdir else lab.make_workdir("ntspki-ntpsec-")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)
        self.state = self.workdir / "state"  # written by ntpd: cookie keys, drift, pid
        self.conf_path = self.workdir / "ntp.conf"
        self.log_path = self.workdir / "ntpd.log"
        self.pid_path = self.state / "ntpd.pid"
        self.conf_path.write_text(
            "\n".join(
                [
                    "nts enable",
                    f"nts key {self.key}",
                    f"nts cert {self.cert}",
                    f"nts cookie {self.state}/nts-keys",
                    f"driftfile {self.state}/drift",
                    "disable kernel",
                    "tos orphan 8 orphanwait 0",  # serve stratum 8 with no upstream
                ]
            )
            + "\n"
        )

    @property
    def pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self) -> bool:
        pid = self.pid
        return pid is not None and lab._alive(pid)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, timeout: float = 15.0) -> NtpsecServer:
        pw = lab.pwd.getpwnam(NTPSEC_USER)
        self.state.mkdir(exist_ok=True)
        os.chown(self.state, pw.pw_uid, pw.pw_gid)
        self.log_path.touch()
        os.chown(self.log_path, pw.pw_uid, pw.pw_gid)
        self.pid_path.unlink(missing_ok=True)
        argv = [
            "setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
            "--bounding-set=-sys_time", "--inh-caps=-sys_time",
            "unshare", "--map-root-user",
            str(NTPD), "-c", str(self.conf_path), "-l", str(self.log_path), "-p", str(self.pid_path),
        ]  # fmt: skip
        self.netns.run(argv, check=True, timeout=timeout)
        deadline = time.monotonic() + timeout
        while self.pid is None and time.monotonic() < deadline:
            time.sleep(0.05)
        wait_port(self.netns.address, NTSKE_PORT, max(1.0, deadline - time.monotonic()), self.running, self.log)
        self.wait_serving(max(1.0, deadline - time.monotonic()))
        return self

    def wait_serving(self, timeout: float) -> None:
        """Until NTP answers with a stratum (in orphan mode NTPsec says INIT for about a second)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(0.3)
                try:
                    s.sendto(b"\x23" + bytes(47), (self.netns.address, NTP_PORT))  # NTPv4 client request
                    if 0 < s.recv(512)[1] < 16:
                        return
                except OSError:
                    pass
            time.sleep(0.2)
        raise RuntimeError(f"NTPsec does not serve time after {timeout:.0f} s: {self.log()[-2000:]}")

    def reload_command(self) -> str:
        """What `systemctl kill --signal=HUP ntpsec` does on a real host."""
        return f"kill -HUP {self.pid}"

    def restart(self) -> NtpsecServer:
        self.stop()
        return self.start()

    def stop(self) -> None:
        _stop_pid(self.pid, b"ntpd")

    def __enter__(self) -> NtpsecServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---- chronyd as a container runs it ------------------------------------------------------------------


DEFAULT_CONTAINER_CONF = """ntsserverkey /etc/chrony/nts/ntpserver.key
ntsservercert /etc/chrony/nts/ntpserver.crt
ntsdumpdir /var/lib/chrony
allow all
"""
LAB_CONTAINER_LINES = (
    "local stratum 8\ncmdport 0\nbindcmdaddress /var/lib/chrony/chronyd.sock\npidfile /var/lib/chrony/chronyd.pid\n"
)


class ContainerChrony:
    """chronyd in fresh mount, PID and network namespaces ("the container"), as user `user` with
    uid/gid `uid` that exists only in the /etc/passwd and /etc/group bind-mounted inside.

    Inside, the host's `deploy_dir` is /etc/chrony/nts (read-only) and `workdir/volume` is
    /var/lib/chrony (ntsdumpdir): the layout of examples/docker/. `restart_command()` is the
    stand-in for `docker restart ntp`; everything it needs is in `workdir/container.json`."""

    def __init__(self, deploy_dir: Path | str, netns: Netns, workdir: Path | str, uid: int, user: str = "_chrony",
                 conf_text: str | None = None):  # fmt: skip
        self.deploy_dir, self.netns, self.workdir = Path(deploy_dir), netns, Path(workdir)
        self.uid, self.user = uid, user
        # The container's chrony.conf, plus what a lab needs: no upstream, no shared command socket.
        self.conf_text = (conf_text or DEFAULT_CONTAINER_CONF) + LAB_CONTAINER_LINES
        self.volume = self.workdir / "volume"
        self.etc = self.workdir / "etc"
        self.conf_path = self.etc / "chrony.conf"
        self.log_path = self.workdir / "chronyd.log"
        self.pid_path = self.workdir / "unshare.pid"

    def prepare(self) -> ContainerChrony:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)
        self.volume.mkdir(exist_ok=True)
        os.chown(self.volume, self.uid, self.uid)
        self.volume.chmod(0o750)  # chronyd refuses a world-readable socket directory
        self.etc.mkdir(exist_ok=True)
        (self.etc / "passwd").write_text(
            f"root:x:0:0:root:/root:/bin/sh\n{self.user}:x:{self.uid}:{self.uid}::/var/lib/chrony:/usr/sbin/nologin\n"
        )
        (self.etc / "group").write_text(f"root:x:0:\n{self.user}:x:{self.uid}:\n")
        self.conf_path.write_text(self.conf_text)
        state = {"deploy_dir": str(self.deploy_dir), "netns": self.netns.name, "index": self.netns.index,
                 "uid": self.uid, "user": self.user}  # fmt: skip
        (self.workdir / "container.json").write_text(json.dumps(state))
        return self

    @classmethod
    def existing(cls, workdir: Path | str) -> ContainerChrony:
        state = json.loads((Path(workdir) / "container.json").read_text())
        server = cls(state["deploy_dir"], Netns(state["netns"], state["index"]), workdir, state["uid"], state["user"])
        server.conf_text = server.conf_path.read_text()
        return server

    def _script(self) -> str:
        """Run inside the new namespaces: private mounts, then chronyd in the foreground (PID 1)."""
        q = shlex.quote
        return " && ".join(
            [
                "mount --make-rprivate /",
                f"mount --bind {q(str(self.etc / 'passwd'))} /etc/passwd",
                f"mount --bind {q(str(self.etc / 'group'))} /etc/group",
                "mount -t tmpfs -o mode=0755 tmpfs /etc/chrony",
                "mkdir /etc/chrony/nts",
                f"mount --bind -o ro {q(str(self.deploy_dir))} /etc/chrony/nts",
                f"mount --bind {q(str(self.volume))} /var/lib/chrony",
                f"exec {q(lab.CHRONYD)} -d -x -u {q(self.user)} -f {q(str(self.conf_path))}",
            ]
        )

    @property
    def pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        pid = self.pid
        return pid is not None and lab._alive(pid)

    def start(self, timeout: float = 15.0) -> ContainerChrony:
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(
                self.netns.cmd(["unshare", "--mount", "--pid", "--fork", "--kill-child=SIGTERM", "--mount-proc",
                                "sh", "-c", self._script()]),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        self.pid_path.write_text(str(proc.pid))
        wait_port(self.netns.address, NTSKE_PORT, timeout, lambda: proc.poll() is None, self.log)
        return self

    def init_pid(self) -> int | None:
        """The container's PID 1 (chronyd), as the host sees it: unshare's only child."""
        pid = self.pid
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                children = f.read().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def stop(self, timeout: float = 10.0) -> None:
        """Like `docker stop`: SIGTERM to the container's init; when it exits the kernel ends the
        PID namespace and unshare exits. (unshare ignores SIGTERM, and chronyd's parent-death signal
        is cleared when it drops root, so signalling unshare would leave chronyd running.)"""
        pid = self.pid
        if pid is None:
            return
        _stop_pid(self.init_pid(), b"chronyd", timeout)
        _stop_pid(pid, b"unshare", timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # the port closes when chronyd has gone
            try:
                socket.create_connection((self.netns.address, NTSKE_PORT), timeout=0.2).close()
                time.sleep(0.05)
            except OSError:
                return

    def restart(self) -> ContainerChrony:
        self.stop()
        return self.start()

    def restart_command(self) -> str:
        """The stand-in for `docker restart ntp`."""
        return f"{shlex.quote(sys.executable)} -m ntspki.servers.nslab restart {shlex.quote(str(self.workdir))}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def credentials_failed(self) -> bool:
        return "Could not set credentials" in self.log()

    def __enter__(self) -> ContainerChrony:
        return self.prepare().start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ntspki.servers.nslab")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("restart", help="restart the container stand-in in WORKDIR").add_argument("workdir")
    args = parser.parse_args(argv)
    try:
        ContainerChrony.existing(args.workdir).restart()
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as e:
        print(f"restart failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
