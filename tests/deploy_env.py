"""A deploy test bed: a site CA with lineage `ntpserver`, destinations under a directory chronyd's
own user can traverse, and a REAL chronyd running as `_chrony` that reads them.

The restart command is `restart.sh`, which counts its runs and, while `noop` is set, does nothing
(a restart that does not take effect); otherwise it restarts chronyd from outside exactly like
`systemctl restart chrony` (ntspki.servers.lab). `fake_systemctl()` makes a `systemctl` for PATH that
answers ntspki's unit check and runs that same restart.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from ntspki import deploy
from ntspki.deploy import deployconfig
from ntspki.issuing import issue
from ntspki.nts import probe
from ntspki.servers import lab
from tests.conftest import make_site, run_cli

SANS = ["ntpserver-ipv6", "127.0.0.1", "::1"]


class DeployLab:
    def __init__(self, root: Path | None = None, user: str = "_chrony"):
        self.root = Path(root or lab.make_workdir("ntspki-deploy-"))
        self.site = make_site(self.root / "home")
        self.home = self.site.home
        self.dest = self.root / "etc" / "chrony" / "nts"
        self.key, self.cert = self.dest / "ntpserver.key", self.dest / "ntpserver.crt"
        self.count_file = self.root / "restarts"
        self.noop_flag = self.root / "restart-noop"
        self.server = lab.ChronyServer(self.key, self.cert, workdir=self.root / "chronyd", user=user)
        self.restart_script = self.root / "restart.sh"
        self.restart_script.write_text(
            "#!/bin/sh\n"
            f"echo restart >> {shlex.quote(str(self.count_file))}\n"
            f"[ -e {shlex.quote(str(self.noop_flag))} ] && exit 0\n"
            f"exec {shlex.join(self.server.restart_command())}\n"
        )
        self.restart_script.chmod(0o755)
        # The first pair goes in place the way a deploy does (there is no server to restart yet).
        first = self.target(probe=False, restart_command="true")
        deploy.install(first, deploy.load_source(first))
        self.server.start()

    # -- configuration --------------------------------------------------------------------------
    def settings(self, **over) -> dict:
        s = {
            "source": "ntpserver",
            "cert": str(self.cert),
            "key": str(self.key),
            "restart_command": str(self.restart_script),
            "service_conf": str(self.server.conf_path),
            "probe": f"127.0.0.1:{self.server.nts_port}",
            "probe_name": "ntpserver",
            "probe_timeout": 5,
        }
        s.update(over)
        return {k: v for k, v in s.items() if v is not None}

    def target(self, name: str = "ntpserver", **over) -> deployconfig.Target:
        return deployconfig.make_target(name, self.settings(**over), self.home)

    def write_config(self, targets: dict[str, dict] | None = None) -> Path:
        targets = targets if targets is not None else {"ntpserver": self.settings()}
        lines = []
        for name, settings in targets.items():
            lines.append(f"[targets.{name}]")
            for k, v in settings.items():
                lines.append(f"{k} = {toml_value(v)}")
            lines.append("")
        path = Path(self.home.path) / "deploy.toml"
        path.write_text("\n".join(lines))
        return path

    # -- actions and observations ---------------------------------------------------------------
    def new_version(self) -> str:
        """Issue the next version of `ntpserver`; its fingerprint."""
        return issue.issue(self.home, "ntpserver", SANS).sha256

    def source_fingerprint(self) -> str:
        return deploy.load_source(self.target()).fingerprint

    def deployed(self) -> deploy.Pair | None:
        return deploy.read_pair(self.key, self.cert)

    def served(self) -> str:
        return probe.served_fingerprint("127.0.0.1", self.server.nts_port, "ntpserver")

    def restarts(self) -> int:
        try:
            return len(self.count_file.read_text().split())
        except FileNotFoundError:
            return 0

    def noop(self, on: bool) -> None:
        if on:
            self.noop_flag.touch()
        elif self.noop_flag.exists():
            self.noop_flag.unlink()

    def cli(self, *args, env=None, check=False):
        return run_cli(*args, home=self.home.path, env=env, check=check)

    def client_syncs(self) -> lab.ClientResult:
        return lab.chrony_client("ntpserver", self.server.ntp_port, self.server.nts_port, self.site.root)

    def fake_systemctl(self) -> tuple[Path, Path]:
        """A bin dir holding `systemctl` (knows chrony.service; `restart` runs restart.sh), and its log."""
        bindir = self.root / "fakebin"
        bindir.mkdir(exist_ok=True)
        log = self.root / "systemctl.log"
        script = bindir / "systemctl"
        script.write_text(
            "#!/bin/sh\n"
            "# Stands in for systemd's systemctl (absent here): the unit check and restart.\n"
            f'echo "$*" >> {shlex.quote(str(log))}\n'
            'case "$1" in\n'
            '  show) for unit; do :; done; [ "$unit" = chrony.service ] && echo loaded || echo not-found ;;\n'
            f'  restart) [ "$2" = chrony.service ] || exit 5; exec {shlex.quote(str(self.restart_script))} ;;\n'
            "  *) exit 1 ;;\n"
            "esac\n"
        )
        script.chmod(0o755)
        return bindir, log

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def openssl_served_sha256(port: int, host: str = "127.0.0.1") -> str:
    """The leaf certificate `openssl s_client` sees over TLS 1.3 with ALPN ntske/1."""
    proc = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"{host}:{port}",
            "-tls1_3",
            "-alpn",
            "ntske/1",
            "-servername",
            "ntpserver",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=20,
    )
    der = subprocess.run(
        ["openssl", "x509", "-outform", "DER"], input=proc.stdout.encode(), capture_output=True, timeout=20
    )
    assert der.returncode == 0, proc.stdout + proc.stderr
    assert "ALPN protocol: ntske/1" in proc.stdout, proc.stdout
    import hashlib

    return hashlib.sha256(der.stdout).hexdigest()


def gnutls_served_ok(port: int, ca: Path, name: str = "ntpserver") -> subprocess.CompletedProcess:
    """gnutls-cli (the TLS library chronyd uses) verifying the served chain for `name`."""
    return subprocess.run(
        [
            "gnutls-cli",
            "--x509cafile",
            str(ca),
            "--alpn",
            "ntske/1",
            "--sni-hostname",
            name,
            "--verify-hostname",
            name,
            "-p",
            str(port),
            "127.0.0.1",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "LC_ALL": "C"},
    )
