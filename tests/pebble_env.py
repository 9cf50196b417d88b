"""A real ACME CA on loopback for tests: Debian's `pebble` plus `pebble-challtestsrv` as its DNS.

API (kept stable; other test modules build on it):

    env = start_pebble(workdir)        # or the session fixture `pebble` in tests/conftest.py
    env.directory_url   # "https://127.0.0.1:PORT/dir"
    env.ca_bundle       # Path: PEM verifying pebble's HTTPS listeners (ACME and management).
                        #   Pass it explicitly (--ca-bundle, REQUESTS_CA_BUNDLE=...): the
                        #   environment may already set REQUESTS_CA_BUNDLE to the system store.
    env.http_port       # pebble's VA connects here for http-01: a standalone client listens on
                        #   127.0.0.1:http_port
    env.tls_port        # same for tls-alpn-01
    env.mgmt_url        # challtestsrv's management API, "http://127.0.0.1:PORT"
    env.dns_port        # challtestsrv's DNS (udp+tcp on 127.0.0.1), pebble's only resolver
    env.root_pem()      # bytes: pebble's issuing root (pebble management /roots/0; new per start)
    env.intermediate_pem()
    env.set_txt(host, value); env.clear_txt(host); env.add_a(host, ip="127.0.0.1")
    env.stop()

Validation is real (no PEBBLE_VA_ALWAYS_VALID): every name resolves through challtestsrv, whose
default answer is 127.0.0.1 (A) and nothing for AAAA, so http-01 for any name reaches a server
on 127.0.0.1:http_port. PEBBLE_VA_NOSLEEP=1 removes pebble's artificial delays, authorization
reuse is off (each order really validates) and, unless `nonce_reject` is given, pebble rejects no
good nonces (its default 5% makes clients that retry once flaky). `eab_keys={"kid": "b64url-hmac"}`
makes a pebble that requires External Account Binding; `validity_seconds` sets the lifetime of
the certificates it issues (pebble 2.4's default is 5 years).

Import it in test modules as `from tests.pebble_env import start_pebble` (tests/ is a package). Debian's pebble 2.4 has neither ARI (renewalInfo) nor ACME profiles.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from ntspki import pki
from ntspki.pki import keys, names
from ntspki.servers.lab import free_port
from ntspki.store import fsutil


class StubHTTP:
    """A tiny HTTP server on 127.0.0.1 standing in for a CA feature pebble lacks (ARI,
    Retry-After): `handler` is a BaseHTTPRequestHandler class."""

    def __init__(self, handler):
        import http.server

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/dir"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"
CHALLTESTSRV = shutil.which("pebble-challtestsrv") or "/usr/bin/pebble-challtestsrv"


def _listener_cert(workdir: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a cert for 127.0.0.1/localhost that pebble serves HTTPS with."""
    ca_key, key = keys.generate("ec-p256"), keys.generate("ec-p256")
    ca = pki.make_root(ca_key, "pebble listener test CA", days=3)
    cert = pki.make_leaf(key, ca, ca_key, names.unique_sans(["localhost", "127.0.0.1"]), days=2)
    bundle, cert_path, key_path = (
        workdir / "pebble-ca.pem",
        workdir / "pebble-listener.pem",
        workdir / "pebble-listener.key",
    )
    bundle.write_bytes(pki.cert_pem(ca))
    cert_path.write_bytes(pki.cert_pem(cert))
    fsutil.atomic_write(key_path, keys.private_pem(key), 0o600)
    return bundle, cert_path, key_path


