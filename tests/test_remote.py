"""Keys that never leave their server: `csr` there, `sign` on the CA host, `install` back there,
through the real CLI. The CA applies its own policy to every request."""

from __future__ import annotations

import ipaddress
import json
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ntspki.issuing import ca
from ntspki.store import Home
from tests.conftest import run_cli

NAME = "ntp1.fleet.test"


@pytest.fixture
def homes(tmp_path):
    """A CA host (name constraints fleet.test and 198.18.0.0/15) and a server, each with its own home."""
    ca_home = Home(tmp_path / "ca")
    ca.create(ca_home, passphrase=None, permit_dns=["fleet.test"], permit_ip=["198.18.0.0/15"])
    return ca_home.path, tmp_path / "server", tmp_path


def _csr(key, names, cn=NAME, extra=()) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    for ext, critical in extra:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _one_line_error(proc, code=1) -> str:
    assert proc.returncode == code, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ntspki: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_round_trip_key_stays_on_the_server(homes):
    ca_home, server, tmp = homes
    req = run_cli("csr", NAME, "--san", "198.18.0.20", "--san", "fd00:f1ee::14", "--json", home=server, check=True)
    made = json.loads(req.stdout)
    pending = server / "pending" / f"{NAME}.key"
    assert made["pending_key"] == str(pending)
    assert stat.S_IMODE(pending.stat().st_mode) == 0o600
    assert stat.S_IMODE(pending.parent.stat().st_mode) == 0o700
    csr = x509.load_pem_x509_csr(made["csr"].encode())
    assert csr.is_signature_valid
    assert made["sans"] == [NAME, "198.18.0.20", "fd00:f1ee::14"]

    # A second request would silently orphan the first key: refused without --force.
    before = pending.read_bytes()
    _one_line_error(run_cli("csr", NAME, home=server))
    assert pending.read_bytes() == before
    forced = json.loads(
        run_cli("csr", NAME, "--san", "198.18.0.20", "--force", "--json", home=server, check=True).stdout
    )
    assert pending.read_bytes() != before
    (tmp / "req.pem").write_text(forced["csr"])

    signed = run_cli(
        "sign", tmp / "req.pem", "--days", "30", "--out", tmp / "chain.pem", "--json", home=ca_home, check=True
    )
    info = json.loads(signed.stdout)
    chain = x509.load_pem_x509_certificates((tmp / "chain.pem").read_bytes())
    inter = x509.load_pem_x509_certificate((ca_home / "ca" / "intermediate.pem").read_bytes())
    assert len(chain) == 2 and chain[1] == inter  # leaf first, then the intermediate, never the root
    assert 29 <= (chain[0].not_valid_after_utc - chain[0].not_valid_before_utc).days <= 31
    listed = json.loads(run_cli("list", "--json", home=ca_home, check=True).stdout)
    assert [(r["name"], r["source"], r["sha256"]) for r in listed] == [(NAME, "remote", info["sha256"])]
    # The CA host holds no key of the server's: only its own CA keys.
    ca_keys = [p for p in ca_home.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]
    assert sorted(p.name for p in ca_keys) == ["intermediate.key", "root.key"]

    root = ca_home / "ca" / "root.pem"
    done = json.loads(
        run_cli("install", NAME, "--cert", tmp / "chain.pem", "--root", root, "--json", home=server, check=True).stdout
    )
    assert (done["version"], done["changed"], done["sha256"]) == (1, True, info["sha256"])
    assert not pending.exists()  # the key now lives in the lineage, 0600
    assert stat.S_IMODE((server / "archive" / NAME / "privkey1.pem").stat().st_mode) == 0o600
    assert (server / "ca" / "root.pem").read_bytes() == root.read_bytes()
    show = run_cli("show", NAME, "--json", home=server)
    assert show.returncode == 0 and json.loads(show.stdout)["key_matches"] is True, show.stdout + show.stderr
    # Installing the same chain again (a re-run) changes nothing.
    again = json.loads(run_cli("install", NAME, "--cert", tmp / "chain.pem", "--json", home=server, check=True).stdout)
    assert (again["version"], again["changed"]) == (1, False)

    # Round two through stdin/stdout: the next version of the same lineage.
    req2 = run_cli("csr", NAME, "--san", "198.18.0.20", home=server, check=True).stdout
    chain2 = run_cli("sign", "-", home=ca_home, input=req2, check=True).stdout
    run_cli("install", NAME, "--cert", "-", home=server, input=chain2, check=True)
    assert json.loads(run_cli("show", NAME, "--json", home=server, check=True).stdout)["version"] == 2
    assert [r["version"] for r in json.loads(run_cli("list", "--json", home=ca_home, check=True).stdout)] == [2]


