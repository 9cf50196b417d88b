"""`ntspki renew`: internal and ACME lineages in one home, real pebble, real chronyd for deploy."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import sys
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from cryptography import x509

from ntspki import pki
from ntspki.acme import acmeclient, solvers
from ntspki.issuing import ca as ca_mod
from ntspki.issuing import renew
from ntspki.pki import keys, names, verify
from ntspki.servers import lab
from ntspki.store import Home
from tests.conftest import make_site, run_cli
from tests.pebble_env import StubHTTP
from tests.test_acme import assert_error, snapshot

ACME_NAME = "acme.example.test"


@pytest.fixture
def mixed(pebble, workdir):
    """A home holding internal lineage `ntpserver` (site CA) and ACME lineage ACME_NAME (pebble)."""
    site = make_site(workdir / "home")
    spec = acmeclient.OrderSpec(
        name=ACME_NAME,
        sans=["127.0.0.1"],
        directory=pebble.directory_url,
        ca_bundle=str(pebble.ca_bundle),
        challenge=solvers.Challenge(http_port=pebble.http_port, http_address="127.0.0.1"),
    )
    acmeclient.obtain(site.home, spec, agree_tos=True)
    return site.home


def results(proc) -> dict:
    assert "Traceback" not in proc.stderr, proc.stderr
    return {o["name"]: o for o in json.loads(proc.stdout)["lineages"]}


def test_nothing_due_exits_zero_and_changes_nothing(mixed):
    before = snapshot(mixed.path)
    proc = run_cli("renew", "--jitter", "0.1", "--json", home=mixed.path)
    assert proc.returncode == 0, proc.stderr
    out = results(proc)
    assert set(out) == {"ntpserver", ACME_NAME}
    assert not any(o["due"] or o["renewed"] for o in out.values())
    assert "days left; due from" in out["ntpserver"]["reason"]
    # pebble 2.4 has no renewalInfo, so the lifetime rule decides for the ACME lineage too.
    assert "days left; due from" in out[ACME_NAME]["reason"]
    assert snapshot(mixed.path) == before
    text = run_cli("renew", home=mixed.path)
    assert text.returncode == 0 and "nothing renewed" in text.stdout


def test_dry_run_changes_nothing_even_when_forced(mixed):
    before = snapshot(mixed.path)
    proc = run_cli("renew", "--force", "--dry-run", "--json", home=mixed.path)
    assert proc.returncode == 0, proc.stderr
    out = results(proc)
    assert all(o["due"] and not o["renewed"] and o["reason"] == "forced" for o in out.values())
    assert json.loads(proc.stdout)["dry_run"] is True
    assert snapshot(mixed.path) == before
    assert not (mixed.path / ".renew.lock").exists()
    text = run_cli("renew", "--force", "--dry-run", home=mixed.path)
    assert f"{ACME_NAME}: would renew (forced)" in text.stdout and "dry run: nothing was changed" in text.stdout


def test_forced_renew_makes_new_versions_and_moves_live(mixed, pebble):
    old = {n: mixed.read_lineage(n) for n in ("ntpserver", ACME_NAME)}
    params = {n: mixed.read_renewal(n) for n in old}
    proc = run_cli("renew", "--force", "--json", home=mixed.path)
    assert proc.returncode == 0, proc.stderr
    out = results(proc)
    assert out["ntpserver"]["renewed"] and out["ntpserver"]["version"] == 2
    assert out[ACME_NAME]["renewed"] and out[ACME_NAME]["version"] == 2
    # No deploy config in this home: said, not a failure.
    assert "no deploy config" in json.loads(proc.stdout)["deploy_note"]
    for name in old:
        new = mixed.read_lineage(name)
        assert new.version == 2 and new.cert != old[name].cert and new.privkey != old[name].privkey
        assert os.readlink(mixed.live / name / "cert.pem") == f"../../archive/{name}/cert2.pem"
        assert (mixed.archive / name / "cert1.pem").read_bytes() == old[name].cert  # history kept
        assert mixed.read_renewal(name) == params[name]
    acme_chain = pki.load_certs(mixed.read_lineage(ACME_NAME).fullchain)
    verify.verify_chain(
        [x509.load_pem_x509_certificate(pebble.root_pem())], acme_chain, names.unique_sans([ACME_NAME, "127.0.0.1"])
    )
    internal_chain = pki.load_certs(mixed.read_lineage("ntpserver").fullchain)
    verify.verify_chain([ca_mod.load(mixed).root], internal_chain)
    sources = {r["name"]: (r["version"], r["source"]) for r in mixed.ledger.rows()}
    assert sources == {"ntpserver": (2, "internal"), ACME_NAME: (2, "acme")}


def _nearly_expired(home: Home, name: str, sans: list[str]) -> None:
    """A lineage whose certificate has 20 of its 80 days left (under a third): due."""
    ca = ca_mod.load(home)
    key = keys.generate("ec-p256")
    now = dt.datetime.now(dt.UTC)
    gns = names.unique_sans([name, *sans])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.intermediate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=60))
        .not_valid_after(now + dt.timedelta(days=20))
        .add_extension(x509.SubjectAlternativeName(gns), critical=False)
        .sign(ca.intermediate_key, keys.signature_hash(ca.intermediate_key))
    )
    with home.lock():
        version = home.write_version(name, keys.private_pem(key), pki.cert_pem(cert), ca.chain_pem)
        home.write_renewal(name, {"source": "internal", "sans": [name, *sans], "key_type": "ec-p384", "days": 30})
        home.ledger.record(name, version, pki.CertInfo.of(cert), "ec-p256", "internal")


def test_only_the_due_lineage_renews_and_with_its_stored_parameters(workdir):
    site = make_site(workdir / "home")
    _nearly_expired(site.home, "old.example.test", ["::1"])
    before_fresh = snapshot(site.home.path)
    proc = run_cli("renew", "--json", home=site.home.path)
    assert proc.returncode == 0, proc.stderr
    out = results(proc)
    assert out["old.example.test"]["renewed"] and "under a third of its lifetime" in out["old.example.test"]["reason"]
    assert not out["ntpserver"]["renewed"]
    leaf = pki.load_certs(site.home.read_lineage("old.example.test").cert)[0]
    assert keys.key_type_of(leaf.public_key()) == "ec-p384"  # key_type from renewal/NAME.json
    assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days == 30  # days from it too
    assert pki.san_strings(leaf) == ["old.example.test", "::1"]
    after = snapshot(site.home.path)
    assert {k: v for k, v in after.items() if "ntpserver" in k} == {
        k: v for k, v in before_fresh.items() if "ntpserver" in k
    }


def test_the_third_of_the_lifetime_boundary(site):
    leaf = pki.load_certs(site.home.read_lineage("ntpserver").cert)[0]
    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    edge = end - (end - start) / 3
    assert not renew.plan(site.home, "ntpserver", now=edge - dt.timedelta(seconds=1)).due
    assert renew.plan(site.home, "ntpserver", now=edge + dt.timedelta(seconds=1)).due
    assert "expired" in renew.plan(site.home, "ntpserver", now=end + dt.timedelta(seconds=1)).reason


# ---- ACME Renewal Information ---------------------------------------------------------------


class AriServer:
    """Debian's pebble 2.4 predates ARI, so a tiny ACME directory with renewalInfo stands in for
    the CA's side of RFC 9773: it serves the directory and one window, and records what it was asked."""

    def __init__(self):
        self.window: tuple[dt.datetime, dt.datetime] | None = None
        self.status = 200
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests.append(self.path)
                base = f"http://127.0.0.1:{outer.port}"
                if self.path == "/dir":
                    body = {
                        "newNonce": f"{base}/nonce",
                        "newAccount": f"{base}/acct",
                        "newOrder": f"{base}/order",
                        "renewalInfo": f"{base}/renewalInfo",
                        "meta": {},
                    }
                elif self.path.startswith("/renewalInfo/") and outer.status == 200:
                    start, end = outer.window
                    body = {
                        "suggestedWindow": {
                            "start": start.isoformat().replace("+00:00", "Z"),
                            "end": end.isoformat().replace("+00:00", "Z"),
                        },
                        "explanationURL": "https://ca.example.test/incident-42",
                    }
                else:
                    self.send_response(outer.status if self.path.startswith("/renewalInfo/") else 404)
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Retry-After", "21600")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.stub = StubHTTP(Handler)
        self.port, self.url, self.stop = self.stub.port, self.stub.url, self.stub.stop


