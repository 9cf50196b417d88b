"""`ntspki probe` against real chronyd on loopback: the happy path by address and by name, IPv6,
several key types, ntsprocesses > 1, many targets at once, the CLI; and a real NTS NAK."""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ntspki import pki
from ntspki.errors import NtspkiError
from ntspki.nts import ntske
from ntspki.nts.probe import parse_target, probe, probe_many
from ntspki.servers import lab
from tests.conftest import make_site, run_cli
from tests.test_cli_basics import _heavy_modules


@pytest.fixture(scope="module")
def servers():
    """A site per key type, each served by chronyd dropping to its own user."""
    base = lab.make_workdir("ntspki-probe-")
    made = {}
    for key_type, nproc in (("ec-p256", 2), ("ed25519", 1), ("rsa-2048", 1)):
        site = make_site(base / key_type, key_type)
        server = lab.ChronyServer(
            site.live / "privkey.pem",
            site.live / "fullchain.pem",
            workdir=base / f"{key_type}-chronyd",
            user="root",
            ntsprocesses=nproc,
        )
        made[key_type] = (site, server)
    try:
        with ThreadPoolExecutor(len(made)) as pool:
            list(pool.map(lambda s: s[1].start(), made.values()))
        yield made
    finally:
        with ThreadPoolExecutor(len(made)) as pool:  # ~1.5 s each to stop: all at once
            list(pool.map(lambda s: s[1].stop(), made.values()))
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def main(servers):
    return servers["ec-p256"]


# ---- the happy path --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target, name",
    [
        ("127.0.0.1:{port}", None),
        ("[::1]:{port}", None),
        ("127.0.0.1:{port}", "ntpserver"),
        ("[::1]:{port}", "ntpserver-ipv6"),
    ],
)
def test_real_chronyd_by_address_and_name(main, target, name):
    site, server = main
    r = probe(target.format(port=server.nts_port), ca_files=[site.root], name=name)
    assert r.ok, r.error
    assert (r.tls_version, r.alpn, r.aead) == ("TLSv1.3", "ntske/1", 15)
    assert r.cookies == 8 and r.new_cookies == 1
    assert r.authenticated and r.stratum == 8 and r.leap == 0
    assert r.ntp_port == server.ntp_port  # from chronyd's NTPv4 Port record
    assert abs(r.offset_s) < 0.05 and 0 <= r.delay_s < 0.5
    leaf = site.home.read_lineage("ntpserver")
    assert r.chain[0]["sans"] == ["ntpserver", "ntpserver-ipv6", "127.0.0.1", "::1"]
    assert len(r.chain) == 2 and "intermediate" in r.chain[1]["subject"]
    assert r.chain[0]["sha256"] == pki.fingerprint(pki.load_certs(leaf.cert)[0])
    assert set(r.to_dict()) >= {
        "ok",
        "error",
        "tls_version",
        "alpn",
        "chain",
        "aead",
        "cookies",
        "ntp_server",
        "ntp_port",
        "authenticated",
        "stratum",
        "offset_s",
        "delay_s",
    }


@pytest.mark.parametrize("key_type", ["ed25519", "rsa-2048"])
def test_other_key_types(servers, key_type):
    site, server = servers[key_type]
    r = probe(f"127.0.0.1:{server.nts_port}", ca_files=[site.root], name="ntpserver")
    assert r.ok and r.authenticated, r.error


def test_name_rules_are_chronys(main):
    site, server = main
    target = f"127.0.0.1:{server.nts_port}"
    r = probe(target, ca_files=[site.root], name="ntpserver.example")
    assert not r.ok and r.stage == "verify" and "not a DNS SAN" in r.error
    r = probe(target, ca_files=[site.root], name="127.0.0.2")
    assert not r.ok and "127.0.0.2 is not an IP SAN" in r.error
    r = probe(target, ca_files=[site.root], name="NTPSERVER.")  # case and the root dot do not matter
    assert r.ok, r.error


def test_trust_comes_from_ca_or_the_system_store(main, servers):
    site, server = main
    r = probe(f"127.0.0.1:{server.nts_port}")  # the system store does not know the site CA
    assert not r.ok and r.stage == "verify" and "neither trusted nor in the chain" in r.error
    assert r.chain and r.chain[0]["subject"] == "CN=ntpserver"  # what was served is still reported
    other_site, _ = servers["ed25519"]
    r = probe(f"127.0.0.1:{server.nts_port}", ca_files=[other_site.root])
    assert not r.ok and "issuer" in r.error
    # both roots: trusted
    r = probe(f"127.0.0.1:{server.nts_port}", ca_files=[other_site.root, site.root])
    assert r.ok, r.error
    with pytest.raises(NtspkiError, match="cannot read CA file"):
        probe(f"127.0.0.1:{server.nts_port}", ca_files=["/nonexistent.pem"])


def test_expectations(main):
    site, server = main
    target = f"127.0.0.1:{server.nts_port}"
    r = probe(target, ca_files=[site.root])
    fp, serial = r.chain[0]["sha256"], r.chain[0]["serial"]
    colons = ":".join(fp[i : i + 2] for i in range(0, len(fp), 2)).upper()
    assert probe(target, ca_files=[site.root], expect_fingerprint=colons, expect_serial="0" + serial).ok
    bad = probe(target, ca_files=[site.root], expect_fingerprint="00" * 32)
    assert not bad.ok and bad.stage == "expect" and "expected 0000" in bad.error and bad.authenticated
    bad = probe(target, ca_files=[site.root], expect_serial="abc")
    assert not bad.ok and "serial" in bad.error
    warned = probe(target, ca_files=[site.root], warn_days=365)
    assert warned.ok and warned.warnings and "expires in 89 days" in warned.warnings[0]
    assert probe(target, ca_files=[site.root], warn_days=30).warnings == []