class PebbleEnv:
    def __init__(
        self,
        workdir: Path,
        eab_keys: dict[str, str] | None = None,
        nonce_reject: int = 0,
        validity_seconds: int | None = None,
        http_port: int | None = None,
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca_bundle, cert, key = _listener_cert(self.workdir)
        self.acme_port, self.pebble_mgmt_port = free_port(), free_port()
        self.http_port, self.tls_port = http_port or free_port(), free_port()
        self.dns_port, self.mgmt_port = free_port(), free_port()
        self.directory_url = f"https://127.0.0.1:{self.acme_port}/dir"
        self.pebble_mgmt_url = f"https://127.0.0.1:{self.pebble_mgmt_port}"
        self.mgmt_url = f"http://127.0.0.1:{self.mgmt_port}"
        self.eab_keys = dict(eab_keys or {})
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{self.acme_port}",
                "managementListenAddress": f"127.0.0.1:{self.pebble_mgmt_port}",
                "certificate": str(cert),
                "privateKey": str(key),
                "httpPort": self.http_port,
                "tlsPort": self.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": bool(self.eab_keys),
                **({"externalAccountMACKeys": self.eab_keys} if self.eab_keys else {}),
                **({"certificateValidityPeriod": validity_seconds} if validity_seconds else {}),
            }
        }
        config_path = self.workdir / "pebble-config.json"
        config_path.write_text(json.dumps(config, indent=2))
        self._ssl = ssl.create_default_context(cafile=str(self.ca_bundle))
        self._procs: list[subprocess.Popen] = []
        atexit.register(self.stop)  # never leave a pebble behind, even when a test run crashes
        env = {k: v for k, v in os.environ.items() if not k.startswith("PEBBLE_")}
        env.update(PEBBLE_VA_NOSLEEP="1", PEBBLE_AUTHZREUSE="0", PEBBLE_WFE_NONCEREJECT=str(nonce_reject))
        try:
            self._procs.append(
                self._spawn(
                    "challtestsrv",
                    [
                        CHALLTESTSRV,
                        "-management",
                        f"127.0.0.1:{self.mgmt_port}",
                        "-dns01",
                        f"127.0.0.1:{self.dns_port}",
                        "-http01",
                        "",
                        "-https01",
                        "",
                        "-tlsalpn01",
                        "",
                        "-defaultIPv4",
                        "127.0.0.1",
                        "-defaultIPv6",
                        "",
                    ],
                    env,
                )
            )
            self._procs.append(
                self._spawn(
                    "pebble", [PEBBLE, "-config", str(config_path), "-dnsserver", f"127.0.0.1:{self.dns_port}"], env
                )
            )
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")
        try:
            return subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir, start_new_session=True
            )
        finally:
            log.close()

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            for p in self._procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[0]} exited {p.returncode}:\n{self.logs()}")
            try:
                self._get(self.directory_url)
                self._get(f"{self.pebble_mgmt_url}/roots/0")
                self._post("/clear-txt", {"host": "ready.test."})
                return
            except (OSError, urllib.error.URLError) as e:
                last = e
                time.sleep(0.05)
        raise RuntimeError(f"pebble did not come up in {timeout}s ({last}):\n{self.logs()}")

    # -- HTTP helpers -----------------------------------------------------------------------------
    def _get(self, url: str) -> bytes:
        with urllib.request.urlopen(url, context=self._ssl, timeout=5) as r:
            return r.read()

    def _post(self, path: str, body: dict) -> None:
        req = urllib.request.Request(
            self.mgmt_url + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            r.read()

    @staticmethod
    def _fqdn(host: str) -> str:
        return host if host.endswith(".") else host + "."

    # -- public API -------------------------------------------------------------------------------
    def root_pem(self) -> bytes:
        return self._get(f"{self.pebble_mgmt_url}/roots/0")

    def intermediate_pem(self) -> bytes:
        return self._get(f"{self.pebble_mgmt_url}/intermediates/0")

    def set_txt(self, host: str, value: str) -> None:
        """Serve TXT `value` for `host` (e.g. "_acme-challenge.example.test")."""
        self._post("/set-txt", {"host": self._fqdn(host), "value": value})

    def clear_txt(self, host: str) -> None:
        self._post("/clear-txt", {"host": self._fqdn(host)})

    def add_a(self, host: str, ip: str = "127.0.0.1") -> None:
        self._post("/add-a", {"host": self._fqdn(host), "addresses": [ip]})

    def logs(self) -> str:
        out = []
        for name in ("challtestsrv", "pebble"):
            p = self.workdir / f"{name}.log"
            if p.exists():
                out.append(f"--- {name} ---\n" + p.read_text(errors="replace")[-4000:])
        return "\n".join(out)

    def stop(self) -> None:
        for p in reversed(self._procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)
        self._procs.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def start_pebble(
    workdir: Path,
    eab_keys: dict[str, str] | None = None,
    nonce_reject: int = 0,
    validity_seconds: int | None = None,
    http_port: int | None = None,
) -> PebbleEnv:
    """http_port: where pebble's VA connects for http-01 (a free port unless given; 80 in a
    network namespace of one's own, as a real CA)."""
    return PebbleEnv(
        workdir, eab_keys=eab_keys, nonce_reject=nonce_reject, validity_seconds=validity_seconds, http_port=http_port
    )