def test_ari_window_decides_for_an_acme_lineage(mixed, workdir):
    ari = AriServer()
    try:
        params = mixed.read_renewal(ACME_NAME)
        mixed.write_renewal(ACME_NAME, {**params, "directory": ari.url, "ca_bundle": None})
        leaf = pki.load_certs(mixed.read_lineage(ACME_NAME).cert)[0]
        now = dt.datetime.now(dt.UTC)
        # A five-year pebble certificate: by its lifetime it is nowhere near due...
        ari.window = (now - dt.timedelta(hours=2), now - dt.timedelta(hours=1))
        p = renew.plan(mixed, ACME_NAME)
        assert p.due and "inside the CA's renewal window" in p.reason and "incident-42" in p.reason
        # ...and the CA was asked about exactly this certificate (RFC 9773 CertID).
        aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        serial = leaf.serial_number.to_bytes((leaf.serial_number.bit_length() + 8) // 8, "big")
        b64 = lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")  # noqa: E731
        assert ari.requests[-1] == f"/renewalInfo/{b64(aki)}.{b64(serial)}"
        ari.window = (now + dt.timedelta(days=3), now + dt.timedelta(days=4))
        p = renew.plan(mixed, ACME_NAME)
        assert not p.due and "not yet in the CA's renewal window" in p.reason
        assert now + dt.timedelta(days=3) <= dt.datetime.fromisoformat(p.renew_after) <= now + dt.timedelta(days=4)
        # The window brings renewal forward, never back: past a third of the lifetime it is due anyway.
        late = leaf.not_valid_after_utc - dt.timedelta(days=300)
        ari.window = (late + dt.timedelta(days=1), late + dt.timedelta(days=2))
        p = renew.plan(mixed, ACME_NAME, now=late)
        assert p.due and "under a third of its lifetime" in p.reason
        # Through the CLI (dry run: the stand-in cannot issue).
        ari.window = (now - dt.timedelta(hours=2), now - dt.timedelta(hours=1))
        before = snapshot(mixed.path)
        proc = run_cli("renew", ACME_NAME, "--dry-run", home=mixed.path)
        assert proc.returncode == 0, proc.stderr
        assert f"{ACME_NAME}: would renew (inside the CA's renewal window" in proc.stdout
        assert snapshot(mixed.path) == before
        # A CA whose ARI endpoint fails: the lifetime rule decides, and says why.
        ari.status = 500
        p = renew.plan(mixed, ACME_NAME)
        assert not p.due and "ARI not checked" in p.reason
    finally:
        ari.stop()


# ---- failures ---------------------------------------------------------------------------------


def test_one_failure_does_not_stop_the_others_and_leaves_its_lineage_alone(mixed):
    port = lab.free_port()
    params = mixed.read_renewal(ACME_NAME)
    mixed.write_renewal(ACME_NAME, {**params, "directory": f"https://127.0.0.1:{port}/dir"})
    acme_before = {k: v for k, v in snapshot(mixed.path).items() if ACME_NAME in k}
    proc = run_cli("renew", "--force", "--no-deploy", "--json", home=mixed.path)
    assert proc.returncode == 1
    out = results(proc)
    assert out["ntpserver"]["renewed"] and out["ntpserver"]["version"] == 2
    assert not out[ACME_NAME]["renewed"]
    assert f"cannot reach the ACME server 127.0.0.1:{port}" in out[ACME_NAME]["error"]
    assert {k: v for k, v in snapshot(mixed.path).items() if ACME_NAME in k} == acme_before
    text = run_cli("renew", ACME_NAME, "--force", "--no-deploy", home=mixed.path)
    assert text.returncode == 1 and f"{ACME_NAME}: FAILED: cannot reach the ACME server" in text.stdout
    assert text.stderr.strip().splitlines()[-1] == f"ntspki: error: failed: {ACME_NAME}"


def test_bad_arguments(site):
    assert_error(run_cli("renew", "nosuch", home=site.home.path), "no lineage 'nosuch'", code=2)
    assert_error(run_cli("renew", "ntpserver", "--all", home=site.home.path), "not both", code=2)
    assert_error(run_cli("renew", home=site.home.path / "nowhere"), "does not exist")
    # A lineage without renewal/NAME.json: skipped by a full run, an error when named.
    (site.home.renewal / "ntpserver.json").unlink()
    proc = run_cli("renew", home=site.home.path)
    assert proc.returncode == 0 and "ntpserver: skipped (no renewal configuration" in proc.stdout
    proc = run_cli("renew", "ntpserver", "--force", home=site.home.path)
    assert proc.returncode == 1
    assert "ntpserver: FAILED: no renewal configuration (renewal/ntpserver.json): cannot renew it" in proc.stdout
    assert site.home.versions("ntpserver") == [1]


# ---- renew, then deploy to a real chronyd ------------------------------------------------------


def test_renew_deploys_the_new_certificate_to_a_running_chronyd():
    from tests.deploy_env import DeployLab

    lab_ = DeployLab()
    try:
        config = lab_.write_config()
        served_before = lab_.served()
        proc = lab_.cli("renew", "ntpserver", "--force", "--json")
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        [target] = report["deployed"]["targets"]
        new = pki.fingerprint(pki.load_certs(lab_.home.read_lineage("ntpserver").cert)[0])
        assert target["status"] == "deployed" and target["new_sha256"] == new
        assert lab_.served() == new != served_before
        assert lab_.restarts() == 1
        assert lab_.client_syncs().ok
        assert config.exists()
    finally:
        lab_.stop()


# ---- the systemd units in examples/ -----------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def test_example_systemd_units_verify_and_run_the_real_command(tmp_path, site):
    """systemd-analyze checks the unit files offline; the ExecStart line runs as our CLI."""
    import shlex
    import subprocess

    service = (ROOT / "examples" / "ntspki-renew.service").read_text()
    timer = (ROOT / "examples" / "ntspki-renew.timer").read_text()
    assert "Unit=" not in timer  # the timer starts the service of the same name
    [exec_start] = [line.split("=", 1)[1] for line in service.splitlines() if line.startswith("ExecStart=")]
    argv = shlex.split(exec_start)
    assert argv[0] == "/usr/local/bin/ntspki" and argv[1] == "renew"
    (tmp_path / "man" / "man1").mkdir(parents=True)
    shutil.copy(ROOT / "man" / "ntspki-renew.1", tmp_path / "man" / "man1")
    ntspki_bin = Path(sys.executable).parent / "ntspki"
    (tmp_path / "ntspki-renew.service").write_text(service.replace(argv[0], str(ntspki_bin)))
    (tmp_path / "ntspki-renew.timer").write_text(timer)
    proc = subprocess.run(
        ["systemd-analyze", "verify", tmp_path / "ntspki-renew.service", tmp_path / "ntspki-renew.timer"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MANPATH": str(tmp_path / "man")},
    )
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
    # The same arguments (plus --dry-run, which skips the jitter sleep) against a real home.
    run = run_cli(*argv[1:], "--dry-run", home=site.home.path)
    assert run.returncode == 0, run.stderr
    assert "ntpserver: not due" in run.stdout
