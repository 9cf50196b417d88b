"""Every key type ntspki offers, for the CA and the server certificate alike, works where it counts:
OpenSSL and GnuTLS accept the chain, a real chronyd serves it as its NTS certificate (reading the key
as its own unprivileged user, like a packaged chronyd), and a real chrony client trusting only
ca/root.pem synchronises by `ntpserver`, by `ntpserver-ipv6` (::1) and by 127.0.0.1. Negative
controls: a client trusting another root, and a name that is not in the SAN, both fail."""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ntspki.issuing import ca
from ntspki.pki import keys
from ntspki.servers import lab
from ntspki.store import Home
from tests.conftest import make_site

SERVER_AUTH = "1.3.6.1.5.5.7.3.1"


class Served:
    """One key type's site and the chronyd serving its certificate."""

    def __init__(self, key_type: str, base: Path):
        self.key_type = key_type
        self.site = make_site(base / "home", key_type)
        # What `ntspki deploy` will do: copies chronyd's user can read, the key root:_chrony 0640.
        self.workdir = lab.make_workdir(f"ntspki-interop-{key_type}-")
        self.key = self.workdir / "privkey.pem"
        self.fullchain = self.workdir / "fullchain.pem"
        self.key.write_bytes((self.site.live / "privkey.pem").read_bytes())
        os.chown(self.key, 0, grp.getgrnam(lab.chrony_user()).gr_gid)
        self.key.chmod(0o640)
        self.fullchain.write_bytes((self.site.live / "fullchain.pem").read_bytes())
        self.fullchain.chmod(0o644)
        self.server = lab.ChronyServer(
            self.key, self.fullchain, workdir=self.workdir / "chronyd", user=lab.chrony_user()
        )

    def client(self, name: str, trust=None, hosts=None) -> lab.ClientResult:
        return lab.chrony_client(name, self.server.ntp_port, self.server.nts_port, trust or self.site.root, hosts=hosts)


@pytest.fixture(scope="module", params=keys.KEY_TYPES)
def served(request, tmp_path_factory):
    s = Served(request.param, tmp_path_factory.mktemp(f"interop-{request.param}"))
    s.server.start()
    yield s
    s.server.stop()
    shutil.rmtree(s.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def other_root(tmp_path_factory) -> Path:
    """The root of a different CA: trusting it must not make our server acceptable."""
    home = Home(tmp_path_factory.mktemp("other") / "home")
    ca.create(home, passphrase=None)
    return home.ca_dir / "root.pem"


def test_key_types_are_what_was_asked(served):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(served.key.read_bytes(), None)
    assert keys.key_type_of(key) == served.key_type
    for pem in (served.site.root, served.site.home.ca_dir / "intermediate.pem"):
        assert keys.key_type_of(x509.load_pem_x509_certificate(pem.read_bytes()).public_key()) == served.key_type


def test_openssl_verify_x509_strict(served):
    live = served.site.live
    base = [
        "openssl",
        "verify",
        "-x509_strict",
        "-purpose",
        "sslserver",
        "-CAfile",
        str(served.site.root),
        "-untrusted",
        str(live / "chain.pem"),
    ]
    for check in (
        ["-verify_hostname", "ntpserver"],
        ["-verify_hostname", "ntpserver-ipv6"],
        ["-verify_ip", "127.0.0.1"],
        ["-verify_ip", "::1"],
    ):
        proc = subprocess.run([*base, *check, str(live / "cert.pem")], capture_output=True, text=True)
        assert proc.returncode == 0 and proc.stdout.strip().endswith(": OK"), (check, proc.stdout, proc.stderr)
    # The same check fails for a name the certificate does not hold (so the OK above means something).
    proc = subprocess.run([*base, "-verify_hostname", "other", str(live / "cert.pem")], capture_output=True, text=True)
    assert proc.returncode != 0 and "hostname mismatch" in proc.stdout + proc.stderr


def test_gnutls_certtool_verify(served):
    live = served.site.live
    for name in ("ntpserver", "ntpserver-ipv6"):
        proc = subprocess.run(
            [
                "certtool",
                "--verify",
                "--load-ca-certificate",
                str(served.site.root),
                "--infile",
                str(live / "fullchain.pem"),
                "--verify-hostname",
                name,
                "--verify-purpose",
                SERVER_AUTH,
                "--verify-profile",
                "medium",
            ],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0 and "Chain verification output: Verified." in proc.stdout, proc.stdout + proc.stderr
    # --verify-chain wants the whole chain up to the self-signed root.
    whole = served.workdir / "whole-chain.pem"
    whole.write_bytes((live / "fullchain.pem").read_bytes() + served.site.root.read_bytes())
    proc = subprocess.run(["certtool", "--verify-chain", "--infile", str(whole)], capture_output=True, text=True)
    assert proc.returncode == 0 and "Chain verification output: Verified." in proc.stdout, proc.stdout + proc.stderr
    proc = subprocess.run(
        [
            "certtool",
            "--verify",
            "--load-ca-certificate",
            str(served.site.root),
            "--infile",
            str(live / "fullchain.pem"),
            "--verify-hostname",
            "other",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "Chain verification output: Verified." not in proc.stdout
    assert "does not match the expected" in proc.stdout, proc.stdout


@pytest.mark.parametrize("name", ["ntpserver", "ntpserver-ipv6", "127.0.0.1"])
def test_chrony_client_synchronises(served, name):
    result = served.client(name)
    assert result.ok, f"{served.key_type} by {name}:\n{result.output}\n--- server log:\n{served.server.log()[-1500:]}"
    assert not served.server.credentials_failed()


def test_client_trusting_another_root_fails(served, other_root):
    result = served.client("ntpserver", trust=other_root)
    assert not result.ok
    assert "TLS handshake" in result.output and "issuer is unknown" in result.output, result.output


def test_name_not_in_the_san_fails(served):
    result = served.client("other", hosts={"other": "127.0.0.1"})
    assert not result.ok
    assert "does not match" in result.output, result.output
