"""`ntspki acme register|issue` against a real ACME CA: pebble + challtestsrv on loopback, with
real validation of http-01 (standalone and webroot) and dns-01 (through a hook script)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import stat
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509

from ntspki import pki
from ntspki.pki import names, verify
from ntspki.servers import lab
from ntspki.servers.lab import chrony_client, free_port
from ntspki.store import Home
from tests.conftest import run_cli
from tests.pebble_env import StubHTTP, start_pebble

NAME = "ntp1.example.test"


def acme_args(pebble) -> list[str]:
    return ["--directory", pebble.directory_url, "--ca-bundle", pebble.ca_bundle]


def standalone(pebble) -> list[str]:
    return ["--http-port", pebble.http_port, "--http-address", "127.0.0.1"]


def snapshot(home: Path) -> dict:
    """Everything about the lineages on disk: links, file contents, the renewal files, the ledger."""
    out = {}
    for sub in ("live", "archive", "renewal"):
        for p in sorted((home / sub).rglob("*")) if (home / sub).exists() else []:
            rel = str(p.relative_to(home))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    if (home / "ledger.sqlite3").exists():
        out["ledger"] = [(r["name"], r["version"], r["sha256"]) for r in Home(home).ledger.rows(latest_only=False)]
    return out


def assert_error(proc, *fragments, code=None):
    assert proc.returncode != 0, proc.stdout
    if code is not None:
        assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ntspki: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in last, last
    return last


@pytest.fixture(scope="module")
def acme_home(pebble):
    """One home with an account (registered by `acme register`) and lineage NAME from pebble."""
    base = lab.make_workdir("ntspki-acme-")
    home = base / "home"
    proc = run_cli(
        "acme", "register", *acme_args(pebble), "--agree-tos", "--email", "ops@example.test", "--json", home=home
    )
    assert proc.returncode == 0, proc.stderr
    account = json.loads(proc.stdout)
    proc = run_cli(
        "acme", "issue", NAME, "--san", "127.0.0.1", *acme_args(pebble), *standalone(pebble), "--json", home=home
    )
    assert proc.returncode == 0, proc.stderr
    yield home, account, json.loads(proc.stdout)
    shutil.rmtree(base, ignore_errors=True)


def test_register_stores_an_es256_key_privately_and_is_idempotent(pebble, acme_home):
    home, account, _ = acme_home
    assert account["new"] is True and account["contact"] == ["mailto:ops@example.test"]
    key_path = Path(account["path"]) / "private_key.pem"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(account["path"]).stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "accounts").stat().st_mode) == 0o700
    from ntspki.pki import keys

    key_pem = key_path.read_bytes()
    assert keys.key_type_of(keys.load_private_pem(key_pem)) == "ec-p256"  # ES256
    again = run_cli("acme", "register", *acme_args(pebble), "--agree-tos", "--json", home=home)
    assert again.returncode == 0, again.stderr
    # Same key, so the CA answers with the same account: registering twice is harmless.
    assert json.loads(again.stdout)["uri"] == account["uri"]
    assert json.loads(again.stdout)["new"] is False
    assert key_path.read_bytes() == key_pem
    assert json.loads((Path(account["path"]) / "account.json").read_text())["contact"] == ["mailto:ops@example.test"]
    # A new address for the same account is sent to the CA.
    moved = run_cli(
        "acme", "register", *acme_args(pebble), "--agree-tos", "--email", "noc@example.test", "--json", home=home
    )
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout)["contact"] == ["mailto:noc@example.test"]
    assert json.loads(moved.stdout)["uri"] == account["uri"]


def test_http01_standalone_makes_an_ntspki_lineage_that_verifies_against_pebbles_root(pebble, acme_home):
    home, _, result = acme_home
    assert result["name"] == NAME and result["version"] == 1
    assert result["sans"] == [NAME, "127.0.0.1"]
    h = Home(home)
    lineage = h.read_lineage(NAME)
    chain = pki.load_certs(lineage.fullchain)
    assert len(chain) == 2 and lineage.fullchain == lineage.cert + lineage.chain
    root = x509.load_pem_x509_certificate(pebble.root_pem())
    verify.verify_chain([root], chain, names.unique_sans([NAME, "127.0.0.1"]))
    assert stat.S_IMODE((home / "archive" / NAME / "privkey1.pem").stat().st_mode) == 0o600
    assert os.readlink(home / "live" / NAME / "fullchain.pem") == f"../../archive/{NAME}/fullchain1.pem"
    params = h.read_renewal(NAME)
    assert params == {
        "source": "acme",
        "directory": pebble.directory_url,
        "ca_bundle": str(pebble.ca_bundle),
        "sans": [NAME, "127.0.0.1"],
        "key_type": "ec-p256",
        "profile": None,
        "challenge": {"type": "http-01", "http_port": pebble.http_port, "http_address": "127.0.0.1"},
    }
    [row] = h.ledger.rows(NAME)
    assert row["source"] == "acme" and row["version"] == 1 and row["sha256"] == result["sha256"]
    # `ntspki show` reads it like any lineage (the chain check is against the site CA, absent here).
    shown = run_cli("show", NAME, "--json", home=home)
    assert json.loads(shown.stdout)["key_matches"] is True


def test_http01_webroot_through_a_real_web_server_from_nothing(pebble, tmp_path):
    """No account yet: --agree-tos registers one; the answer is served by a separate web server."""
    webroot = tmp_path / "www"
    webroot.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", pebble.http_port), functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(webroot))
    )
    server.RequestHandlerClass.log_message = lambda *a: None
    served = []
    orig = server.finish_request
    server.finish_request = lambda req, addr: (served.append(addr), orig(req, addr))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        home = tmp_path / "home"
        proc = run_cli(
            "acme",
            "issue",
            "web.example.test",
            "--key-type",
            "rsa-2048",
            *acme_args(pebble),
            "--webroot",
            webroot,
            "--agree-tos",
            "--json",
            home=home,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stderr
    assert served, "pebble never fetched the challenge from the web server"
    assert "registering an ACME account" in proc.stderr
    assert json.loads(proc.stdout)["key_type"] == "rsa-2048"
    assert not (webroot / ".well-known").exists(), "challenge files were left behind"
    params = Home(home).read_renewal("web.example.test")
    assert params["challenge"] == {"type": "http-01", "webroot": str(webroot)}
    chain = pki.load_certs(Home(home).read_lineage("web.example.test").fullchain)
    verify.verify_chain([x509.load_pem_x509_certificate(pebble.root_pem())], chain)


def write_dns_hook(path: Path, mgmt_url: str, log: Path, fail: bool = False) -> Path:
    path.write_text(f"""#!{sys.executable}
