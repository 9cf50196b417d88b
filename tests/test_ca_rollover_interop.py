"""The CA's life with REAL chrony on loopback: a chronyd NTS server (as _chrony, deployed by
`ntspki renew`, i.e. re-issue + deploy + restart + probe) and one-shot chrony clients, each doing a
fresh NTS-KE against the certificate served at that moment.

- Root rollover: a client configured from `trust export` (and re-exported after each phase)
  authenticates through start -> switch (server re-issued and restarted) -> finish; a client that
  only ever had the old root fails after the switch (the negative control: the test can fail).
- Intermediate rotation: a client keeps authenticating with no change at all.
- A leaked server key: revoke, then `renew` re-issues with a new key and deploys; clients go on.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cryptography import x509

from ntspki import pki
from ntspki.issuing import ca as ca_mod
from ntspki.pki import keys, verify
from ntspki.servers import lab
from tests.deploy_env import DeployLab


@pytest.fixture
def dl():
    d = DeployLab()
    d.write_config()  # HOME/deploy.toml: `renew` deploys `ntpserver` to the lab chronyd
    d.clients = d.root / "clients"
    d.clients.mkdir(mode=0o755)
    yield d
    d.stop()


def sync(dl: DeployLab, trust: Path) -> lab.ClientResult:
    return lab.chrony_client("ntpserver", dl.server.ntp_port, dl.server.nts_port, trust)


def served_chain_issuer(dl: DeployLab) -> x509.Name:
    return x509.load_pem_x509_certificates(dl.cert.read_bytes())[0].issuer


def ok(result: lab.ClientResult, dl: DeployLab) -> bool:
    assert result.ok, f"{result.output}\n--- server log:\n{dl.server.log()[-1500:]}"
    return True


def test_root_rollover_keeps_updated_clients_on_nts_and_drops_stale_ones(dl):
    updated, stale, snippet = dl.clients / "trust.pem", dl.clients / "stale.pem", dl.clients / "nts.conf"
    dl.cli("trust", "export", "--out", updated, "--chrony-snippet", snippet, check=True)
    lines = snippet.read_text().splitlines()
    assert f"ntstrustedcerts {updated}" in lines and "server ntpserver iburst nts" in lines
    trust_file = Path(next(line.split()[1] for line in lines if line.startswith("ntstrustedcerts")))
    shutil.copy(updated, stale)  # this client is never updated again
    old_root = x509.load_pem_x509_certificate((dl.home.ca_dir / "root.pem").read_bytes())
    first = dl.served()
    assert ok(sync(dl, trust_file), dl) and ok(sync(dl, stale), dl)

    # start: a second root in the bundle; the server still serves the old chain
    dl.cli("ca", "rollover", "start", "--no-passphrase", check=True)
    dl.cli("trust", "export", "--out", updated, check=True)
    assert len(x509.load_pem_x509_certificates(updated.read_bytes())) == 2
    assert dl.served() == first
    assert ok(sync(dl, trust_file), dl) and ok(sync(dl, stale), dl)

    # switch: issuance moves to the new root; renew --force re-issues, deploys, restarts, probes
    dl.cli("ca", "rollover", "switch", check=True)
    restarts = dl.restarts()
    report = dl.cli("renew", "--force", "--json", check=True)
    assert '"ok": true' in report.stdout, report.stdout
    assert dl.restarts() > restarts and dl.served() != first
    new_root = x509.load_pem_x509_certificate((dl.home.ca_dir / "root.pem").read_bytes())
    assert new_root != old_root
    verify.verify_chain([new_root], x509.load_pem_x509_certificates(dl.cert.read_bytes()))
    assert ok(sync(dl, trust_file), dl)
    refused = sync(dl, stale)  # the negative control: only the old root, the server on the new chain
    assert not refused.ok and "issuer is unknown" in refused.output, refused.output

    # finish: the old root leaves the bundle; the updated client still authenticates
    dl.cli("ca", "rollover", "finish", check=True)
    dl.cli("trust", "export", "--out", updated, check=True)
    assert x509.load_pem_x509_certificates(updated.read_bytes()) == [new_root]
    assert ok(sync(dl, trust_file), dl)
    assert not sync(dl, stale).ok


def test_intermediate_rotation_needs_no_change_on_clients(dl):
    trust = dl.clients / "trust.pem"
    dl.cli("trust", "export", "--out", trust, check=True)
    before = trust.read_bytes()
    old_issuer = served_chain_issuer(dl)
    assert ok(sync(dl, trust), dl)
    ca_mod.rotate_intermediate(dl.home, None)  # the lab CA's root key is not encrypted
    assert ok(sync(dl, trust), dl)  # certificates of the old intermediate stay valid
    dl.cli("renew", "--force", check=True)  # re-issue under the new intermediate, deploy, restart
    new_inter = x509.load_pem_x509_certificate((dl.home.ca_dir / "intermediate.pem").read_bytes())
    assert served_chain_issuer(dl) == new_inter.subject != old_issuer
    assert dl.served() == pki.fingerprint(x509.load_pem_x509_certificates(dl.cert.read_bytes())[0])
    assert ok(sync(dl, trust), dl)
    dl.cli("trust", "export", "--out", trust, check=True)
    assert trust.read_bytes() == before  # nothing for clients to pick up


def test_leaked_server_key_revoke_then_renew_deploys_a_new_key(dl):
    trust = dl.clients / "trust.pem"
    dl.cli("trust", "export", "--out", trust, check=True)
    leaked = keys.public_der(keys.load_private_pem(dl.key.read_bytes()))
    first = dl.served()
    revoked = dl.cli("revoke", "ntpserver", "--reason", "key-compromise", check=True)
    assert "do not fetch CRLs" in revoked.stdout
    # the revoked pair cannot be deployed again, even forced
    again = dl.cli("deploy", "--all", "--force")
    assert again.returncode != 0 and "revoked" in again.stdout + again.stderr
    assert dl.served() == first
    dl.cli("renew", check=True)  # due because revoked: re-issued with a new key and deployed
    assert dl.served() != first
    assert keys.public_der(keys.load_private_pem(dl.key.read_bytes())) != leaked
    assert ok(sync(dl, trust), dl)
