"""The newcomer's first run: a demo CA, an NTS server certificate, and proof with real chrony.

Everything lives under one directory; chronyd runs on loopback ports only and never touches the
system clock."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ntspki.errors import NtspkiError
from ntspki.issuing import ca, issue
from ntspki.servers import lab
from ntspki.store import Home, access, fsutil

DEMO_NAME = "ntpserver"
DEMO_SANS = ["ntpserver-ipv6", "127.0.0.1"]


@dataclass
class DemoResult:
    directory: str
    root: str
    key: str
    cert: str
    chrony_user: str
    nts_port: int = 0
    ntp_port: int = 0
    clients: dict[str, bool] = field(default_factory=dict)
    server_conf: list[str] = field(default_factory=list)
    client_conf: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.clients) and all(self.clients.values())


def run(directory: Path, say=print) -> DemoResult:
    if os.geteuid() != 0:
        raise NtspkiError("the demo starts a real chronyd, which must start as root: run it as root")
    if not shutil.which("chronyd") and not Path(lab.CHRONYD).exists():
        raise NtspkiError("chronyd is not installed (apt-get install chrony, or use `make demo`)")
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)  # chronyd's own user must traverse it
    home = Home(directory / "home")
    if ca.exists(home):
        say(f"1. Using the demo CA in {home.ca_dir}")
    else:
        ca.create(home, passphrase=None, name="ntspki demo")
        say(f"1. Created a demo root + intermediate CA in {home.ca_dir} (root key unencrypted: demo only)")
    issued = issue.issue(home, DEMO_NAME, DEMO_SANS)
    say(f"2. Issued {issued.name} (version {issued.version}) for {', '.join(issued.sans)}")

    # What `ntspki deploy` does on a real host: copy out of live/ (0700) with chronyd's group.
    user = lab.chrony_user()
    gid = access.Reader.named(user).gid
    nts = directory / "chrony"
    nts.mkdir(exist_ok=True)
    nts.chmod(0o755)
    lineage = home.read_lineage(DEMO_NAME)
    key, cert = nts / f"{DEMO_NAME}.key", nts / f"{DEMO_NAME}.crt"
    fsutil.atomic_write(key, lineage.privkey, 0o640, 0, gid)
    fsutil.atomic_write(cert, lineage.fullchain, 0o644, 0, 0)
    say(f"3. Copied key (root:{user} 0640) and full chain (0644) to {nts}")

    result = DemoResult(str(directory), str(home.ca_dir / "root.pem"), str(key), str(cert), user)
    server = lab.ChronyServer(key, cert, workdir=directory / "chronyd", user=user)
    result.ntp_port, result.nts_port = server.ntp_port, server.nts_port
    try:
        server.start()
        if server.credentials_failed():
            raise NtspkiError(f"chronyd could not load the certificate: {server.log(since_start=True).strip()}")
        say(f"4. chronyd (as {user}) serves NTS-KE on 127.0.0.1/::1 port {server.nts_port}, NTP on {server.ntp_port}")
        for name in (DEMO_NAME, "ntpserver-ipv6", "127.0.0.1"):
            client = lab.chrony_client(name, server.ntp_port, server.nts_port, home.ca_dir / "root.pem")
            result.clients[name] = client.ok
            detail = "synchronised over NTS" if client.ok else "FAILED: " + _last_line(client.output)
            say(f"5. chrony client -> {name:<15} {detail}")
    finally:
        server.stop()

    # On a real server `ntspki deploy` puts the pair where chronyd's sandbox allows reading it.
    result.server_conf = [
        f"ntsserverkey /etc/chrony/nts/{DEMO_NAME}.key",
        f"ntsservercert /etc/chrony/nts/{DEMO_NAME}.crt",
        "ntsdumpdir /var/lib/chrony",
    ]
    result.client_conf = [
        f"server {DEMO_NAME} iburst nts",
        f"ntstrustedcerts {result.root}",
    ]
    return result


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if "failed" in ln or "error" in ln.lower()]
    return (lines or text.strip().splitlines() or ["no output"])[-1]