import json, os, sys, urllib.request
action, txt_name, value = sys.argv[1:4]
with open({str(log)!r}, "a") as f:
    f.write(f"{{action}} {{txt_name}} {{value}} {{os.environ['CERTBOT_DOMAIN']}}\\n")
if {fail!r}:
    sys.exit("dns provider says: zone example.test is locked")
body = {{"host": txt_name + ".", "value": value}} if action == "set" else {{"host": txt_name + "."}}
req = urllib.request.Request({mgmt_url!r} + ("/set-txt" if action == "set" else "/clear-txt"),
                             data=json.dumps(body).encode(), method="POST")
urllib.request.urlopen(req).read()
""")
    path.chmod(0o755)
    return path


def test_dns01_through_a_hook_including_a_wildcard(pebble, acme_home, tmp_path):
    home, _, _ = acme_home
    log = tmp_path / "hook.log"
    hook = write_dns_hook(tmp_path / "dns-hook", pebble.mgmt_url, log)
    proc = run_cli(
        "acme",
        "issue",
        "wild.example.test",
        "--san",
        "*.wild.example.test",
        *acme_args(pebble),
        "--dns-hook",
        hook,
        "--json",
        home=home,
    )
    assert proc.returncode == 0, proc.stderr
    calls = [line.split() for line in log.read_text().splitlines()]
    # Both names validate through the same TXT name; every record set is cleaned up again.
    assert sorted(c[0] for c in calls) == ["clean", "clean", "set", "set"]
    assert {c[1] for c in calls} == {"_acme-challenge.wild.example.test"}
    assert {c[3] for c in calls} == {"wild.example.test"}
    leaf = pki.load_certs(Home(home).read_lineage("wild.example.test").cert)[0]
    assert pki.san_strings(leaf) == ["wild.example.test", "*.wild.example.test"]
    assert Home(home).read_renewal("wild.example.test")["challenge"] == {
        "type": "dns-01",
        "dns_hook": str(hook),
        "dns_wait": 0.0,
    }


# ---- failures: one clear line, nothing changed ------------------------------------------------


def test_unreachable_challenge_fails_cleanly_and_leaves_the_lineage_alone(pebble, acme_home):
    home, _, _ = acme_home
    before = snapshot(home)
    # Our http-01 server listens on a port the CA does not connect to: validation must fail.
    proc = run_cli(
        "acme",
        "issue",
        NAME,
        "--san",
        "127.0.0.1",
        *acme_args(pebble),
        "--http-port",
        free_port(),
        "--http-address",
        "127.0.0.1",
        home=home,
    )
    last = assert_error(proc, "the CA could not validate", "http-01 failed", "connection")
    assert str(pebble.http_port) in last or "refused" in last.lower()
    assert snapshot(home) == before


def test_failing_dns_hook_is_reported_with_its_own_words(pebble, acme_home, tmp_path):
    home, _, _ = acme_home
    before = snapshot(home)
    log = tmp_path / "hook.log"
    hook = write_dns_hook(tmp_path / "bad-hook", pebble.mgmt_url, log, fail=True)
    # --san NAME --allow-change: NAME alone (the lineage also has 127.0.0.1, which dns-01 cannot prove)
    proc = run_cli(
        "acme", "issue", NAME, "--san", NAME, "--allow-change", *acme_args(pebble), "--dns-hook", hook, home=home
    )
    assert_error(proc, "--dns-hook", "failed with exit status 1", "zone example.test is locked")
    assert snapshot(home) == before


def test_an_interrupted_order_leaves_nothing_half_written(pebble, acme_home, tmp_path):
    """Ctrl-C in the middle of an order (here: while the DNS hook runs)."""
    home, _, _ = acme_home
    before = snapshot(home)
    hook = tmp_path / "interrupting-hook"
    hook.write_text(
        f"#!{sys.executable}\n"
        "import os, signal, sys, time\n"
        "if sys.argv[1] == 'set':\n"
        "    os.kill(os.getppid(), signal.SIGINT)\n"
        "    time.sleep(2)\n"
    )
    hook.chmod(0o755)
    # --san NAME --allow-change: NAME alone (the lineage also has 127.0.0.1, which dns-01 cannot prove)
    proc = run_cli(
        "acme", "issue", NAME, "--san", NAME, "--allow-change", *acme_args(pebble), "--dns-hook", hook, home=home
    )
    assert proc.returncode == 130, proc.stderr
    # (click reports a Ctrl-C inside a command as an abort)
    assert proc.stderr.strip().splitlines()[-1] in ("ntspki: aborted", "ntspki: interrupted")
    assert "Traceback" not in proc.stderr
    assert snapshot(home) == before
    assert not list((home / "archive" / NAME).glob(".*.tmp"))


def test_unreachable_directory(acme_home):
    home, _, _ = acme_home
    before = snapshot(home)
    port = free_port()
    proc = run_cli("acme", "issue", NAME, "--directory", f"https://127.0.0.1:{port}/dir", home=home)
    assert_error(proc, f"cannot reach the ACME server 127.0.0.1:{port}", "Connection refused")
    assert snapshot(home) == before


def test_wrong_ca_bundle_and_the_environments_bundle_are_refused(pebble, acme_home, tmp_path):
    home, _, _ = acme_home
    before = snapshot(home)
    wrong = tmp_path / "wrong.pem"
    wrong.write_bytes(pebble.root_pem())  # a real CA, just not the one behind the listener
    proc = run_cli(
        "acme", "issue", NAME, "--directory", pebble.directory_url, "--ca-bundle", wrong, *standalone(pebble), home=home
    )
    assert_error(proc, "cannot verify the TLS certificate of the ACME server", "--ca-bundle")
    # Without --ca-bundle, whatever REQUESTS_CA_BUNDLE says (the system store here) is used.
    proc = run_cli(
        "acme",
        "issue",
        NAME,
        "--directory",
        pebble.directory_url,
        *standalone(pebble),
        home=home,
        env={"REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"},
    )
    assert_error(proc, "cannot verify the TLS certificate")
    assert snapshot(home) == before


def test_usage_errors_are_caught_before_contacting_anyone(pebble, acme_home, tmp_path):
    home, _, _ = acme_home
    before = snapshot(home)
    cases = [
        (["--profile", "shortlived", *standalone(pebble)], "offers no profile 'shortlived'"),
        (["--dns-hook", tmp_path / "missing"], "not an executable file"),
        (
            ["--san", "::1", "--dns-hook", write_dns_hook(tmp_path / "h", pebble.mgmt_url, tmp_path / "l")],
            "dns-01 cannot prove control of an IP address",
        ),
        (["--san", "*.x.example.test", *standalone(pebble)], "a wildcard name needs dns-01"),
        (["--webroot", tmp_path / "nowhere"], "no such directory"),
    ]
    for extra, message in cases:
        proc = run_cli("acme", "issue", NAME, *acme_args(pebble), *extra, home=home)
        assert_error(proc, message, code=2)
    fresh = tmp_path / "fresh"
    proc = run_cli("acme", "issue", NAME, *acme_args(pebble), *standalone(pebble), home=fresh)
    assert_error(proc, "no ACME account for", "--agree-tos", code=2)
    proc = run_cli("acme", "register", *acme_args(pebble), home=fresh)
    assert_error(proc, "needs --agree-tos", code=2)
    proc = run_cli("acme", "issue", NAME, "--directory", "ftp://example.test/dir", home=fresh)
    assert_error(proc, "bad --directory", code=2)
    assert snapshot(home) == before
    assert not (fresh / "live").exists() and not (fresh / "accounts").exists()


def test_the_port_is_busy(pebble, acme_home):
    home, _, _ = acme_home
    import socket

    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", pebble.http_port))
        busy.listen()
        proc = run_cli("acme", "issue", NAME, *acme_args(pebble), *standalone(pebble), home=home)
    assert_error(proc, f"cannot listen on 127.0.0.1:{pebble.http_port} for http-01", "--webroot")


def test_a_ca_that_forgot_the_account_needs_agree_tos_to_register_again(pebble, tmp_path):
    """pebble forgets accounts on restart, as a CA may lose or deactivate one: simulate it by
    moving the stored account of one pebble over to a fresh one."""
    from ntspki.acme import accounts

    home = tmp_path / "home"
    with start_pebble(tmp_path / "first") as first:
        assert run_cli("acme", "register", *acme_args(first), "--agree-tos", home=home).returncode == 0
        h = Home(home)
        src, dst = accounts.account_dir(h, first.directory_url), accounts.account_dir(h, pebble.directory_url)
        shutil.copytree(src, dst)
        meta = json.loads((dst / "account.json").read_text())
        meta.update(
            directory=pebble.directory_url, uri=meta["uri"].replace(first.directory_url[:-4], pebble.directory_url[:-4])
        )
        (dst / "account.json").write_text(json.dumps(meta))
    args = ["acme", "issue", "forgot.example.test", *acme_args(pebble), *standalone(pebble)]
    assert_error(run_cli(*args, home=home), "the CA no longer knows the stored account", "--agree-tos")
    assert Home(home).lineage_names() == []
    proc = run_cli(*args, "--agree-tos", home=home)
    assert proc.returncode == 0, proc.stderr
    assert "registering again" in proc.stdout, proc.stdout + proc.stderr  # progress is not a problem
    assert json.loads((dst / "account.json").read_text())["uri"] != meta["uri"]


# ---- rate limits: Retry-After ------------------------------------------------------------------


class RateLimitingCA:
    """pebble 2.4 never rate-limits, so this stand-in answers newAccount with `rateLimited` and a
    Retry-After the first `limited` times, the way Let's Encrypt does, then creates the account."""

    def __init__(self, retry_after: str, limited: int = 1):
        import time

        self.posts: list[float] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _reply(self, code, body=None, headers=()):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(code)
                self.send_header("Replay-Nonce", "bm9uY2Ux")
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_HEAD(self):  # noqa: N802
                self._reply(200)

            def do_GET(self):  # noqa: N802
                base = f"http://127.0.0.1:{outer.port}"
                self._reply(
                    200,
                    {
                        "newNonce": f"{base}/nonce",
                        "newAccount": f"{base}/acct",
                        "newOrder": f"{base}/order",
                        "meta": {"termsOfService": f"{base}/tos"},
                    },
                    [("Content-Type", "application/json")],
                )

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts.append(time.monotonic())
                if len(outer.posts) <= limited:
                    self._reply(
                        429,
                        {
                            "type": "urn:ietf:params:acme:error:rateLimited",
                            "detail": "too many new registrations from 127.0.0.1",
                        },
                        [("Content-Type", "application/problem+json"), ("Retry-After", retry_after)],
                    )
                else:
                    self._reply(
                        201,
                        {"status": "valid"},
                        [("Content-Type", "application/json"), ("Location", f"http://127.0.0.1:{outer.port}/acct/1")],
                    )

            def log_message(self, *a):
                pass

        self.stub = StubHTTP(Handler)
        self.port, self.url, self.stop = self.stub.port, self.stub.url, self.stub.stop


