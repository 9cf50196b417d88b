"""`ntspki check` on real deployments: good and broken ones built for real (owners, modes, chains,
keys, dates), each served by a real chronyd dropping to its own user where that makes sense; and
`ntspki probe` agreeing with a real chrony client (`chronyd -Q`) on every one of them."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import pwd
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
from cryptography import x509

from ntspki import pki
from ntspki.audit.check import check
from ntspki.issuing import ca as ca_mod
from ntspki.issuing import issue
from ntspki.nts.probe import probe
from ntspki.pki import keys
from ntspki.servers import lab
from ntspki.store import fsutil
from tests.conftest import make_site, run_cli

USER = lab.chrony_user()
UID, GID = pwd.getpwnam(USER).pw_uid, pwd.getpwnam(USER).pw_gid
NOBODY = pwd.getpwnam("nobody")


@dataclass
class Case:
    name: str
    dir: Path
    conf: Path  # the chrony.conf `check` reads (includes the server's own config)
    server: lab.ChronyServer | None
    client_name: str = "ntpserver"  # what the chrony client and the probe check the certificate for


def write_deployment(
    base: Path, key_pem: bytes, cert_pem: bytes, key_mode=0o640, key_uid=0, key_gid=GID, dir_mode=0o755
) -> tuple[Path, Path]:
    nts = base / "nts"
    nts.mkdir(parents=True)
    nts.chmod(dir_mode)
    fsutil.atomic_write(nts / "privkey.pem", key_pem, key_mode, key_uid, key_gid)
    fsutil.atomic_write(nts / "fullchain.pem", cert_pem, 0o644, 0, 0)
    return nts / "privkey.pem", nts / "fullchain.pem"


def leaf_pem(site_ca, sans, days=90, back_days=0, key=None):
    key = key or keys.generate("ec-p256")
    if back_days:
        # Made by the same code as every certificate, with the clock turned back.
        past = pki.now() - dt.timedelta(days=back_days)
        with mock.patch.object(pki, "now", lambda: past):
            cert = pki.make_leaf(key, site_ca.intermediate, site_ca.intermediate_key, sans, days)
    else:
        cert = pki.make_leaf(key, site_ca.intermediate, site_ca.intermediate_key, sans, days)
    return keys.private_pem(key), pki.cert_pem(cert), pki.cert_pem(site_ca.intermediate)


@pytest.fixture(scope="module")
def lab_site():
    path = lab.make_workdir("ntspki-check-")
    site = make_site(path / "home")
    yield site, path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def cases(lab_site):
    """Every deployment, each with its chronyd (as _chrony) started; all stopped together at the end."""
    site, base = lab_site
    ca = ca_mod.load(site.home)
    live = site.home.read_lineage("ntpserver")
    good_key, good_cert = live.privkey, live.fullchain
    leaf_only = live.cert
    inter = pki.cert_pem(ca.intermediate)
    issue.issue(site.home, "other", [], "ec-p256")
    other_key = site.home.read_lineage("other").privkey
    dns_key, dns_leaf, _ = leaf_pem(ca, [x509.DNSName("ntpserver")])
    # Valid for 30 days from 60 days ago: expired a month ago.
    old_key, old_leaf, _ = leaf_pem(
        ca, [x509.DNSName("ntpserver"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], days=30, back_days=60
    )
    encrypted_key = keys.private_pem(keys.load_private_pem(good_key), b"secret")
    specs = {
        # name: (key, cert, deployment options, server options, extra conf for check, client name)
        "good": (good_key, good_cert, {}, {}, "source", "ntpserver"),
        "wrong-owner": (
            good_key,
            good_cert,
            dict(key_uid=NOBODY.pw_uid, key_gid=NOBODY.pw_gid, key_mode=0o600),
            {},
            "",
            "ntpserver",
        ),
        "root-0600": (good_key, good_cert, dict(key_gid=0, key_mode=0o600), {}, "", "ntpserver"),
        "dir-0700": (good_key, good_cert, dict(dir_mode=0o700), {}, "", "ntpserver"),
        "leaf-only": (good_key, leaf_only, {}, {}, "", "ntpserver"),
        "reversed": (good_key, inter + live.cert, {}, {}, "", "ntpserver"),
        "key-mismatch": (other_key, good_cert, {}, {}, "", "ntpserver"),
        "expired": (old_key, old_leaf + inter, {}, {}, "", "ntpserver"),
        "encrypted": (encrypted_key, good_cert, {}, {}, "", "ntpserver"),
        "no-dumpdir": (good_key, good_cert, {}, dict(ntsdumpdir=False), "", "ntpserver"),
        "dns-only-by-ip": (dns_key, dns_leaf + inter, {}, {}, "source", "127.0.0.1"),
        "dns-only-by-name": (dns_key, dns_leaf + inter, {}, {}, "", "ntpserver"),
    }
    out: dict[str, Case] = {}
    for name, (key, cert, dep, srv, extra, client_name) in specs.items():
        d = base / name
        key_path, cert_path = write_deployment(d, key, cert, **dep)
        server = lab.ChronyServer(key_path, cert_path, workdir=d / "chronyd", user=USER, **srv)
        conf = d / "chrony.conf"
        confd = d / "conf.d"
        confd.mkdir()
        conf.write_text(
            f"# what check reads: the server's config plus a client part\ninclude {server.conf_path}\nconfdir {confd}\n"
        )
        if extra == "source":
            (confd / "10-client.conf").write_text(
                f"server 127.0.0.1 iburst nts port {server.ntp_port} ntsport {server.nts_port}\n"
                f"server ::1 iburst nts port {server.ntp_port} ntsport {server.nts_port}\n"
                # a third, independent reference (gpsd): three sources, so no few-sources warning
                "refclock SHM 0 refid GPS\n"
                f"ntstrustedcerts {site.root}\n"
            )
        out[name] = Case(name, d, conf, server, client_name)
    try:
        with ThreadPoolExecutor(len(out)) as pool:
            list(pool.map(lambda c: c.server.start(), out.values()))
        yield out
    finally:
        with ThreadPoolExecutor(len(out)) as pool:  # chronyd takes ~1.5 s to stop: all at once
            list(pool.map(lambda c: c.server.stop(), out.values()))


@pytest.fixture(scope="module")
def verdicts(cases, lab_site):
    """(probe result, chrony client result) per case, all run concurrently."""
    site, _ = lab_site

    def both(case: Case):
        s = case.server
        by_ip = case.client_name == "127.0.0.1"
        r = probe(f"127.0.0.1:{s.nts_port}", ca_files=[site.root], name=None if by_ip else case.client_name, timeout=3)
        c = lab.chrony_client(case.client_name, s.ntp_port, s.nts_port, site.root, timeout=3)
        return case.name, (r, c)

    with ThreadPoolExecutor(len(cases)) as pool:
        return dict(pool.map(both, cases.values()))


def run_check(case: Case, site, **kw):
    return check(str(case.conf), ca_files=[str(site.root)], **kw)


# ---- probe agrees with chrony -------------------------------------------------------------------

EXPECTED = {
    "good": (True, None),
    "wrong-owner": (False, "Could not set credentials"),
    "root-0600": (False, "Could not set credentials"),
    "dir-0700": (False, "Could not set credentials"),
    "leaf-only": (False, "neither trusted nor in the chain"),
    "reversed": (False, "Could not set credentials"),
    "key-mismatch": (False, "Could not set credentials"),
    "expired": (False, "expired on"),
    "encrypted": (False, "Could not set credentials"),
    "no-dumpdir": (True, None),
    "dns-only-by-ip": (False, "127.0.0.1 is not an IP SAN"),
    "dns-only-by-name": (True, None),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_probe_agrees_with_chrony_client(verdicts, name):
    result, client = verdicts[name]
    ok, words = EXPECTED[name]
    assert client.ok is ok, client.output
    assert result.ok is client.ok, (result.error, client.output)
    if words:
        assert words in result.error
    else:
        assert result.authenticated and result.stratum == 8


def test_chronyd_logs_what_check_predicts(cases, verdicts):
    """The broken keys really fail inside chronyd, in chrony's words quoted by check's findings."""
    for name in ("wrong-owner", "root-0600", "dir-0700", "key-mismatch", "encrypted", "reversed"):
        assert cases[name].server.credentials_failed(), (name, cases[name].server.log())
    assert "Error while reading file" in cases["root-0600"].server.log()
    assert "Decryption has failed" in cases["encrypted"].server.log()
    assert "do not match" in cases["reversed"].server.log()
    for name in ("good", "leaf-only", "expired", "no-dumpdir"):
        assert not cases[name].server.credentials_failed(), cases[name].server.log()


# ---- check's findings, produced for real ---------------------------------------------------------

FINDINGS = {
    "wrong-owner": ("CRITICAL", {"key-unreadable"}, {"key-owner"}),
    "root-0600": ("CRITICAL", {"key-unreadable"}, set()),
    "dir-0700": ("CRITICAL", {"dir-untraversable"}, set()),
    "leaf-only": ("CRITICAL", {"chain-incomplete"}, set()),
    "reversed": ("CRITICAL", {"chain-order", "key-mismatch"}, set()),
    "key-mismatch": ("CRITICAL", {"key-mismatch"}, set()),
    "expired": ("CRITICAL", {"expired"}, set()),
    "encrypted": ("CRITICAL", {"key-encrypted"}, set()),
    "no-dumpdir": ("WARNING", set(), {"no-dumpdir"}),
    "dns-only-by-ip": ("CRITICAL", {"name-type"}, set()),
}


@pytest.mark.parametrize("name", list(FINDINGS))
def test_check_finds_the_fault(cases, lab_site, name):
    site, _ = lab_site
    status, critical, warning = FINDINGS[name]
    report = run_check(cases[name], site)
    assert report.status == status, [(f.severity, f.code, f.message) for f in report.findings]
    assert report.codes("critical") == critical
    assert report.codes("warning") == warning
    for f in report.findings:
        if f.severity in ("critical", "warning"):
            assert f.hint and "\n" not in f.message


def test_good_deployment_gets_a_clean_bill_of_health(cases, lab_site):
    site, _ = lab_site
    case = cases["good"]
    report = run_check(case, site, probe=True)
    assert report.status == "OK" and report.exit_code == 0, [
        (f.severity, f.message) for f in report.findings if f.severity not in ("ok", "info")
    ]
    assert {
        "key-matches",
        "chain-verifies",
        "key-readable",
        "dumpdir",
        "valid",
        "served",
        "source-probe",
    } <= report.codes("ok")
    assert report.user == USER
    # include and confdir were followed
    assert str(case.server.conf_path) in report.files and str(case.dir / "conf.d/10-client.conf") in report.files


def test_check_probe_reports_what_clients_see(cases, lab_site):
    site, _ = lab_site
    report = run_check(cases["root-0600"], site, probe=True)
    probe_failed = [f for f in report.findings if f.code == "probe-failed"]
    assert probe_failed and "Could not set credentials" in probe_failed[0].message
    report = run_check(cases["dns-only-by-ip"], site, probe=True)
    src = [f for f in report.findings if f.code == "source-probe"]
    assert src and src[0].severity == "critical" and "not an IP SAN" in src[0].message


def test_stale_certificate_needs_restart(lab_site, chrony_servers):
    """A renewed certificate on disk that chronyd does not serve yet (it never re-reads it)."""
    site, base = lab_site
    d = base / "stale"
    live = site.home.read_lineage("ntpserver")
    key_path, cert_path = write_deployment(d, live.privkey, live.fullchain)
    server = chrony_servers(key_path, cert_path, workdir=d / "chronyd", user=USER)
    (d / "chrony.conf").write_text(f"include {server.conf_path}\n")
    renewed = issue.issue(site.home, "ntpserver", ["ntpserver-ipv6", "127.0.0.1", "::1"], "ec-p256")
    new = site.home.read_lineage("ntpserver")
    fsutil.atomic_write(key_path, new.privkey, 0o640, 0, GID)
    fsutil.atomic_write(cert_path, new.fullchain, 0o644)
    report = check(str(d / "chrony.conf"), ca_files=[str(site.root)], probe=True)
    assert report.codes("warning") == {"stale-served"}, [(f.severity, f.message) for f in report.findings]
    stale = next(f for f in report.findings if f.code == "stale-served")
    assert "needs a restart" in stale.message and "restart" in stale.hint
    # what the probe saw is the old certificate, what deploy would be waiting for is the new one
    served = probe(
        f"127.0.0.1:{server.nts_port}", ca_files=[site.root], name="ntpserver", expect_fingerprint=renewed.sha256
    )
    assert not served.ok and served.stage == "expect" and "expected" in served.error


# ---- configurations that need no running chronyd -------------------------------------------------


def test_conf_only_faults(lab_site, workdir):
    site, _ = lab_site
    live = site.home.read_lineage("ntpserver")
    key_path, cert_path = write_deployment(workdir / "d", live.privkey, live.fullchain, key_mode=0o644, key_gid=0)
    with_root = workdir / "with-root.pem"
    with_root.write_bytes(live.fullchain + site.root.read_bytes())
    conf = workdir / "chrony.conf"
    conf.write_text(
        "\n".join(
            [
                "! comment styles: ! ; % #",
                f"ntsserverkey {key_path}",
                f"ntsservercert {cert_path}",
                f"ntsserverkey {key_path}",
                f"ntsservercert {with_root}",
                f"ntsserverkey {workdir}/missing.key",
                "server time.example iburst nts certset 2",
                "pool pool.example iburst nts",
                f"ntstrustedcerts {workdir}/nope.pem",
                "nosystemcert",
            ]
        )
        + "\n"
    )
    report = check(str(conf), ca_files=[str(site.root)])
    codes = report.codes("critical")
    assert {"pair-count", "key-exposed", "no-trust", "trust-missing"} <= codes, codes
    assert {"chain-root", "no-dumpdir"} <= report.codes("warning")
    assert report.exit_code == 2


def test_key_owned_by_chrony_user_is_a_warning(lab_site, workdir):
    site, _ = lab_site
    live = site.home.read_lineage("ntpserver")
    key_path, cert_path = write_deployment(
        workdir / "d", live.privkey, live.fullchain, key_mode=0o600, key_uid=UID, key_gid=GID
    )
    conf = workdir / "chrony.conf"
    conf.write_text(
        f"ntsserverkey {key_path}\nntsservercert {cert_path}\nntsdumpdir {workdir}\nuser {USER}\nlocal stratum 8\n"
    )
    report = check(str(conf), ca_files=[str(site.root)])
    assert report.codes("warning") == {"key-writable", "dumpdir-unwritable"}, report.findings
    assert report.exit_code == 1


def test_expiry_thresholds(lab_site, workdir):
    site, _ = lab_site
    ca = ca_mod.load(site.home)
    key, leaf, inter = leaf_pem(ca, [x509.DNSName("ntpserver")], days=10)
    key_path, cert_path = write_deployment(workdir / "d", key, leaf + inter, key_gid=0)
    conf = workdir / "chrony.conf"
    conf.write_text(f"ntsserverkey {key_path}\nntsservercert {cert_path}\nntsdumpdir {workdir}\nlocal stratum 8\n")
    assert check(str(conf), ca_files=[str(site.root)], user="root").codes("warning") == {"expiring"}
    assert check(str(conf), ca_files=[str(site.root)], user="root", critical_days=10).codes("critical") == {"expiring"}
    assert check(str(conf), ca_files=[str(site.root)], user="root", warn_days=5, critical_days=2).status == "OK"


def test_sourcedir_and_confdir_order(workdir):
    from ntspki.servers import chronyconf

    (workdir / "a").mkdir()
    (workdir / "b").mkdir()
    (workdir / "src").mkdir()
    (workdir / "a/20-x.conf").write_text("ntsport 1111\n")
    (workdir / "b/20-x.conf").write_text("ntsport 2222\n")  # shadowed by a/20-x.conf
    (workdir / "b/10-y.conf").write_text("ntsport 3333\n")
    (workdir / "src/s.sources").write_text("server ntp.example nts ntsport 123 certset 4 iburst\n")
    (workdir / "src/ignored.txt").write_text("server nope\n")
    main = workdir / "chrony.conf"
    main.write_text(f"confdir {workdir}/a {workdir}/b\nsourcedir {workdir}/src\ninclude {workdir}/none-*.conf\n")
    conf = chronyconf.parse(main)
    assert [d.args[0] for d in conf.all("ntsport")] == ["3333", "1111"]
    (src,) = conf.sources()
    assert (src.host, src.nts, src.ntsport, src.certset) == ("ntp.example", True, 123, 4)


# ---- the CLI ----------------------------------------------------------------------------------------


def test_cli_exit_codes_json_and_prometheus(cases, lab_site, workdir):
    site, _ = lab_site
    good = run_cli("check", "--chrony-conf", cases["good"].conf, "--ca", site.root, "-v")
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.startswith("OK: 0 critical") and "[ok] key-matches" in good.stdout
    warn = run_cli("check", "--chrony-conf", cases["no-dumpdir"].conf, "--ca", site.root)
    assert warn.returncode == 1 and "[WARNING] no-dumpdir" in warn.stdout and "fix: add `ntsdumpdir" in warn.stdout
    prom = workdir / "ntspki.prom"
    crit = run_cli("check", "--chrony-conf", cases["root-0600"].conf, "--ca", site.root, "--json", "--prometheus", prom)
    assert crit.returncode == 2
    data = json.loads(crit.stdout)
    assert data["status"] == "CRITICAL" and data["counts"]["critical"] >= 1
    assert any(f["code"] == "key-unreadable" and f["hint"].startswith("chown root:") for f in data["findings"])
    text = prom.read_text()
    assert "ntspki_check_status 2\n" in text and 'ntspki_check_findings{severity="critical"} 1' in text
    assert "ntspki_cert_days_left{" in text and oct(prom.stat().st_mode)[-3:] == "644"
    assert not [p for p in workdir.iterdir() if p.name.startswith(".ntspki.prom")]  # no temp file left
    missing = run_cli("check", "--chrony-conf", workdir / "nope.conf")
    assert missing.returncode == 3 and missing.stderr.startswith("ntspki: error: cannot read")
    assert "Traceback" not in missing.stderr


def test_cli_bad_usage(workdir):
    proc = run_cli("check", "--warn-days", "3", "--critical-days", "9", "--chrony-conf", workdir / "x")
    assert proc.returncode == 3 and "critical-days" in proc.stderr  # UNKNOWN: 2 would read as CRITICAL
    proc = run_cli("check", "--user", "no-such-user-here", "--chrony-conf", "/dev/null")
    assert proc.returncode == 3 and "no such user" in proc.stderr


def test_check_probe_trusts_the_site_ca_with_the_system_store_by_default(cases, lab_site):
    """A correct internal-CA server is OK without --ca: the home's root is trusted as probe and
    deploy trust it; --trust system alone (no site CA) cannot verify it."""
    site, _ = lab_site
    conf = cases["good"].conf
    proc = run_cli("check", "--chrony-conf", conf, "--probe", "--json", home=site.home.path)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, [f for f in report["findings"] if f["severity"] not in ("ok", "info")]
    proc = run_cli("check", "--chrony-conf", conf, "--probe", "--trust", "system", home=site.home.path)
    assert proc.returncode == 2, proc.stdout
    probe = run_cli("probe", f"127.0.0.1:{cases['good'].server.nts_port}", "--no-ntp", home=site.home.path)
    assert probe.returncode == 0, probe.stdout
