"""A real chronyd NTS server and a real chrony NTS client on loopback, for the demo, the tests
and the benchmarks. Never touches the system clock (`-x`), never binds anything but 127.0.0.1/::1.

chronyd runs as a daemon (`-l LOGFILE`, pidfile in the work dir), the way a service manager runs it,
so an outside "restart command" (`python -m ntspki.servers.lab restart WORKDIR`) can restart it exactly as
`systemctl restart chrony` would on a real host.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ntspki.pki import names
from ntspki.servers import services

CHRONYD = shutil.which("chronyd") or "/usr/sbin/chronyd"


def chrony_user() -> str:
    """`_chrony` on Debian/Ubuntu, `chrony` on RHEL/Fedora."""
    return services.get("chrony").user()


def free_port() -> int:
    """A port free for TCP and UDP on 127.0.0.1 and ::1 (chronyd binds both)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 20000:
            continue
        try:
            for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(family, kind) as s:
                        s.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free loopback port")


def make_workdir(prefix: str = "ntspki-lab-") -> Path:
    """A directory chronyd's unprivileged user can traverse (pytest's tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def _alive(pid: int) -> bool:
    """Running, not a zombie: the daemon's parent is init, and a container's PID 1 may take
    seconds to reap it (seen here: chronyd exits in 6 ms, its zombie stays 1.8 s)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _is_chronyd(pid: int) -> bool:
    """Whether pid is (still) a chronyd: never signal a recycled pid."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"chronyd" in f.read().split(b"\0", 1)[0]
    except OSError:
        return False


class ChronyServer:
    """chronyd as an NTS server on loopback with the given key and certificate files."""

    def __init__(
        self,
        key: Path | str,
        cert: Path | str,
        workdir: Path | str | None = None,
        user: str = "root",
        ntsprocesses: int = 1,
        ntsdumpdir: bool = True,
        extra: str = "",
        ntp_port: int | None = None,
        nts_port: int | None = None,
    ):
        self._locate(Path(workdir) if workdir else make_workdir(), user)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.key, self.cert = Path(key), Path(cert)
        self.ntp_port = ntp_port or free_port()
        self.nts_port = nts_port or free_port()
        self.dump_dir = self.workdir / "dump" if ntsdumpdir else None
        lines = [
            f"port {self.ntp_port}",
            f"ntsport {self.nts_port}",
            "bindaddress 127.0.0.1",
            "bindaddress ::1",
            "cmdport 0",
            f"bindcmdaddress {self.run_dir}/chronyd.sock",
            f"pidfile {self.pid_path}",
            "allow 127.0.0.1",
            "allow ::1",
            "local stratum 8",
            f"ntsprocesses {ntsprocesses}",
            f"ntsserverkey {self.key}",
            f"ntsservercert {self.cert}",
        ]
        if self.dump_dir:
            lines.append(f"ntsdumpdir {self.dump_dir}")
        self.conf_path.write_text("\n".join(lines) + "\n" + extra)

    def _locate(self, workdir: Path, user: str) -> None:
        """Where a lab chronyd keeps its files, all under `workdir`."""
        self.workdir, self.user = workdir, user
        self.run_dir = workdir / "run"
        self.conf_path = workdir / "chronyd.conf"
        self.log_path = workdir / "chronyd.log"
        self.pid_path = self.run_dir / "chronyd.pid"
        self.log_offset = 0
        self._started_pid: int | None = None

    @classmethod
    def existing(cls, workdir: Path | str, user: str = "root") -> ChronyServer:
        """The lab chronyd configured in `workdir` (for a restart from another process)."""
        server = cls.__new__(cls)
        server._locate(Path(workdir), user)
        conf = dict(line.split(None, 1) for line in server.conf_path.read_text().splitlines() if " " in line)
        server.key, server.cert = Path(conf["ntsserverkey"]), Path(conf["ntsservercert"])
        server.ntp_port, server.nts_port = int(conf["port"]), int(conf["ntsport"])
        server.dump_dir = Path(conf["ntsdumpdir"]) if "ntsdumpdir" in conf else None
        return server

    # -- lifecycle ------------------------------------------------------------------------------
    def _prepare_dirs(self) -> None:
        pw = pwd.getpwnam(self.user)
        for d in filter(None, (self.run_dir, self.dump_dir)):
            d.mkdir(exist_ok=True)
            os.chown(d, pw.pw_uid, pw.pw_gid)
            d.chmod(0o770 if d == self.run_dir else 0o700)

    def start(self, timeout: float = 10.0) -> ChronyServer:
        self._prepare_dirs()
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        subprocess.run(
            [CHRONYD, "-f", str(self.conf_path), "-x", "-u", self.user, "-l", str(self.log_path)],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        self.wait_ready(timeout)
        self._started_pid = self.pid  # stop() still finds it if the pidfile's directory is gone
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Until the NTS-KE port accepts connections (which proves nothing about the key: see probe)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.nts_port), timeout=0.5).close()
                return
            except OSError:
                if not self.running():
                    time.sleep(0.05)
                    if not self.running():
                        raise RuntimeError(f"chronyd exited: {self.log()[-2000:]}")
                time.sleep(0.05)
        raise RuntimeError(f"chronyd did not open port {self.nts_port}: {self.log()[-2000:]}")

    @property
    def pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self) -> bool:
        pid = self.pid
        return pid is not None and _alive(pid)

    def stop(self, timeout: float = 10.0) -> None:
        pid = self.pid or self._started_pid
        if pid is None or not _is_chronyd(pid):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)

    def restart(self) -> ChronyServer:
        self.stop()
        return self.start()

    def restart_command(self) -> list[str]:
        """A command that restarts this server from outside, like `systemctl restart chrony`."""
        return [sys.executable, "-m", "ntspki.servers.lab", "restart", str(self.workdir), "--user", self.user]

    def log(self, since_start: bool = False) -> str:
        try:
            data = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return data[self.log_offset :] if since_start else data

    def credentials_failed(self) -> bool:
        return "Could not set credentials" in self.log(since_start=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


@dataclass
class ClientResult:
    ok: bool
    returncode: int
    output: str


DEFAULT_HOSTS = {"ntpserver": "127.0.0.1", "ntpserver-ipv6": "::1"}


def chrony_client(
    name: str,
    ntp_port: int,
    nts_port: int,
    trust: list[Path | str] | Path | str,
    hosts: dict[str, str] | None = None,
    timeout: int = 5,
    extra: str = "",
    workdir: Path | None = None,
) -> ClientResult:
    """One-shot NTS client: `chronyd -Q` against NAME, trusting only `trust`.

    A host name resolves through a private /etc/hosts (bind-mounted in a private mount namespace
    with `unshare -m`), so tests and the demo never edit the system's."""
    trust = [trust] if isinstance(trust, (str, Path)) else trust
    own = workdir is None
    workdir = Path(workdir or make_workdir("ntspki-client-"))
    try:
        conf = workdir / "client.conf"
        lines = [f"server {name} iburst nts port {ntp_port} ntsport {nts_port} maxsamples 1 minpoll -6 maxpoll -6"]
        lines += [f"ntstrustedcerts {t}" for t in trust]
        lines.append("nosystemcert")
        conf.write_text("\n".join(lines) + "\n" + extra)
        cmd = [CHRONYD, "-Q", "-t", str(timeout), "-f", str(conf), "-u", "root"]
        if not names.is_ip(name):
            hosts_file = workdir / "hosts"
            entries = {**DEFAULT_HOSTS, **(hosts or {})}
            hosts_file.write_text(
                "127.0.0.1 localhost\n::1 localhost\n" + "".join(f"{ip} {host}\n" for host, ip in entries.items())
            )
            cmd = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts_file), *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10)
        out = proc.stdout + proc.stderr
        ok = proc.returncode == 0 and "System clock wrong by" in out
        return ClientResult(ok, proc.returncode, out)
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ntspki.servers.lab")
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("restart", help="restart the lab chronyd whose work dir is WORKDIR")
    r.add_argument("workdir")
    r.add_argument("--user", default="root")
    args = parser.parse_args(argv)
    server = ChronyServer.existing(args.workdir, args.user)
    server.stop()
    try:
        server.start()
    except (RuntimeError, subprocess.SubprocessError) as e:
        print(f"restart failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
