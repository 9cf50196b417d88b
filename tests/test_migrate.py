"""`ntspki migrate`: realistic ntpd/NTPsec configurations (an autokey IFF group server and client, a
plain pool client, NTPsec with NTS) become chrony configurations that chronyd itself accepts, with
every input line accounted for; with --probe only upstreams that really answer NTS-KE get `nts`."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from ntspki.audit import migrate
from ntspki.issuing import issue
from ntspki.servers import lab, nslab
from tests.conftest import make_site, run_cli

FIXTURES = Path(__file__).parent / "fixtures" / "ntpconf"
HOST = "timeserver.lab.example.net"


def fixture(name: str, workdir: Path) -> Path:
    """A copy of fixtures/ntpconf/NAME with its keysdir pointing at the copy's keys/."""
    d = workdir / name
    shutil.copytree(FIXTURES / name, d, symlinks=True)
    conf = d / "ntp.conf"
    conf.write_text(conf.read_text().replace("KEYSDIR", str(d / "keys")))
    return conf


def chronyd_accepts(text: str, workdir: Path) -> None:
    path = workdir / "migrated.conf"
    path.write_text(text)
    proc = subprocess.run([lab.CHRONYD, "-p", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr + text


def active(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


@pytest.mark.parametrize("name", ["autokey-server", "autokey-client", "pool-client", "ntpsec-nts"])
def test_every_line_is_accounted_for_and_chronyd_accepts_the_result(name, workdir):
    conf = fixture(name, workdir)
    m = migrate.migrate(str(conf), hostname=HOST)
    lines, _ = migrate.read_conf(str(conf))
    assert [f.where for f in m.fates] == [line.where for line in lines]  # one fate per line, in order
    assert all(f.fate in ("translated", "obsolete", "manual") for f in m.fates)
    for f in m.fates:
        if f.fate == "manual":  # listed in the configuration too, never dropped silently
            assert f"#   {f.where}: {f.directive}" in m.chrony_conf
    chronyd_accepts(m.chrony_conf, workdir)


def test_autokey_group_server(workdir):
    conf = fixture("autokey-server", workdir)
    m = migrate.migrate(str(conf), hostname=HOST)
    lines = active(m.chrony_conf)
    assert m.served_autokey and m.serves
    assert {f"ntsserverkey /etc/chrony/nts/{HOST}.key", f"ntsservercert /etc/chrony/nts/{HOST}.crt",
            "ntsdumpdir /var/lib/chrony", "local stratum 10"} <= set(lines)  # fmt: skip
    assert "server ntp1.example.net iburst nts" in lines and "server ntp2.example.net iburst nts" in lines
    # restrict: default open (served everyone) with one network ignored; `limited` -> ratelimit
    assert {"allow 0.0.0.0/0", "allow ::/0", "deny 198.19.99.0/24", "ratelimit"} <= set(lines)
    # The certificate the host needs, with its autokey name as a second name.
    assert m.commands == [f"ntspki issue {HOST} --san timeserver", f"ntspki deploy --lineage {HOST}"]
    keys = sorted(str(p) for p in (conf.parent / "keys").iterdir())
    assert m.obsolete_files == keys and len(keys) == 6
    fates = {f.directive.split()[0]: f for f in m.fates}
    assert fates["crypto"].fate == "obsolete" and "NTS" in fates["crypto"].why
    assert fates["keysdir"].fate == "obsolete" and fates["keys"].fate == "obsolete"
    # includefile was followed (relative to the including file)
    assert any(f.where.endswith("ntp.restrict:7") and f.chrony == ["deny 198.19.99.0/24"] for f in m.fates)


def test_the_printed_issue_command_works(workdir):
    site = make_site(workdir / "home")
    m = migrate.migrate(str(fixture("autokey-server", workdir)), hostname=HOST)
    argv = m.commands[0].split()
    assert argv[0] == "ntspki"
    proc = run_cli(*argv[1:], home=site.home.path)
    assert proc.returncode == 0, proc.stderr
    assert f"ntsserverkey /etc/chrony/nts/{HOST}.key" in m.chrony_conf  # where `deploy --lineage` puts it
    assert (site.home.live / HOST / "fullchain.pem").exists()


def test_autokey_client(workdir):
    m = migrate.migrate(str(fixture("autokey-client", workdir)), hostname="client1.lab.example.net")
    lines = active(m.chrony_conf)
    assert "server timeserver.lab.example.net iburst prefer nts" in lines
    assert "server timeserver2.lab.example.net iburst nts" in lines
    assert f"ntstrustedcerts {migrate.SITE_ROOT_COPY}" in lines
    assert not m.serves and not m.commands and not any(line.startswith(("allow", "ntsserver")) for line in lines)
    assert "# allow all" in m.chrony_conf  # ntpd answered everyone; left for the operator to decide
    assert len(m.obsolete_files) == 5 and all("ntpkey_" in p for p in m.obsolete_files)


def test_plain_pool_client(workdir):
    m = migrate.migrate(str(fixture("pool-client", workdir)), hostname=HOST)
    lines = active(m.chrony_conf)
    assert [line for line in lines if line.startswith("pool")] == [
        f"pool {i}.debian.pool.ntp.org iburst" for i in range(4)
    ]  # the NTP Pool has no NTS: `nts` there would leave the host without time
    assert all(not u.nts and "NTP Pool" in u.why for u in m.upstreams)
    assert any("no NTS source" in n for n in m.notes)
    assert "leapsectz right/UTC" in lines and not m.obsolete_files


def test_ntpsec_with_nts(workdir):
    m = migrate.migrate(str(fixture("ntpsec-nts", workdir)), hostname=HOST)
    lines = active(m.chrony_conf)
    assert "server time.cloudflare.com iburst nts" in lines
    assert "server nts.netnod.se iburst nts" in lines  # NTPsec's HOST:4460 is chrony's default ntsport
    assert "server ntp.lab.example.net iburst nts certset 1" in lines
    assert "ntstrustedcerts 1 /etc/ntpsec/lab-root.pem" in lines
    assert m.served_nts and f"ntsservercert /etc/chrony/nts/{HOST}.crt" in lines
    assert "minsources 3" in lines and "allow all" in lines
    manual = {f.directive for f in m.manual}
    assert manual == {"tos maxclock 11", "logconfig =syncevents +clockevents", "rlimit memlock 32"}


def test_probe_keeps_nts_only_where_nts_ke_answers(workdir):
    """A real chronyd NTS server (in a namespace, standard ports) and two upstreams without NTS."""
    with nslab.Netns("servers-mig", 4) as ns:
        site = make_site(workdir / "home")
        issue.issue(site.home, "ntpserver", [ns.address], "ec-p256", allow_change=True)
        deploy_dir = workdir / "nts"
        deploy_dir.mkdir()
        deploy_dir.chmod(0o755)
        live = site.home.live / "ntpserver"
        shutil.copy(live / "privkey.pem", deploy_dir / "ntpserver.key")
        shutil.copy(live / "fullchain.pem", deploy_dir / "ntpserver.crt")
        (deploy_dir / "ntpserver.key").chmod(0o644)  # lab only: the container's uid must read it
        conf = workdir / "ntp.conf"
        conf.write_text(
            f"server {ns.address} iburst\nserver {ns.host_address} iburst\nserver ntp.invalid iburst\n"
            "pool 0.debian.pool.ntp.org iburst\n"
        )
        with nslab.ContainerChrony(deploy_dir, ns, workdir / "server", 20124):
            proc = run_cli("migrate", conf, "--probe", "--ca", site.root, "--timeout", "2", "--json")
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        by_host = {u["host"]: u for u in data["upstreams"]}
        assert by_host[ns.address]["nts"] and by_host[ns.address]["probed"], by_host
        assert not by_host[ns.host_address]["nts"] and "no NTS" in by_host[ns.host_address]["why"]
        assert not by_host["ntp.invalid"]["nts"]
        assert not by_host["0.debian.pool.ntp.org"]["nts"]
        assert f"server {ns.address} iburst nts" in data["chrony_conf"]
        assert f"server {ns.host_address} iburst\n" in data["chrony_conf"]


def test_cli_out_dir_and_report(workdir):
    out = workdir / "out"
    out.mkdir()
    proc = run_cli("migrate", fixture("autokey-server", workdir), "--out", out, "--hostname", HOST)
    assert proc.returncode == 0, proc.stderr
    assert "[obsolete]" in proc.stdout and "obsolete autokey material" in proc.stdout
    assert f"ntspki issue {HOST} --san timeserver" in proc.stdout
    assert (out / "chrony.conf").read_text().startswith("# chrony.conf made by `ntspki migrate`")
    script = out / "ntspki-commands.sh"
    assert stat.S_IMODE(script.stat().st_mode) == 0o755 and f"ntspki deploy --lineage {HOST}" in script.read_text()
    printed = run_cli("migrate", fixture("pool-client", workdir))
    assert printed.returncode == 0 and "---- chrony.conf ----\n# chrony.conf made by" in printed.stdout


@pytest.mark.parametrize("bad", ["missing", "directory", "binary", "device", "loop", "out-missing", "huge"])
def test_bad_input_is_one_line(bad, workdir):
    args: list = []
    if bad == "missing":
        args = [workdir / "nope.conf"]
    elif bad == "directory":
        args = [workdir]
    elif bad == "binary":
        (workdir / "b.conf").write_bytes(b"server a\0\xff\n")
        args = [workdir / "b.conf"]
    elif bad == "device":
        args = ["/dev/zero"]
    elif bad == "loop":
        (workdir / "l.conf").write_text("includefile l.conf\n")
        args = [workdir / "l.conf"]
    elif bad == "out-missing":
        args = [fixture("pool-client", workdir), "--out", workdir / "no" / "such"]
    elif bad == "huge":
        (workdir / "h.conf").write_text("# x\n" * 400_000)
        args = [workdir / "h.conf"]
    before = sorted(p.name for p in workdir.rglob("*"))
    proc = run_cli("migrate", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("ntspki: error:") and len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in workdir.rglob("*")) == before
