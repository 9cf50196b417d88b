"""Proving control of a name: http-01 from a built-in server (standalone) or files in a webroot,
dns-01 through a hook script (certbot's manual-auth-hook variables are set too).
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from acme import challenges

from ntspki.errors import NtspkiError
from ntspki.pki import names
from ntspki.store import fsutil

HOOK_TIMEOUT = 300  # seconds a dns-01 hook may take


@dataclass
class Challenge:
    """http-01 from a built-in server (standalone) or files in a webroot, or dns-01 via a hook."""

    type: str = "http-01"
    webroot: str | None = None
    http_port: int = 80
    http_address: str = ""  # "" = every address, as certbot --standalone
    dns_hook: str | None = None
    dns_wait: float = 0.0  # seconds to wait after the hook for DNS to propagate

    def check(self) -> Challenge:
        if self.type not in ("http-01", "dns-01"):
            raise NtspkiError(f"unknown challenge type {self.type!r}", 2)
        if self.type == "dns-01":
            if not self.dns_hook:
                raise NtspkiError("dns-01 needs --dns-hook SCRIPT", 2)
            hook = Path(self.dns_hook)
            if not hook.is_file() or not os.access(hook, os.X_OK):
                raise NtspkiError(f"--dns-hook {self.dns_hook}: not an executable file", 2)
            self.dns_hook = str(hook.absolute())
        elif self.webroot is not None:
            root = Path(self.webroot)
            if not root.is_dir():
                raise NtspkiError(f"--webroot {self.webroot}: no such directory", 2)
            self.webroot = str(root.absolute())
        else:
            if not 0 < int(self.http_port) < 65536:
                raise NtspkiError(f"--http-port {self.http_port}: not a port number", 2)
            if self.http_address:
                from ntspki.pki import names

                if names.parse_ip(self.http_address) is None:
                    raise NtspkiError(f"--http-address {self.http_address!r}: not an IP address to listen on", 2)
        import math

        if not math.isfinite(self.dns_wait) or not 0 <= self.dns_wait <= 3600:
            raise NtspkiError("--dns-wait must be 0 to 3600 seconds", 2)
        return self

    def to_dict(self) -> dict:
        if self.type == "dns-01":
            return {"type": "dns-01", "dns_hook": self.dns_hook, "dns_wait": self.dns_wait}
        if self.webroot:
            return {"type": "http-01", "webroot": self.webroot}
        return {"type": "http-01", "http_port": self.http_port, "http_address": self.http_address}

    @classmethod
    def from_dict(cls, d: dict) -> Challenge:
        known = {k: d[k] for k in ("type", "webroot", "http_port", "http_address", "dns_hook", "dns_wait") if k in d}
        return cls(**known)


class _ChallengeHandler(http.server.BaseHTTPRequestHandler):
    server_version = "ntspki-acme"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        prefix = "/.well-known/acme-challenge/"
        tokens = self.server.tokens  # type: ignore[attr-defined]  # set by _ChallengeServer
        body = tokens.get(self.path[len(prefix) :]) if self.path.startswith(prefix) else None
        if body is None:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class _ChallengeServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: str, port: int, tokens: dict):
        self.tokens = tokens
        self.dual_stack = address in ("", "::")
        ip = names.parse_ip(address) if address else None
        self.address_family = socket.AF_INET6 if (self.dual_stack or (ip and ip.version == 6)) else socket.AF_INET
        bind = "::" if self.dual_stack else str(ip) if ip else address
        super().__init__((bind, port), _ChallengeHandler)

    def server_bind(self):
        if self.dual_stack:  # answer on IPv4 too, whatever the sysctl default says
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class Solver:
    """Sets up every challenge of an order at once, and always tears them down."""

    def __init__(self, ch: Challenge, progress):
        self.ch = ch
        self.progress = progress
        self.tokens: dict[str, str] = {}
        self.server: _ChallengeServer | None = None
        self.webroot_files: list[Path] = []
        self.webroot_dirs: list[Path] = []
        self.txt_set: list[tuple[str, str, str]] = []

    def pick(self, authzr):
        wanted = challenges.DNS01 if self.ch.type == "dns-01" else challenges.HTTP01
        for challb in authzr.body.challenges:
            if isinstance(challb.chall, wanted):
                return challb
        ident = authzr.body.identifier.value
        offered = ", ".join(c.chall.typ for c in authzr.body.challenges) or "none"
        raise NtspkiError(f"the CA offers no {self.ch.type} challenge for {ident} (offers: {offered})")

    def add(self, ident: str, challb, account_key) -> None:
        response, validation = challb.response_and_validation(account_key)
        if self.ch.type == "dns-01":
            txt_name = challb.chall.validation_domain_name(ident.removeprefix("*."))
            self._hook("set", ident, txt_name, validation)
            self.txt_set.append((ident, txt_name, validation))
        elif self.ch.webroot:
            self._webroot_put(challb.chall.encode("token"), validation)
        else:
            self.tokens[challb.chall.encode("token")] = validation

    def start(self) -> None:
        if self.ch.type == "http-01" and not self.ch.webroot and self.server is None:
            where = f"{self.ch.http_address or '*'}:{self.ch.http_port}"
            try:
                try:
                    self.server = _ChallengeServer(self.ch.http_address, int(self.ch.http_port), self.tokens)
                except OSError as e:
                    if self.ch.http_address or e.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                        raise
                    # A host without IPv6: every IPv4 address is what "every address" means there.
                    self.server = _ChallengeServer("0.0.0.0", int(self.ch.http_port), self.tokens)
            except OSError as e:
                raise NtspkiError(
                    f"cannot listen on {where} for http-01: {e.strerror or e} "
                    "(is a web server running there? use --webroot DIR, or --http-port)"
                )
            assert self.server is not None
            threading.Thread(target=self.server.serve_forever, name="acme-http-01", daemon=True).start()
            self.progress(f"answering http-01 on {where}")
        if self.txt_set and self.ch.dns_wait:
            self.progress(f"waiting {self.ch.dns_wait:g} s for DNS to propagate")
            time.sleep(self.ch.dns_wait)

    def _webroot_put(self, token: str, validation: str) -> None:
        d = Path(self.ch.webroot or ".") / ".well-known" / "acme-challenge"
        for parent in (d.parent, d):
            if not parent.exists():
                try:
                    parent.mkdir(mode=0o755)
                except OSError as e:
                    raise NtspkiError(f"cannot create {parent} for http-01: {e.strerror}")
                os.chmod(parent, 0o755)  # the web server's user must read it, whatever our umask
                self.webroot_dirs.append(parent)
        path = d / token
        try:
            fsutil.atomic_write(path, validation.encode(), 0o644)
        except OSError as e:
            raise NtspkiError(f"cannot write {path} for http-01: {e.strerror}")
        self.webroot_files.append(path)

    def _hook(self, action: str, ident: str, txt_name: str, value: str) -> None:
        env = {
            **os.environ,
            "NTSPKI_DNS_ACTION": action,
            "NTSPKI_DOMAIN": ident,
            "NTSPKI_TXT_NAME": txt_name,
            "NTSPKI_TXT_VALUE": value,
            # the names certbot's --manual-auth-hook scripts read, so those scripts work here too
            "CERTBOT_DOMAIN": ident.removeprefix("*."),
            "CERTBOT_VALIDATION": value,
        }
        try:
            proc = subprocess.run(
                [str(self.ch.dns_hook), action, txt_name, value],
                env=env,
                capture_output=True,
                text=True,
                timeout=HOOK_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise NtspkiError(
                f"--dns-hook {self.ch.dns_hook} did not finish in {HOOK_TIMEOUT} s ({action} TXT {txt_name})"
            )
        except OSError as e:
            raise NtspkiError(f"--dns-hook {self.ch.dns_hook}: {e.strerror}")
        if proc.returncode != 0:
            said = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
            raise NtspkiError(
                f"--dns-hook {self.ch.dns_hook} failed with exit status {proc.returncode} "
                f"({action} TXT {txt_name})" + (f": {said[-1]}" if said else "")
            )

    def cleanup(self) -> None:
        """Best effort, never raises: the order's outcome is what the user needs to see."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        for path in self.webroot_files:
            with contextlib.suppress(OSError):
                path.unlink()
        for d in reversed(self.webroot_dirs):
            with contextlib.suppress(OSError):
                d.rmdir()
        for ident, txt_name, value in self.txt_set:
            try:
                self._hook("clean", ident, txt_name, value)
            except NtspkiError as e:
                self.progress(f"warning: {e}")
        self.txt_set.clear()
