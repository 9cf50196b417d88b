"""`ntspki check` on the client side and on configurations chronyd itself refuses: unauthenticated
and too few sources, ntstrustedcerts files as chronyd's user reads them, chronyd's own parser as a
second opinion, hints that fit what was found, and exit codes a monitoring system reads right."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path
from unittest import mock

import pytest

from ntspki import pki
from ntspki.audit.check import check
from ntspki.pki import keys
from ntspki.servers import lab
from tests.conftest import run_cli

FIXTURES = Path(__file__).parent / "fixtures"
USER = lab.chrony_user()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def debian_stock(workdir: Path) -> Path:
    """Debian 12's chrony.conf as shipped, with its confdir/sourcedir pointed into workdir."""
    text = (FIXTURES / "chrony-debian12.conf").read_text()
    for d in ("/etc/chrony/conf.d", "/etc/chrony/sources.d", "/run/chrony-dhcp"):
        text = text.replace(d, str(workdir / Path(d).name))
    return write(workdir / "chrony.conf", text)


def test_debian_stock_config_is_not_ok(workdir):
    report = check(str(debian_stock(workdir)))
    assert report.status == "WARNING" and report.exit_code == 1
    assert report.codes("warning") == {"unauthenticated-source", "no-nts"}, report.findings
    unauth = next(f for f in report.findings if f.code == "unauthenticated-source")
    assert "2.debian.pool.ntp.org" in unauth.message and "NTP Pool offers no NTS" in unauth.hint
    assert unauth.where.endswith("chrony.conf:8")
    assert "serves no NTS; 0 of 1 source(s) use NTS" == report.role
    assert "chronyd-parse" in report.codes("ok")  # chronyd itself accepts it


def test_cli_says_plainly_there_is_no_nts(workdir):
    proc = run_cli("check", "--chrony-conf", debian_stock(workdir))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("WARNING:") and lines[1].strip() == "serves no NTS; 0 of 1 source(s) use NTS"
    assert "[WARNING] no-nts: no NTS here" in proc.stdout


def test_nts_sources_need_three_and_say_why_they_mix(workdir, site):
    root = site.root
    three = write(
        workdir / "three.conf",
        f"server a.example iburst nts\nserver b.example iburst nts\nserver c.example iburst nts\nntstrustedcerts {root}\n",
    )
    report = check(str(three), user="root")
    assert report.status == "OK", [(f.severity, f.code, f.message) for f in report.findings if f.severity != "ok"]
    assert report.role == "serves no NTS; 3 of 3 source(s) use NTS"

    two = write(workdir / "two.conf", "server a.example iburst nts\nserver b.example iburst nts\nminsources 3\n")
    report = check(str(two), user="root")
    assert report.codes("warning") == {"few-sources", "minsources"}
    assert "falseticker" in next(f.message for f in report.findings if f.code == "few-sources")

    mixed = "server a.example iburst nts\nserver b.example iburst nts\nserver c.example iburst\n"
    assert check(str(write(workdir / "m.conf", mixed)), user="root").codes("warning") == {"unauthenticated-source"}
    # The configuration says why: mixing on purpose is information, not a warning.
    report = check(str(write(workdir / "m2.conf", mixed + "authselectmode mix\n")), user="root")
    assert report.status == "OK" and "unauthenticated-source" in report.codes("info")
    # require: the unauthenticated source is never selected, so only two remain.
    report = check(str(write(workdir / "m3.conf", mixed + "authselectmode require\n")), user="root")
    assert report.codes("warning") == {"few-sources"}
    # A symmetric key authenticates too; a pool counts as its maxsources.
    keyed = "server a.example iburst key 1\npool p.example iburst nts maxsources 2\n"
    assert check(str(write(workdir / "k.conf", keyed)), user="root").codes("warning") == set()
    # No source and no `local`: clients of this chronyd get unsynchronised time.
    assert "no-sources" in check(str(write(workdir / "n.conf", "allow all\n")), user="root").codes("warning")


def test_chronyd_refusal_is_critical(workdir):
    conf = write(workdir / "bad.conf", "server a.example iburst nts\nserver b.example iburst ntss\n")
    report = check(str(conf), user="root")
    assert report.status == "CRITICAL"
    refused = next(f for f in report.findings if f.code == "conf-refused")
    assert "Could not parse server directive at line 2" in refused.message
    proc = run_cli("check", "--chrony-conf", write(workdir / "bad2.conf", "frobnicate yes\n"))
    assert proc.returncode == 2 and "Invalid directive at line 1" in proc.stdout


def _expired_root(path: Path) -> Path:
    key = keys.generate("ec-p256")
    past = pki.now() - dt.timedelta(days=400)
    with mock.patch.object(pki, "now", lambda: past):
        cert = pki.make_root(key, "old root", days=30)
    path.write_bytes(pki.cert_pem(cert))
    return path