def test_a_short_retry_after_is_waited_out_and_a_long_one_reported(tmp_path):
    short = RateLimitingCA("1")
    try:
        proc = run_cli("acme", "register", "--directory", short.url, "--agree-tos", "--json", home=tmp_path / "a")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["uri"].endswith("/acct/1")
        assert len(short.posts) == 2 and short.posts[1] - short.posts[0] >= 0.95
    finally:
        short.stop()
    long = RateLimitingCA("3600")
    try:
        proc = run_cli("acme", "register", "--directory", long.url, "--agree-tos", home=tmp_path / "b")
        assert_error(proc, "refused: too many new registrations from 127.0.0.1 (rateLimited)", "retry after ")
        assert len(long.posts) == 1
        assert not (tmp_path / "b" / "accounts").exists()
    finally:
        long.stop()


# ---- External Account Binding, and a CA that rejects nonces --------------------------------

EAB_KID = "kid-1"
EAB_KEY = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"


def test_eab_and_bad_nonce_retries_against_a_strict_pebble(tmp_path):
    """A second pebble that requires EAB and rejects half of all good nonces (acme's own client
    retries a badNonce once, which would fail one request in four here)."""
    with start_pebble(tmp_path / "pebble", eab_keys={EAB_KID: EAB_KEY}, nonce_reject=50) as strict:
        home = tmp_path / "home"
        proc = run_cli("acme", "register", *acme_args(strict), "--agree-tos", home=home)
        assert_error(proc, "requires External Account Binding", "--eab-kid", code=2)
        proc = run_cli(
            "acme",
            "register",
            *acme_args(strict),
            "--agree-tos",
            "--eab-kid",
            EAB_KID,
            "--eab-hmac-key",
            "!!",
            home=home,
        )
        assert_error(proc, "bad --eab-hmac-key", code=2)
        proc = run_cli(
            "acme",
            "register",
            *acme_args(strict),
            "--agree-tos",
            "--eab-kid",
            EAB_KID,
            "--eab-hmac-key",
            "c2VjcmV0LWJ1dC13cm9uZy1rZXktMDEyMzQ1Njc4OWFiY2RlZg",
            home=home,
        )
        assert_error(proc, "the CA at 127.0.0.1", "refused", "external account binding", "(unauthorized)")
        assert not (home / "accounts").exists() or not any((home / "accounts").iterdir())
        log_path = tmp_path / "pebble" / "pebble.log"
        heads_before = log_path.read_text().count("HEAD /nonce-plz")
        proc = run_cli(
            "acme",
            "issue",
            NAME,
            *acme_args(strict),
            *standalone(strict),
            "--agree-tos",
            "--eab-kid",
            EAB_KID,
            "--eab-hmac-key",
            EAB_KEY,
            "--json",
            home=home,
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["version"] == 1
        log = log_path.read_text()
    assert "reject 50% of good nonces" in log
    # One run fetches one nonce up front; every further HEAD /nonce-plz followed a badNonce retry.
    assert log.count("HEAD /nonce-plz") - heads_before > 1


# ---- what it is for: a real chronyd serving the ACME certificate ------------------------------


def test_chronyd_serves_the_acme_chain_to_a_client_trusting_pebbles_root(pebble, acme_home, workdir, chrony_servers):
    # `workdir` before `chrony_servers`: chronyd is stopped before its directory goes.
    home, _, _ = acme_home
    lineage = Home(home).read_lineage(NAME)
    work = workdir
    (work / "key.pem").write_bytes(lineage.privkey)
    (work / "fullchain.pem").write_bytes(lineage.fullchain)
    (work / "root.pem").write_bytes(pebble.root_pem())
    server = chrony_servers(work / "key.pem", work / "fullchain.pem", workdir=work / "server")
    assert not server.credentials_failed(), server.log()
    by_name = chrony_client(NAME, server.ntp_port, server.nts_port, work / "root.pem", hosts={NAME: "127.0.0.1"})
    assert by_name.ok, by_name.output
    by_ip = chrony_client("127.0.0.1", server.ntp_port, server.nts_port, work / "root.pem")
    assert by_ip.ok, by_ip.output
    # And a client that trusts only some other root refuses it: the trust really is pebble's.
    other_root = start_other_root(work)
    refused = chrony_client(NAME, server.ntp_port, server.nts_port, other_root, hosts={NAME: "127.0.0.1"})
    assert not refused.ok


def start_other_root(work: Path) -> Path:
    from ntspki.pki import keys

    key = keys.generate("ec-p256")
    path = work / "other-root.pem"
    path.write_bytes(pki.cert_pem(pki.make_root(key, "some other root")))
    return path