def test_sign_decides_every_extension(homes):
    ca_home, _server, tmp = homes
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = _csr(
        key,
        [x509.DNSName(NAME)],
        extra=[
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.CODE_SIGNING]), False),
            (x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"), False),
            (x509.BasicConstraints(ca=False, path_length=None), True),
        ],
    )
    proc = run_cli("sign", "-", home=ca_home, input=csr.decode())
    assert proc.returncode == 0, proc.stderr
    assert "ignored the requested extension extendedKeyUsage" in proc.stderr
    leaf = x509.load_pem_x509_certificates(proc.stdout.encode())[0]
    exts = {e.oid: e.value for e in leaf.extensions}
    assert exts[x509.oid.ExtensionOID.EXTENDED_KEY_USAGE] == x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    assert exts[x509.oid.ExtensionOID.BASIC_CONSTRAINTS].ca is False
    assert x509.ObjectIdentifier("1.3.6.1.4.1.99999.1") not in exts
    assert exts[x509.oid.ExtensionOID.KEY_USAGE].key_encipherment  # the CA's choice for RSA
    assert exts[x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME].get_values_for_type(x509.DNSName) == [NAME]


def test_sign_refusals_are_one_line(homes):
    ca_home, _server, tmp = homes
    p256 = ec.generate_private_key(ec.SECP256R1())
    good = _csr(p256, [x509.DNSName(NAME)])
    der = bytearray(x509.load_pem_x509_csr(good).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the signature no longer verifies
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    ca_ext = [(x509.BasicConstraints(ca=True, path_length=None), True)]
    outside_ip = x509.IPAddress(ipaddress.ip_address("198.51.100.1"))
    rsa1024 = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cases = [
        ("signature does not verify", tampered),
        ("asks to be a CA", _csr(p256, [x509.DNSName(NAME)], extra=ca_ext)),
        ("name constraints", _csr(p256, [x509.DNSName("ntp.example.com")], cn="ntp.example.com")),
        ("name constraints", _csr(p256, [x509.DNSName(NAME), outside_ip])),
        ("not allowed", _csr(ec.generate_private_key(ec.SECP521R1()), [x509.DNSName(NAME)])),
        ("rsa-1024", _csr(rsa1024, [x509.DNSName(NAME)])),
        ("RFC822Name", _csr(p256, [x509.DNSName(NAME), x509.RFC822Name("ops@fleet.test")])),
        ("bad host name", _csr(p256, [x509.DNSName("bad_name.fleet.test")])),
        ("not a PKCS#10", b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"),
    ]
    for needle, pem in cases:
        proc = run_cli("sign", "-", home=ca_home, input=pem.decode())
        assert proc.returncode != 0 and not proc.stdout, (needle, proc.stdout)
        line = proc.stderr.strip()
        assert len(line.splitlines()) == 1 and line.startswith("ntspki: error: "), (needle, proc.stderr)
        assert needle in line, (needle, line)
    assert (
        not (ca_home / "ledger.sqlite3").exists()
        or json.loads(run_cli("list", "--json", home=ca_home, check=True).stdout) == []
    )
    _one_line_error(run_cli("sign", tmp / "missing.pem", home=ca_home), code=2)
    _one_line_error(run_cli("sign", "-", "--days", "0", home=ca_home, input=good.decode()), code=2)


def test_install_refusals_leave_nothing(homes):
    ca_home, server, tmp = homes
    root = ca_home / "ca" / "root.pem"
    # No pending key at all.
    other = ec.generate_private_key(ec.SECP256R1())
    (tmp / "other.pem").write_text(
        run_cli("sign", "-", home=ca_home, input=_csr(other, [x509.DNSName(NAME)]).decode(), check=True).stdout
    )
    assert "no pending key" in _one_line_error(
        run_cli("install", NAME, "--cert", tmp / "other.pem", "--root", root, home=server)
    )
    run_cli("csr", NAME, home=server, check=True)
    # A chain for somebody else's key.
    assert "not for the pending key" in _one_line_error(
        run_cli("install", NAME, "--cert", tmp / "other.pem", "--root", root, home=server)
    )
    # A chain from another CA.
    req = run_cli("csr", NAME, "--force", home=server, check=True).stdout
    rogue = Home(tmp / "rogue")
    ca.create(rogue, passphrase=None)
    (tmp / "rogue.pem").write_text(run_cli("sign", "-", home=rogue.path, input=req, check=True).stdout)
    assert "does not verify" in _one_line_error(
        run_cli("install", NAME, "--cert", tmp / "rogue.pem", "--root", root, home=server)
    )
    # No root to verify to.
    assert "--root" in _one_line_error(run_cli("install", NAME, "--cert", tmp / "rogue.pem", home=server), code=2)
    # Intermediate first.
    good = x509.load_pem_x509_certificates(run_cli("sign", "-", home=ca_home, input=req, check=True).stdout.encode())
    (tmp / "reversed.pem").write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in good[::-1]))
    assert "leaf first" in _one_line_error(
        run_cli("install", NAME, "--cert", tmp / "reversed.pem", "--root", root, home=server)
    )
    assert not (server / "live" / NAME).exists() and not (server / "archive" / NAME).exists()
    assert (server / "pending" / f"{NAME}.key").exists()  # still waiting for the right chain