def test_trusted_certs_as_chronyd_reads_them(workdir, site):
    sources = "".join(f"server {h}.example iburst nts\n" for h in "abc")
    unreadable = workdir / "private-root.pem"
    shutil.copy(site.root, unreadable)
    unreadable.chmod(0o600)
    trustdir = workdir / "trust.d"
    trustdir.mkdir()
    (trustdir / "README").write_text("no certificates here\n")
    garbage = write(workdir / "garbage.pem", "not a certificate\n")
    conf = write(
        workdir / "c.conf",
        sources
        + f"ntstrustedcerts {_expired_root(workdir / 'old.pem')}\n"
        + f"ntstrustedcerts {unreadable}\nntstrustedcerts {trustdir}\nntstrustedcerts {garbage}\n",
    )
    report = check(str(conf), user=USER)
    by_code = {f.code: f for f in report.findings if f.severity == "critical"}
    assert set(by_code) == {"trust-expired", "trust-unreadable", "trust-empty", "trust-unparsable"}, by_code
    assert by_code["trust-unreadable"].hint == f"chmod 0644 {unreadable}"
    assert "chmod" not in by_code["trust-empty"].hint  # a directory's mode is not its problem
    # The same directory, made unreadable: a directory needs r and x, not 0644.
    trustdir.chmod(0o700)
    shutil.copy(site.root, trustdir / "root.crt")
    report = check(str(write(workdir / "d.conf", sources + f"ntstrustedcerts {trustdir}\n")), user=USER)
    (f,) = [f for f in report.findings if f.severity == "critical"]
    assert f.code == "trust-unreadable" and f.hint == f"chmod 0755 {trustdir}"
    trustdir.chmod(0o755)
    report = check(str(write(workdir / "e.conf", sources + f"ntstrustedcerts {trustdir}\n")), user=USER)
    assert report.status == "OK" and "trust-valid" in report.codes("ok")


def test_hints_fit_what_is_there(workdir):
    """A directory where a key belongs gets no chmod; a file where ntsdumpdir belongs gets no mkdir."""
    (workdir / "keydir").mkdir()
    (workdir / "dumpfile").write_text("")
    conf = write(
        workdir / "c.conf",
        f"ntsserverkey {workdir}/keydir\nntsservercert {workdir}/keydir\nntsdumpdir {workdir}/dumpfile\n"
        "local stratum 8\n",
    )
    report = check(str(conf), user=USER)
    found = {f.code: f for f in report.findings if f.severity in ("critical", "warning")}
    assert {"key-is-directory", "cert-is-directory", "dumpdir-not-directory"} <= set(found), found
    for f in found.values():
        assert "chmod" not in (f.hint or "") and "mkdir" not in (f.hint or "") and "chown" not in (f.hint or "")
    missing = write(
        workdir / "m.conf",
        f"ntsserverkey {workdir}/k\nntsservercert {workdir}/c\nntsdumpdir {workdir}/not/yet\nlocal stratum 8\n",
    )
    (f,) = [f for f in check(str(missing), user=USER).findings if f.code == "dumpdir-missing"]
    assert f.hint.startswith("install -d -m 0750") and f.hint.endswith(f"{workdir}/not/yet")


def test_probe_problems_are_unknown_never_critical_usage(workdir, site):
    """--probe against sources that cannot be reached or a trust file chronyd's probe cannot load:
    UNKNOWN findings and exit 3 (never 2, which monitoring reads as CRITICAL)."""
    port = lab.free_port()  # nothing listens there
    unreadable = write(workdir / "empty.pem", "")
    conf = write(
        workdir / "c.conf",
        f"server 127.0.0.1 iburst nts ntsport {port}\nserver ::1 iburst nts ntsport {port} certset 1\n"
        f"server 127.0.0.2 iburst nts ntsport {port}\nntstrustedcerts {site.root}\nntstrustedcerts 1 {unreadable}\n",
    )
    report = check(str(conf), user="root", probe=True, timeout=1)
    probes = [f for f in report.findings if f.code == "source-probe"]
    assert len(probes) == 3 and all(f.severity == "unknown" for f in probes), probes
    assert "trust-unparsable" in report.codes("critical")  # the empty trust file itself is a real fault
    proc = run_cli(
        "check",
        "--chrony-conf",
        write(
            workdir / "d.conf",
            f"server 127.0.0.1 iburst nts ntsport {port}\n"
            f"server 127.0.0.2 iburst nts ntsport {port}\nserver 127.0.0.3 iburst nts ntsport {port}\n",
        ),
        "--probe",
        "--timeout",
        "1",
        "--json",
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["status"] == "UNKNOWN"


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        ["--warn-days", "soon"],
        ["--timeout", "0"],
        ["--warn-days", "3", "--critical-days", "9"],
        ["--ca", "/nonexistent/root.pem", "--chrony-conf", "/etc/chrony/chrony.conf"],
        ["--chrony-conf", "/nonexistent/chrony.conf"],
        ["--chrony-conf", "/dev/zero"],
        ["--chrony-conf", "/tmp"],
        ["extra-argument"],
    ],
)
def test_every_failure_to_run_is_unknown(args):
    proc = run_cli("check", *args)
    assert proc.returncode == 3, (args, proc.stdout, proc.stderr)
    assert proc.stderr.startswith("ntspki: error:") and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_chronyd_not_installed_is_said(workdir, monkeypatch):
    monkeypatch.setenv("PATH", str(workdir))
    with mock.patch("os.path.exists", lambda p: False if str(p).endswith("chronyd") else os.path.lexists(p)):
        report = check(str(write(workdir / "c.conf", "local stratum 8\nserver a iburst nts\n")), user="root")
    assert "chronyd-parse" in report.codes("info")


