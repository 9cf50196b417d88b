"""The CA's whole life without a network: `ca create --name/--force`, the root key's KDF, `ca show`
and `ca status`, the trust bundle and its export, intermediate rotation, the root rollover's phases
(repeatable, resumable), revocation and CRLs (openssl and pkilint check them), what deploy, renew
and check make of it, and the bad inputs of every new command (one line, nothing changed)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ntspki import pki
from ntspki.errors import NtspkiError
from ntspki.issuing import ca as ca_mod
from ntspki.issuing import issue, rollover
from ntspki.pki import keys, verify
from ntspki.store import Home, fsutil
from tests.conftest import run_cli
from tests.test_issue import mode, one_line_error

PASS = {"NTSPKI_PASSPHRASE": "correct horse battery staple"}
NO_PASS = {k: v for k, v in os.environ.items() if k != "NTSPKI_PASSPHRASE"}


def cli(home: Path, *args, env=None):
    return run_cli(*args, home=home, env=env, check=True)


def snapshot(home: Path) -> dict:
    """Every file and directory of a home with its mode and content hash, and the ledger's rows
    (SQLite's -wal/-shm side files and the lock file change on mere reads)."""
    out: dict = {}
    for p in sorted(home.rglob("*")):
        rel = str(p.relative_to(home))
        if p.name.endswith(("-wal", "-shm")) or p.name in (".lock", "ledger.sqlite3"):
            continue
        st = os.lstat(p)
        out[rel] = (st.st_mode, hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None)
    db = home / "ledger.sqlite3"
    if db.exists():
        con = sqlite3.connect(db)
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        out["ledger"] = {t: con.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in tables}
        con.close()
    return out


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def site(tmp_path) -> Path:
    """A named CA (encrypted root key) with a server lineage."""
    home = tmp_path / "home"
    cli(
        home,
        "ca",
        "create",
        "--name",
        "Example Site",
        "--permit-dns",
        "example.net",
        "--permit-ip",
        "127.0.0.0/8",
        env=PASS,
    )
    cli(home, "issue", "ntp.example.net", "--san", "127.0.0.1")
    return home


# ---- ca create: name, key protection, --force ------------------------------------------------------


def test_name_and_constraints_in_certificates_show_and_status(site):
    root, inter = cert(site / "ca/root.pem"), cert(site / "ca/intermediate.pem")
    for c in (root, inter):
        assert pki.organization(c) == "Example Site"
    assert root.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value.startswith("Example Site root CA ")
    shown = cli(site, "ca", "show").stdout
    assert "name constraints: DNS example.net, IP 127.0.0.0/8" in shown
    js = json.loads(cli(site, "ca", "show", "--json").stdout)
    assert js["name_constraints"] == {"permit_dns": ["example.net"], "permit_ip": ["127.0.0.0/8"]}
    unconstrained = site.parent / "plain"
    cli(unconstrained, "ca", "create", "--no-passphrase")
    assert "name constraints: none" in cli(unconstrained, "ca", "show").stdout
    assert pki.organization(cert(unconstrained / "ca/root.pem")) == "ntspki"


def test_root_key_uses_a_slow_kdf_that_openssl_reads(site):
    pem = (site / "ca/private/root.key").read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert keys.kdf_rounds(pem) >= 600_000
    parsed = subprocess.run(
        ["openssl", "asn1parse", "-in", str(site / "ca/private/root.key")], capture_output=True, text=True, check=True
    ).stdout
    assert "PBKDF2" in parsed and "hmacWithSHA256" in parsed and "aes-256-cbc" in parsed
    ok = subprocess.run(
        [
            "openssl",
            "pkey",
            "-in",
            str(site / "ca/private/root.key"),
            "-passin",
            f"pass:{PASS['NTSPKI_PASSPHRASE']}",
            "-pubout",
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.encode() == cert(site / "ca/root.pem").public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    bad = subprocess.run(
        ["openssl", "pkey", "-in", str(site / "ca/private/root.key"), "-passin", "pass:wrong", "-noout"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0
    # ntspki itself reads it back (rotate-intermediate needs it), and only with the passphrase.
    key = keys.load_private_pem(pem, PASS["NTSPKI_PASSPHRASE"].encode())
    assert keys.key_matches_cert(key, cert(site / "ca/root.pem"))
    with pytest.raises(NtspkiError, match="wrong passphrase"):
        keys.load_private_pem(pem, b"wrong")
    assert json.loads(cli(site, "ca", "status", "--json").stdout)["root"]["kdf_rounds"] >= 600_000


@pytest.mark.parametrize("key_type", keys.KEY_TYPES)
def test_every_key_type_encrypts_and_reads_back(key_type):
    key = keys.generate(key_type) if not key_type.startswith("rsa-4") else keys.generate("rsa-2048")
    pem = keys.private_pem(key, b"p\xc3\xa4ss")
    assert keys.kdf_rounds(pem) == keys.KDF_ROUNDS
    assert keys.public_der(keys.load_private_pem(pem, b"p\xc3\xa4ss")) == keys.public_der(key)


def test_symlinked_dirs_inside_home_keep_their_targets_modes(tmp_path):
    outside = tmp_path / "elsewhere"
    home = tmp_path / "home"
    home.mkdir()
    for d in ("live", "archive", "renewal"):
        (outside / d).mkdir(parents=True)
        (outside / d).chmod(0o755)
        (home / d).symlink_to(outside / d)
    h = Home(home)
    ca_mod.create(h, passphrase=None)
    issue.issue(h, "ntpserver", ["127.0.0.1"])
    issue.issue(h, "ntpserver", ["127.0.0.1"])
    for d in ("live", "archive", "renewal"):
        assert mode(outside / d) == 0o755, d
    assert (outside / "live/ntpserver/cert.pem").exists()
    # a real directory still gets 0700
    (home / "renewal").unlink()
    (home / "renewal").mkdir(mode=0o755)
    h.ensure()
    assert mode(home / "renewal") == 0o700


def _fail_at(monkeypatch, n: int):
    """The n-th atomic_write (and anything after it) fails like a full disk."""
    real = fsutil.atomic_write
    calls = {"n": 0}

    def flaky(*a, **kw):
        calls["n"] += 1
        if calls["n"] >= n:
            raise OSError(28, "No space left on device", str(a[0]))
        return real(*a, **kw)

    monkeypatch.setattr(fsutil, "atomic_write", flaky)
    return calls


@pytest.mark.parametrize("fail_at", [1, 2, 3, 4, 5])
def test_force_create_that_fails_leaves_the_old_ca_working(tmp_path, monkeypatch, fail_at):
    home = Home(tmp_path / "home")
    ca_mod.create(home, passphrase=b"old passphrase")
    issue.issue(home, "ntpserver", ["127.0.0.1"])
    before = snapshot(home.path)
    _fail_at(monkeypatch, fail_at)
    with pytest.raises(OSError):
        ca_mod.create(home, passphrase=b"new passphrase", force=True)
    monkeypatch.undo()
    assert snapshot(home.path) == before  # no staging directory left, nothing moved aside
    assert issue.issue(home, "ntpserver", ["127.0.0.1"]).version == 2
    keys.load_private_pem((home.private_dir / "root.key").read_bytes(), b"old passphrase")


def test_a_killed_create_loses_no_key(tmp_path):
    home = Home(tmp_path / "home")
    ca_mod.create(home, passphrase=None)
    old_key = (home.private_dir / "root.key").read_bytes()
    # killed right after the exchange: the old CA is in the staging directory
    shutil.copytree(home.ca_dir, home.path / ".ca.new-killed")
    # killed while building: never in use
    (home.path / ".ca.new-partial/private").mkdir(parents=True)
    (home.path / ".ca.new-partial/private/root.key").write_bytes(b"half")
    ca_mod.create(home, passphrase=None, force=True)
    asides = [p for p in home.path.iterdir() if p.name.startswith("ca.old")]
    assert sorted((p / "private/root.key").read_bytes() == old_key for p in asides) == [True, True]
    assert not [p for p in home.path.iterdir() if p.name.startswith(".ca.new")]


def test_force_create_swaps_the_whole_ca_dir(site):
    old_root = (site / "ca/root.pem").read_bytes()
    cli(site, "revoke", "ntp.example.net")
    cli(site, "ca", "create", "--force", "--no-passphrase")
    [aside] = [p for p in site.iterdir() if p.name.startswith("ca.old")]
    assert (aside / "root.pem").read_bytes() == old_root
    assert (aside / "crl.pem").exists() and (aside / "trust.pem").exists()
    assert not (site / "ca/crl.pem").exists()
    assert (site / "ca/trust.pem").read_bytes() == (site / "ca/root.pem").read_bytes()
    assert not [p for p in site.iterdir() if p.name.startswith(".ca.new")]


# ---- ca status ------------------------------------------------------------------------------------


def _status(home: Path, *args) -> dict:
    return json.loads(cli(home, "ca", "status", "--json", *args).stdout)


def test_status_json_shape(site):
    st = _status(site)
    assert st["status"] == "OK" and st["warnings"] == []
    for label in ("root", "intermediate"):
        c = st[label]
        assert set(c) >= {"subject", "key_type", "serial", "sha256", "not_after", "days_left"}
        assert c["key_type"] == "ec-p256" and len(c["sha256"]) == 64
        assert int(c["serial"], 16) == cert(site / f"ca/{label}.pem").serial_number
    assert st["root"]["key_encrypted"] is True
    assert st["intermediate"]["permit_dns"] == ["example.net"]
    assert st["rollover"] is None and st["crl"] is None and st["retired_intermediates"] == []
    assert [r["sha256"] for r in st["trust_bundle"]["roots"]] == [st["root"]["sha256"]]
    text = cli(site, "ca", "status").stdout
    assert text.startswith("OK: ") and "rollover:     none" in text and "PBKDF2 600000 rounds" in text


@pytest.mark.parametrize(
    "root_days,inter_days,expect",
    [
        (3650, 22, ("OK", [])),
        (3650, 20, ("WARNING", ["intermediate-expiring"])),
        (3650, 6, ("CRITICAL", ["intermediate-expiring"])),
        (20, 20, ("WARNING", ["root-expiring", "intermediate-expiring"])),
    ],
)
def test_status_thresholds_are_check_s(tmp_path, root_days, inter_days, expect):
    home = tmp_path / "home"
    cli(home, "ca", "create", "--no-passphrase", "--root-days", root_days, "--intermediate-days", inter_days)
    st = _status(home)
    assert (st["status"], [w["code"] for w in st["warnings"]]) == expect
    # the same certificates through `list`: a warning on stderr, the JSON unchanged
    listed = run_cli("list", "--json", home=home)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    assert ("warning: the intermediate CA expires" in listed.stderr) == ("intermediate-expiring" in expect[1])
    # thresholds can be moved, as in check
    assert _status(home, "--warn-days", "1", "--critical-days", "0")["status"] == "OK"


# ---- trust export ------------------------------------------------------------------------------------


def test_trust_export_bundle_and_chrony_snippet(site, tmp_path):
    cli(site, "issue", "ntp2.example.net")
    out, snippet = tmp_path / "trust.pem", tmp_path / "nts.conf"
    proc = cli(site, "trust", "export", "--out", out, "--chrony-snippet", snippet)
    assert "1 root(s)" in proc.stdout
    assert out.read_bytes() == (site / "ca/trust.pem").read_bytes() == (site / "ca/root.pem").read_bytes()
    assert snippet.read_text().splitlines()[1:] == [
        f"ntstrustedcerts {out}",
        "server ntp.example.net iburst nts",
        "server ntp2.example.net iburst nts",
    ]
    assert mode(out) == 0o644
    assert cli(site, "trust", "export").stdout.encode() == out.read_bytes()
    cli(site, "trust", "export", "--chrony-snippet", snippet, "--client-path", "/etc/chrony/site.pem")
    assert "ntstrustedcerts /etc/chrony/site.pem" in snippet.read_text()
    # chronyd itself accepts the snippet
    conf = tmp_path / "client.conf"
    conf.write_text(snippet.read_text().replace("/etc/chrony/site.pem", str(out)))
    parsed = subprocess.run(["chronyd", "-p", "-f", str(conf)], capture_output=True, text=True)
    assert parsed.returncode == 0 and "server ntp.example.net iburst nts" in parsed.stdout, parsed.stderr


# ---- intermediate rotation ----------------------------------------------------------------------------


def test_rotate_intermediate_keeps_old_certificates_valid(site):
    root = cert(site / "ca/root.pem")
    old_inter = cert(site / "ca/intermediate.pem")
    old_chain = x509.load_pem_x509_certificates((site / "live/ntp.example.net/fullchain.pem").read_bytes())
    wrong = run_cli("ca", "rotate-intermediate", home=site, env={**NO_PASS, "NTSPKI_PASSPHRASE": "wrong"})
    one_line_error(wrong, "wrong passphrase")
    proc = cli(site, "ca", "rotate-intermediate", env=PASS)
    assert "renew --force" in proc.stdout and "do not fetch CRLs" in proc.stdout
    new_inter = cert(site / "ca/intermediate.pem")
    assert new_inter.serial_number != old_inter.serial_number and new_inter.subject != old_inter.subject
    assert ca_mod.constraints_of(new_inter) == (["example.net"], ["127.0.0.0/8"])  # carried over
    assert (site / f"ca/retired/{old_inter.serial_number:x}.pem").exists()
    assert mode(site / f"ca/private/retired/{old_inter.serial_number:x}.key") == 0o600
    verify.verify_chain([root], old_chain)  # the old certificate still verifies to the same root
    cli(site, "renew", "--force", "--no-deploy")
    new_chain = x509.load_pem_x509_certificates((site / "live/ntp.example.net/fullchain.pem").read_bytes())
    assert new_chain[1] == new_inter
    verify.verify_chain([root], new_chain)
    st = _status(site)
    assert [r["serial"] for r in st["retired_intermediates"]] == [f"{old_inter.serial_number:x}"]
    # the old alias still works
    cli(site, "ca", "intermediate", env=PASS)
    assert len(list((site / "ca/retired").glob("*.pem"))) == 2


# ---- rollover phases ------------------------------------------------------------------------------


def test_rollover_phases_are_idempotent_and_recorded(site):
    old_root = (site / "ca/root.pem").read_bytes()
    one_line_error(run_cli("ca", "rollover", "switch", home=site), "no root rollover")
    one_line_error(run_cli("ca", "rollover", "finish", home=site), "no root rollover")
    cli(site, "ca", "rollover", "start", env=PASS)
    new_root = (site / "ca/next/root.pem").read_bytes()
    assert "nothing to do" in cli(site, "ca", "rollover", "start", env=PASS).stdout
    assert (site / "ca/next/root.pem").read_bytes() == new_root
    assert (site / "ca/trust.pem").read_bytes() == old_root + new_root
    assert (site / "ca/root.pem").read_bytes() == old_root  # servers still get the old chain
    st = _status(site)
    assert st["rollover"]["phase"] == "started" and len(st["trust_bundle"]["roots"]) == 2
    one_line_error(run_cli("ca", "rollover", "finish", home=site), "switch")
    cli(site, "ca", "rollover", "switch")
    assert "nothing to do" in cli(site, "ca", "rollover", "switch").stdout
    assert (site / "ca/root.pem").read_bytes() == new_root
    assert (site / "ca/trust.pem").read_bytes() == new_root + old_root
    assert json.loads((site / "ca/rollover.json").read_text())["phase"] == "switched"
    one_line_error(run_cli("ca", "rollover", "start", home=site, env=PASS), "finish")
    cli(site, "show", "ntp.example.net")  # an old-chain lineage still verifies against the bundle
    # the lineage is still on the old chain: finish refuses, naming it
    one_line_error(run_cli("ca", "rollover", "finish", home=site), "ntp.example.net", "renew --force")
    cli(site, "renew", "--force", "--no-deploy")
    chain = x509.load_pem_x509_certificates((site / "live/ntp.example.net/fullchain.pem").read_bytes())
    verify.verify_chain([x509.load_pem_x509_certificate(new_root)], chain)
    cli(site, "ca", "rollover", "finish")
    assert "nothing to do" in cli(site, "ca", "rollover", "finish").stdout
    assert (site / "ca/trust.pem").read_bytes() == new_root
    assert _status(site)["rollover"]["phase"] == "finished"
    assert not (site / "ca/previous").exists() and len(list((site / "ca/old-roots").iterdir())) == 1
    # the new root's key is protected the same way, and a second rollover works
    assert keys.kdf_rounds((site / "ca/private/root.key").read_bytes()) >= 600_000
    cli(site, "ca", "rollover", "start", env=PASS)
    assert _status(site)["rollover"]["phase"] == "started"


@pytest.mark.parametrize("crash_after", [1, 2, 6, 8, 10, 12, 13])
def test_a_killed_switch_completes_when_run_again(tmp_path, monkeypatch, crash_after):
    home = Home(tmp_path / "home")
    ca_mod.create(home, passphrase=None)
    rollover.start(home, None)
    new_root = (home.ca_dir / "next/root.pem").read_bytes()
    old_root = (home.ca_dir / "root.pem").read_bytes()
    _fail_at(monkeypatch, crash_after)
    with pytest.raises(OSError):
        rollover.switch(home)
    monkeypatch.undo()
    assert rollover.state(home)["phase"] in ("started", "switching")
    step = rollover.switch(home)
    assert step.phase == "switched"
    assert (home.ca_dir / "root.pem").read_bytes() == new_root
    assert (home.ca_dir / "previous/root.pem").read_bytes() == old_root
    assert (home.ca_dir / "trust.pem").read_bytes() == new_root + old_root
    loaded = ca_mod.load(home)
    assert keys.key_matches_cert(loaded.intermediate_key, loaded.intermediate)
    issue.issue(home, "ntpserver", ["127.0.0.1"])


# ---- revocation and the CRL -------------------------------------------------------------------------


def _crls(path: Path) -> list[bytes]:
    data = path.read_bytes()
    return [b + b"-----END X509 CRL-----\n" for b in data.split(b"-----END X509 CRL-----\n")[:-1]]


def _openssl_crl_verify(crl: bytes, issuer: Path, tmp_path: Path) -> str:
    f = tmp_path / "one-crl.pem"
    f.write_bytes(crl)
    proc = subprocess.run(
        ["openssl", "crl", "-in", str(f), "-CAfile", str(issuer), "-verify", "-noout", "-text"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and "verify OK" in proc.stderr + proc.stdout, proc.stderr
    return proc.stdout


def _pkilint(crl: bytes, tmp_path: Path) -> None:
    f = tmp_path / "lint-crl.pem"
    f.write_bytes(crl)
    lint = Path(sys.executable).with_name("lint_crl")
    proc = subprocess.run(
        [str(lint), "lint", "-t", "CRL", "-p", "PKIX", "-s", "ERROR", str(f)], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "ERROR" not in proc.stdout, proc.stdout + proc.stderr
    # the lint sees problems when there are some: a CRL without its CRL number is an error
    issuer = keys.generate("ec-p256")
    bare = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(x509.Name([]))
        .last_update(pki.now())
        .next_update(pki.now() + dt.timedelta(days=1))
        .sign(issuer, keys.signature_hash(issuer))
    )
    f.write_bytes(bare.public_bytes(serialization.Encoding.PEM))
    proc = subprocess.run(
        [str(lint), "lint", "-t", "CRL", "-p", "PKIX", "-s", "ERROR", str(f)], capture_output=True, text=True
    )
    assert proc.returncode != 0 and "ERROR" in proc.stdout


def test_revoke_writes_a_crl_that_openssl_and_pkilint_accept(site, tmp_path):
    serial1 = format(cert(site / "live/ntp.example.net/cert.pem").serial_number, "x")
    proc = cli(site, "revoke", "ntp.example.net", "--reason", "key-compromise")
    assert (
        serial1 in proc.stdout and "do not fetch CRLs" in proc.stdout and "ntspki renew ntp.example.net" in proc.stdout
    )
    assert "already" in cli(site, "revoke", "--serial", serial1.upper()).stdout
    # a second lineage, revoked by serial with colons
    cli(site, "issue", "ntp2.example.net")
    serial2 = format(cert(site / "live/ntp2.example.net/cert.pem").serial_number, "x")
    cli(site, "revoke", "--serial", ":".join(serial2[i : i + 2] for i in range(0, len(serial2), 2)))
    [crl] = _crls(site / "ca/crl.pem")
    text = _openssl_crl_verify(crl, site / "ca/intermediate.pem", tmp_path)
    for s in (serial1, serial2):
        assert s.upper() in text.replace(":", "").upper()
    assert "Key Compromise" in text and "Next Update" in text
    parsed = x509.load_pem_x509_crl(crl)
    assert parsed.next_update_utc > pki.now() + dt.timedelta(days=6)
    assert parsed.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    _pkilint(crl, tmp_path)
    # `ntspki crl` re-signs with a higher number, the same list
    out = json.loads(cli(site, "crl", "--json").stdout)
    assert out["crls"][0]["number"] == 3 and sorted(out["crls"][0]["revoked"]) == sorted([serial1, serial2])
    assert _status(site)["crl"]["crls"][0]["revoked"] == out["crls"][0]["revoked"]


def test_revoked_under_a_retired_intermediate_is_in_its_own_crl(site, tmp_path):
    old_inter = site / "old-intermediate.pem"
    old_inter.write_bytes((site / "ca/intermediate.pem").read_bytes())
    serial = format(cert(site / "live/ntp.example.net/cert.pem").serial_number, "x")
    cli(site, "ca", "rotate-intermediate", env=PASS)
    cli(site, "revoke", "ntp.example.net", "--reason", "superseded")
    current, retired = _crls(site / "ca/crl.pem")
    assert (
        serial.upper()
        not in _openssl_crl_verify(current, site / "ca/intermediate.pem", tmp_path).replace(":", "").upper()
    )
    assert serial.upper() in _openssl_crl_verify(retired, old_inter, tmp_path).replace(":", "").upper()
    _pkilint(retired, tmp_path)


def test_revoking_a_retired_intermediate_signs_the_root_s_crl(site, tmp_path, workdir):
    old_inter = tmp_path / "old-intermediate.pem"
    old_inter.write_bytes((site / "ca/intermediate.pem").read_bytes())
    serial = format(cert(old_inter).serial_number, "x")
    current = format(cert(site / "ca/intermediate.pem").serial_number, "x")
    one_line_error(run_cli("revoke", "--serial", current, home=site), "current intermediate", "rotate-intermediate")
    cli(site, "ca", "rotate-intermediate", env=PASS)
    before = snapshot(site)
    wrong = run_cli("revoke", "--serial", serial, home=site, env={**NO_PASS, "NTSPKI_PASSPHRASE": "wrong"})
    one_line_error(wrong, "wrong passphrase")
    one_line_error(run_cli("revoke", "--serial", serial, home=site, env=NO_PASS, input=""), "passphrase")
    assert snapshot(site) == before
    proc = cli(site, "revoke", "--serial", serial, "--reason", "key-compromise", env=PASS)
    assert "rollover" in proc.stdout and "do not fetch CRLs" in proc.stdout
    [arl] = _crls(site / "ca/arl.pem")
    text = _openssl_crl_verify(arl, site / "ca/root.pem", tmp_path)
    assert serial.upper() in text.replace(":", "").upper()  # openssl may print a leading zero
    assert x509.load_pem_x509_crl(arl).next_update_utc > pki.now() + dt.timedelta(days=300)
    f = tmp_path / "arl.pem"
    f.write_bytes(arl)
    lint = subprocess.run(
        [str(Path(sys.executable).with_name("lint_crl")), "lint", "-t", "ARL", "-p", "PKIX", "-s", "ERROR", str(f)],
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0 and "ERROR" not in lint.stdout, lint.stdout
    # what the revoked intermediate issued is refused by deploy and re-issued by renew
    deploy = [
        "deploy",
        "--lineage",
        "ntp.example.net",
        "--cert",
        workdir / "ntp.crt",
        "--key",
        workdir / "ntp.key",
        "--probe",
        "none",
        "--restart-command",
        "true",
        "--service-conf",
        "none",  # a copy: this host's chrony.conf does not read it
        "--dry-run",
    ]
    refused = run_cli(*deploy, home=site)
    assert refused.returncode != 0 and "issuing intermediate" in refused.stdout + refused.stderr
    assert "its intermediate was revoked" in cli(site, "renew", "--dry-run").stdout
    cli(site, "renew", "--no-deploy")
    assert run_cli(*deploy, home=site).returncode == 0
    # the root's CRL is re-signed only with the passphrase, and checked before anything is written
    before = snapshot(site)
    one_line_error(
        run_cli("crl", "--arl", home=site, env={**NO_PASS, "NTSPKI_PASSPHRASE": "wrong"}), "wrong passphrase"
    )
    assert snapshot(site) == before
    out = json.loads(cli(site, "crl", "--arl", "--json", env=PASS).stdout)
    [root_crl] = [c for c in out["crls"] if c["file"].endswith("arl.pem")]
    assert root_crl["number"] == 2 and root_crl["revoked"] == [serial]


def test_deploy_refuses_and_renew_reissues_a_revoked_lineage_with_a_new_key(site, workdir):
    live = site / "live/ntp.example.net"
    old_key = keys.public_der(keys.load_private_pem((live / "privkey.pem").read_bytes()))
    deploy = [
        "deploy",
        "--lineage",
        "ntp.example.net",
        "--cert",
        workdir / "ntp.crt",
        "--key",
        workdir / "ntp.key",
        "--probe",
        "none",
        "--restart-command",
        "true",
        "--service-conf",
        "none",  # a copy: this host's chrony.conf does not read it
        "--dry-run",
    ]
    assert run_cli(*deploy, home=site).returncode == 0
    cli(site, "revoke", "ntp.example.net")
    refused = run_cli(*deploy, home=site)
    assert refused.returncode != 0 and "was revoked" in refused.stdout + refused.stderr
    plan = cli(site, "renew", "--dry-run").stdout
    assert "revoked" in plan
    cli(site, "renew", "--no-deploy")
    new_key = keys.public_der(keys.load_private_pem((live / "privkey.pem").read_bytes()))
    assert new_key != old_key
    assert run_cli(*deploy, home=site).returncode == 0
    assert "would renew" not in cli(site, "renew", "--dry-run").stdout


def test_every_renewal_uses_a_new_key(site):
    live = site / "live/ntp.example.net"
    seen = {keys.public_der(keys.load_private_pem((live / "privkey.pem").read_bytes()))}
    for _ in range(3):
        cli(site, "renew", "--force", "--no-deploy")
        seen.add(keys.public_der(keys.load_private_pem((live / "privkey.pem").read_bytes())))
    assert len(seen) == 4


# ---- check --trust-bundle ---------------------------------------------------------------------------


def test_check_warns_when_a_client_lacks_a_bundle_root(site, tmp_path):
    cli(site, "ca", "rollover", "start", env=PASS)
    client_trust = tmp_path / "client-trust.pem"
    client_trust.write_bytes((site / "ca/root.pem").read_bytes())  # what the client got before start
    client_trust.chmod(0o644)
    conf = tmp_path / "chrony.conf"
    conf.write_text(f"server ntp.example.net iburst nts\nntstrustedcerts {client_trust}\nnosystemcert\n")
    bundle = tmp_path / "bundle.pem"
    cli(site, "trust", "export", "--out", bundle)
    args = ["check", "--chrony-conf", conf, "--trust-bundle", bundle, "--user", "root", "--json"]
    report = json.loads(run_cli(*args).stdout)
    [finding] = [f for f in report["findings"] if f["code"] == "trust-bundle-missing"]
    assert finding["severity"] == "warning" and "root CA" in finding["message"]
    client_trust.write_bytes(bundle.read_bytes())
    report = json.loads(run_cli(*args).stdout)
    assert "trust-bundle-missing" not in {f["code"] for f in report["findings"]}
    assert "trust-bundle" in {f["code"] for f in report["findings"]}
    missing = run_cli("check", "--chrony-conf", conf, "--trust-bundle", tmp_path / "nope.pem")
    one_line_error(missing, "--trust-bundle")


# ---- bad inputs: one line, nothing changed -------------------------------------------------------------


BAD = [
    (["ca", "create", "--name", ""], "--name"),
    (["ca", "create", "--name", "x" * 41, "--force", "--no-passphrase"], "--name"),
    (["ca", "create", "--name", "bad\nname", "--force", "--no-passphrase"], "--name"),
    (["ca", "create", "--force", "--no-passphrase", "--permit-ip", "nonsense"], "--permit-ip"),
    (["ca", "status", "--warn-days", "3", "--critical-days", "5"], "critical-days"),
    (["ca", "status", "--warn-days", "x"], "warn-days"),
    (["ca", "rotate-intermediate", "--permit-ip", "300.1.1.0/24"], "--permit-ip"),
    (["ca", "rotate-intermediate", "--passphrase-file", "/nonexistent/pass"], "passphrase"),
    (["ca", "rollover", "switch"], "no root rollover"),
    (["ca", "rollover", "finish"], "no root rollover"),
    (["ca", "rollover", "start", "--no-passphrase", "--passphrase-file", "/etc/hostname"], "contradict"),
    (["ca", "rollover", "start", "--key-type", "dsa"], "key-type"),
    (["ca", "rollover", "nosuch"], "nosuch"),
    (["revoke"], "NAME or --serial"),
    (["revoke", "ntp.example.net", "--serial", "1f"], "NAME or --serial"),
    (["revoke", "nosuch"], "nosuch"),
    (["revoke", "../etc"], "lineage name"),
    (["revoke", "--serial", "xyz"], "--serial"),
    (["revoke", "--serial", "-5"], "--serial"),
    (["revoke", "--serial", "0"], "--serial"),
    (["revoke", "--serial", "ab" * 30], "--serial"),
    (["revoke", "--serial", "1234"], "no certificate with serial 1234"),
    (["revoke", "ntp.example.net", "--reason", "because"], "--reason"),
    (["revoke", "ntp.example.net", "--reason", "certificate-hold"], "--reason"),
    (["crl", "--days", "0"], "--days"),
    (["crl", "--days", "100000"], "--days"),
    (["crl", "--days", "x"], "--days"),
    (["crl", "--arl", "--arl-days", "0"], "--arl-days"),
    (["crl", "--arl", "--passphrase-file", "/nonexistent/pass"], "passphrase"),
    (["trust", "export", "--out", "/nonexistent/dir/trust.pem"], "does not exist"),
    (["trust", "export", "--out", "/tmp"], "directory"),
    (["trust", "export", "--chrony-snippet", "/nonexistent/x.conf"], "does not exist"),
    (["trust", "export", "--chrony-snippet", "/tmp/ca-x.conf", "--client-path", "relative.pem"], "--client-path"),
    (["trust", "export", "--out", "/tmp/ca-same", "--chrony-snippet", "/tmp/ca-same"], "same file"),
    (["trust", "nosuch"], "nosuch"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a)[:60] for a, _ in BAD])
def test_bad_input_is_one_line_and_changes_nothing(site, args, needle):
    before = snapshot(site)
    one_line_error(run_cli(*args, home=site, env=NO_PASS, input=""), needle)
    assert snapshot(site) == before


@pytest.mark.parametrize(
    "args",
    [
        ["ca", "status"],
        ["revoke", "x"],
        ["crl"],
        ["trust", "export"],
        ["ca", "rollover", "switch"],
        ["ca", "rotate-intermediate"],
    ],
)
def test_commands_without_a_ca_say_so(tmp_path, args):
    home = tmp_path / "empty"
    one_line_error(run_cli(*args, home=home, env=NO_PASS, input=""))
    assert not home.exists() or not (home / "ca/root.pem").exists()


def test_revoking_a_certificate_the_site_did_not_issue_is_refused(site, tmp_path):
    other = Home(tmp_path / "other")
    ca_mod.create(other, passphrase=None)
    issue.issue(other, "stranger", ["127.0.0.1"])
    # put the stranger's certificate into this site's ledger as if imported
    h = Home(site)
    c = cert(other.live / "stranger/cert.pem")
    h.write_version(
        "stranger",
        (other.live / "stranger/privkey.pem").read_bytes(),
        pki.cert_pem(c),
        (other.ca_dir / "intermediate.pem").read_bytes(),
    )
    before = snapshot(site)
    one_line_error(run_cli("revoke", "stranger", home=site), "not issued by this site's CA")
    assert snapshot(site) == before