def test_renew_says_a_remote_lineage_needs_the_ca(homes):
    ca_home, server, tmp = homes
    req = run_cli("csr", NAME, home=server, check=True).stdout
    chain = run_cli("sign", "-", home=ca_home, input=req, check=True).stdout
    run_cli("install", NAME, "--cert", "-", "--root", ca_home / "ca" / "root.pem", home=server, input=chain, check=True)
    # The CA host also keeps a lineage of its own: renewing both forced, in one run.
    run_cli("issue", "ca.fleet.test", home=ca_home, check=True)
    proc = run_cli("renew", "--force", "--no-deploy", "--json", home=server)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = json.loads(proc.stdout)["lineages"]
    assert (row["name"], row["due"], row["renewed"], row["needs_ca"], row["error"]) == (NAME, True, False, True, None)
    text = run_cli("renew", "--force", "--no-deploy", home=server, check=True).stdout
    assert f"ntspki csr {NAME} --force" in text
    dry = json.loads(run_cli("renew", "--dry-run", "--json", home=server, check=True).stdout)["lineages"][0]
    assert (dry["due"], dry["needs_ca"]) == (False, False)
    ca_run = json.loads(run_cli("renew", "--force", "--no-deploy", "--json", home=ca_home, check=True).stdout)
    assert [(r["name"], r["renewed"]) for r in ca_run["lineages"]] == [("ca.fleet.test", True)]


def test_install_trusts_both_roots_during_a_rollover(homes):
    """Mid-rollover a server's home trusts both roots (ca/trust.pem): a chain from the new CA installs
    without --root, while a home that knows only the old root refuses it."""
    old_ca, server, tmp = homes
    new_ca = Home(tmp / "new-ca")
    ca.create(new_ca, passphrase=None, permit_dns=["fleet.test"])
    req = run_cli("csr", NAME, home=server, check=True).stdout
    chain = run_cli("sign", "-", home=new_ca.path, input=req, check=True).stdout
    (server / "ca").mkdir(mode=0o755, exist_ok=True)
    (server / "ca" / "root.pem").write_bytes((old_ca / "ca" / "root.pem").read_bytes())
    assert "verif" in _one_line_error(run_cli("install", NAME, "--cert", "-", home=server, input=chain))
    (server / "ca" / "trust.pem").write_bytes(
        (old_ca / "ca" / "root.pem").read_bytes() + (new_ca.ca_dir / "root.pem").read_bytes()
    )
    done = json.loads(run_cli("install", NAME, "--cert", "-", "--json", home=server, input=chain, check=True).stdout)
    assert (done["version"], done["changed"]) == (1, True)