def test_hints_never_create_where_nothing_can_be(workdir):
    """A path under a file, or a dangling symlink: nothing can be created there, so the hint is to
    fix the path, never mkdir, copy or deploy to it."""
    afile = write(workdir / "afile", "")
    os.symlink("/nonexistent/x", workdir / "dangling")
    conf = write(
        workdir / "c.conf",
        f"ntsserverkey {afile}/k\nntsservercert {workdir}/dangling\nntsdumpdir {afile}/dump\n"
        f"server localhost iburst nts\nntstrustedcerts {afile}/root.pem\nlocal stratum 8\n",
    )
    found = {f.code: f for f in check(str(conf), user=USER).findings if f.severity in ("critical", "warning")}
    assert {"key-missing", "cert-missing", "dumpdir-missing", "trust-missing"} <= set(found), found
    assert f"{afile} is a file, not a directory" in found["key-missing"].message
    assert "/nonexistent/x, which does not exist" in found["cert-missing"].message
    for code in ("key-missing", "cert-missing", "dumpdir-missing", "trust-missing"):
        hint = found[code].hint
        assert "fix the path" in hint or hint.startswith("point ntsdumpdir"), hint
        assert not any(w in hint for w in ("install -d", "mkdir", "copy", "deploy the file")), hint


def test_a_key_directory_closed_to_others_is_not_opened(workdir, site):
    """chronyd's user cannot enter the key's directory: move the key, never chmod the directory
    open; a certificate's directory may be opened (certificates are public)."""
    private, certs = workdir / "private", workdir / "certs"
    for d in (private, certs):
        d.mkdir(mode=0o700)
    key, cert = private / "k.pem", certs / "c.pem"
    shutil.copy(site.live / "privkey.pem", key)
    shutil.copy(site.live / "fullchain.pem", cert)
    conf = write(
        workdir / "c.conf", f"ntsserverkey {key}\nntsservercert {cert}\nntsdumpdir {workdir}\nlocal stratum 8\n"
    )
    blocked = {f.path: f for f in check(str(conf), user=USER).findings if f.code == "dir-untraversable"}
    assert set(blocked) == {str(key), str(cert)}, blocked
    assert "chmod" not in blocked[str(key)].hint and "/etc/chrony/nts" in blocked[str(key)].hint
    assert f"chmod o+x {certs}" in blocked[str(cert)].hint


def test_chain_order_is_about_the_leaf_only(workdir, site):
    """chronyd pairs the key with the first certificate; after it the verifier (like GnuTLS's
    clients) takes the certificates in any order, so an unsorted rest is noted, not failed."""
    live = site.live
    unsorted = workdir / "unsorted.pem"
    unsorted.write_bytes((live / "cert.pem").read_bytes() + site.root.read_bytes() + (live / "chain.pem").read_bytes())
    conf = write(
        workdir / "c.conf",
        f"ntsserverkey {live}/privkey.pem\nntsservercert {unsorted}\nntsdumpdir {workdir}\nlocal stratum 8\n",
    )
    report = check(str(conf), user="root", ca_files=[str(site.root)])
    assert not report.codes("critical"), [(f.code, f.message) for f in report.findings if f.severity == "critical"]
    assert "chain-unsorted" in report.codes("info") and "chain-verifies" in report.codes("ok")
    only_ca = write(
        workdir / "c2.conf", f"ntsserverkey {live}/privkey.pem\nntsservercert {site.root}\nlocal stratum 8\n"
    )
    codes = check(str(only_ca), user="root", ca_files=[str(site.root)]).codes("critical")
    assert "cert-is-ca" in codes and "chain-order" not in codes, codes


def test_a_local_probe_that_cannot_connect_is_unknown(workdir, site):
    """--probe when nothing listens on the NTS-KE port: it could not check, so UNKNOWN (3), not CRITICAL."""
    port = lab.free_port()
    conf = write(
        workdir / "c.conf",
        f"ntsserverkey {site.live}/privkey.pem\nntsservercert {site.live}/fullchain.pem\nntsport {port}\n"
        f"ntsdumpdir {workdir}\nlocal stratum 8\n",
    )
    report = check(str(conf), user="root", ca_files=[str(site.root)], probe=True, timeout=1)
    (f,) = [f for f in report.findings if f.code == "probe-failed"]
    assert f.severity == "unknown" and "could not probe" in f.message and str(port) in f.hint
    assert report.status == "UNKNOWN" and report.exit_code == 3, [(x.severity, x.code) for x in report.findings]
