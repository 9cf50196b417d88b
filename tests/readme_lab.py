"""Run shell blocks of README.md as typed, as root, inside private mount and network namespaces.

    unshare -m -n --propagation private python -m tests.readme_lab WORKDIR BLOCKS.json

Only the surroundings are the test's (see README "Development"): /etc, /root and /var/lib/chrony
are overlays whose changes land in WORKDIR; /run is a fresh tmpfs; /etc/hosts names ntpserver and
time.example.net on the namespace's own loopback; /etc/chrony/chrony.conf is a lab chronyd's
(loopback, never the clock, `confdir /etc/chrony/conf.d`); `systemctl` is a stand-in that
restarts that chronyd; pebble is the ACME CA (http-01 on port 80) and its root is added to the
system trust store, as a public CA's is there. The one change to a command: `ntspki acme issue`
gets `--directory URL --ca-bundle FILE` appended. Prints a JSON report on stdout.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

CHRONY_CONF = """\
# The README lab's chronyd: loopback only, never the system clock (-x), NTS from conf.d.
bindaddress 127.0.0.1
allow 127.0.0.1
local stratum 8
cmdport 0
bindcmdaddress /run/chrony/chronyd.sock
pidfile /run/chrony/chronyd.pid
driftfile /var/lib/chrony/chrony.drift
ntsdumpdir /var/lib/chrony
confdir /etc/chrony/conf.d
"""

SYSTEMCTL = """\
#!/bin/sh
# Stands in for systemctl (there is no systemd here): knows chrony.service, restarts the lab chronyd.
case "$1" in
  show) for unit; do :; done; [ "$unit" = chrony.service ] && echo loaded || echo not-found ;;
  restart)
    [ "$2" = chrony.service ] || exit 5
    if [ -f /run/chrony/chronyd.pid ]; then
      pid=$(cat /run/chrony/chronyd.pid); kill "$pid" 2>/dev/null
      while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    fi
    exec chronyd -f /etc/chrony/chrony.conf -x -u _chrony ;;
  *) exit 1 ;;
esac
"""


def sh(command: str) -> None:
    subprocess.run(command, shell=True, check=True)


def overlay(target: str, work: Path) -> None:
    name = target.strip("/").replace("/", "-")
    upper, scratch = work / "overlay" / name / "upper", work / "overlay" / name / "work"
    upper.mkdir(parents=True)
    scratch.mkdir(parents=True)
    sh(f"mount -t overlay overlay -o lowerdir={target},upperdir={upper},workdir={scratch} {target}")


def main() -> int:
    work, blocks = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
    sh("ip link set lo up")
    for target in ("/etc", "/root", "/var/lib/chrony"):
        overlay(target, work)
    sh("mount -t tmpfs tmpfs /run")
    os.makedirs("/run/chrony", mode=0o750)
    sh("chown _chrony:_chrony /run/chrony /var/lib/chrony")
    for stale in Path("/var/lib/chrony").glob("*"):
        stale.unlink()
    with open("/etc/hosts", "a") as hosts:
        hosts.write("\n127.0.0.1 ntpserver ntpserver-ipv6 time.example.net\n")
    Path("/etc/chrony/chrony.conf").write_text(CHRONY_CONF)
    Path("/etc/chrony/conf.d").mkdir(exist_ok=True)
    for old in Path("/etc/chrony/conf.d").glob("*.conf"):
        old.unlink()
    for gone in ("/etc/ntspki", "/etc/chrony/nts", "/root/ntspki.pass"):
        subprocess.run(["rm", "-rf", gone], check=True)
    bindir = work / "bin"
    bindir.mkdir()
    (bindir / "systemctl").write_text(SYSTEMCTL)
    # `ntspki` as `make install` puts it on PATH: this checkout's interpreter, isolated from the cwd.
    (bindir / "ntspki").write_text(f'#!/bin/sh\nexec {sys.executable} -m ntspki "$@"\n')
    for f in bindir.iterdir():
        f.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NTSPKI_")}
    env.update(PATH=f"{bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", HOME="/root")
    sh(f"{bindir}/systemctl restart chrony.service")

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.pebble_env import start_pebble

    pebble = start_pebble(work / "pebble", http_port=80)
    try:
        with open("/etc/ssl/certs/ca-certificates.crt", "ab") as bundle:
            bundle.write(b"\n" + pebble.root_pem())
        acme_flags = shlex.join(["--directory", pebble.directory_url, "--ca-bundle", str(pebble.ca_bundle)])
        runs = []
        for block in blocks:
            script = "\n".join(
                line + " " + acme_flags if line.startswith("ntspki acme issue ") else line
                for line in block.splitlines()
            )
            proc = subprocess.run(
                ["sh", "-ec", "set -x\n" + script], capture_output=True, text=True, env=env, cwd="/root", timeout=300
            )
            runs.append({"block": script, "returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr})
            if proc.returncode != 0:
                break
    finally:
        pebble.stop()
        subprocess.run(["sh", "-c", "[ -f /run/chrony/chronyd.pid ] && kill $(cat /run/chrony/chronyd.pid)"])
    print(json.dumps(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