def test_ntsprocesses_and_many_at_once(main):
    site, server = main  # ntsprocesses 2
    targets = [f"127.0.0.1:{server.nts_port}", f"[::1]:{server.nts_port}"] * 20
    done = []
    start = time.monotonic()
    results = probe_many(targets, concurrency=8, ca_files=[site.root], progress=done.append)
    assert time.monotonic() - start < 10
    assert len(done) == 40 and all(r.ok and r.authenticated for r in results), [r.error for r in results if not r.ok]
    assert [r.target for r in results] == targets  # results in order


def test_no_ntp(main):
    site, server = main
    r = probe(f"127.0.0.1:{server.nts_port}", ca_files=[site.root], ntp=False)
    assert r.ok and r.cookies == 8 and not r.authenticated and r.stratum is None


def test_nts_nak_from_real_chronyd(site, chrony_servers):
    """Cookies from before a restart without ntsdumpdir are refused with kiss code NTSN."""
    server = chrony_servers(site.live / "privkey.pem", site.live / "fullchain.pem", ntsdumpdir=False)
    with ntske.KeClient("127.0.0.1", server.nts_port, "ntpserver", 5) as client:
        client.connect()
        client.handshake()
        resp = client.exchange()
    c2s, s2c = client.session.c2s, client.session.s2c
    _, reply = ntske.ntp_exchange("127.0.0.1", resp.port, c2s, s2c, resp.cookies[0], 5)
    assert reply.stratum == 8  # the cookie works...
    server.restart()
    with pytest.raises(ntske.ProtocolError, match="NTS NAK .kiss code NTSN."):
        ntske.ntp_exchange("127.0.0.1", resp.port, c2s, s2c, resp.cookies[1], 5)  # ...until the restart


# ---- targets -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("ntp.example", ("ntp.example", 4460)),
        ("ntp.example:123", ("ntp.example", 123)),
        ("192.0.2.1", ("192.0.2.1", 4460)),
        ("192.0.2.1:4461", ("192.0.2.1", 4461)),
        ("::1", ("::1", 4460)),
        ("[::1]", ("::1", 4460)),
        ("[2001:db8::1]:14460", ("2001:db8::1", 14460)),
    ],
)
def test_parse_target(text, expected):
    assert parse_target(text) == expected


@pytest.mark.parametrize(
    "text", ["", "host:0", "host:70000", "host:x", "[::1", "[::1]x", "[ntp]:1", "2001:db8::1:99999x", "bad_host!"]
)
def test_parse_target_rejects(text):
    with pytest.raises(NtspkiError) as e:
        parse_target(text)
    assert e.value.exit_code == 2


# ---- the CLI ---------------------------------------------------------------------------------------


def test_cli_single_human_and_json(main):
    site, server = main
    proc = run_cli("probe", f"127.0.0.1:{server.nts_port}", "--ca", site.root, "--name", "ntpserver")
    assert proc.returncode == 0, proc.stderr
    assert "(name ntpserver): OK" in proc.stdout and "authenticated, stratum 8" in proc.stdout
    proc = run_cli("probe", f"[::1]:{server.nts_port}", "--ca", site.root, "--json")
    assert proc.returncode == 0
    (line,) = proc.stdout.splitlines()
    data = json.loads(line)
    assert data["ok"] is True and data["error"] is None and data["authenticated"] is True
    assert data["chain"][0]["not_after"] and data["ntp_server"] == "::1"


def test_cli_many_from_file_table_and_exit_1(main, workdir):
    site, server = main
    dead = lab.free_port()
    listing = workdir / "servers.txt"
    listing.write_text(f"# fleet\n127.0.0.1:{server.nts_port}\n[::1]:{server.nts_port}  # v6\n")
    proc = run_cli("probe", f"127.0.0.1:{dead}", "--from", listing, "--ca", site.root, "--timeout", "2")
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:2] == ["TARGET", "RESULT"]
    assert "FAIL" in lines[1] and "refused" in lines[1]
    assert " ok " in lines[2] and " ok " in lines[3]
    assert lines[-1] == "2 of 3 servers passed"
    proc = run_cli("probe", "--from", listing, "--ca", site.root, "--json")
    assert proc.returncode == 0 and [json.loads(ln)["ok"] for ln in proc.stdout.splitlines()] == [True, True]


def test_cli_usage_errors(workdir):
    for args in (
        ["probe"],
        ["probe", "host:99999"],
        ["probe", "--from", workdir / "missing"],
        ["probe", "127.0.0.1", "--ca", workdir / "missing.pem"],
        ["probe", "a", "--timeout", "0"],
    ):
        proc = run_cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stderr.strip()


def test_cli_modules_stay_light(tmp_path):
    assert _heavy_modules(["probe", "--help"], tmp_path) == []
    assert _heavy_modules(["check", "--help"], tmp_path) == []
