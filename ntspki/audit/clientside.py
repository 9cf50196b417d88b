"""`check`, client side: the NTS sources in chrony.conf, the trust they use (ntstrustedcerts,
a trust bundle during a root rollover), names, and whether there are enough authenticated sources."""

from __future__ import annotations

import datetime as dt
import os
import socket
import stat
from pathlib import Path

from ntspki.audit.checkbase import cannot_exist
from ntspki.audit.serverside import ServerChecks
from ntspki.pki import names
from ntspki.servers import chronyconf
from ntspki.store import access


class ClientChecks(ServerChecks):
    # -- the client side: server/pool lines with nts -------------------------------------------------
    def client_side(self) -> None:
        sources = [s for s in self.conf.sources() if s.nts]
        if not sources:
            return
        trusted: dict[int, list[str]] = {}
        for d in self.conf.all("ntstrustedcerts"):
            if len(d.args) >= 2 and d.args[0].isdigit():
                trusted.setdefault(int(d.args[0]), []).append(d.args[1])
            elif d.args:
                trusted.setdefault(0, []).append(d.args[0])
            if d.args:
                self.trust_path(d.args[-1], d.where)
        system = self.conf.last("nosystemcert") is None
        if self.trust_bundle:
            self.bundle_coverage(sources, trusted)
        for src in sources:
            files = trusted.get(src.certset, [])
            with_system = system and src.certset == 0
            where = src.directive.where
            if not files and not with_system:
                self.add(
                    "critical",
                    "no-trust",
                    f"{src.kind} {src.host} uses NTS with certificate set {src.certset}, which trusts nothing"
                    f"{' (nosystemcert)' if src.certset == 0 else ''}: every NTS-KE handshake fails",
                    f"add `ntstrustedcerts {src.certset} /path/to/root.pem`",
                    where=where,
                )
                continue
            self.name_type(src)
            if self.do_probe:
                self.probe_source(src, files, with_system)

    def bundle_coverage(self, sources, trusted: dict[int, list[str]]) -> None:
        """During a root rollover: does each certificate set NTS sources use hold every bundle root?"""
        from ntspki.pki import bundle

        for certset in sorted({s.certset for s in sources}):
            files = trusted.get(certset, [])
            lacking = bundle.missing(self.trust_bundle, [c for f in files for c in bundle.read_trusted(f)])
            if lacking:
                self.add(
                    "warning",
                    "trust-bundle-missing",
                    f"certificate set {certset} ({', '.join(files) or 'no ntstrustedcerts'}) lacks "
                    f"{', '.join(c.subject.rfc4514_string() for c in lacking)} from the trust bundle: NTS-KE "
                    "fails once the servers present that root's chain (after `ntspki ca rollover switch`)",
                    "copy the bundle (ntspki trust export --out FILE) to the file ntstrustedcerts names",
                )
            else:
                self.add("ok", "trust-bundle", f"certificate set {certset} trusts every root of the trust bundle")

    def trust_path(self, path: str, where: str) -> None:
        """An ntstrustedcerts file or directory (*.crt): reachable and readable by chronyd's user, holding
        certificates that parse and have not expired."""
        if not os.path.exists(path):
            blocker = cannot_exist(path)
            self.add(
                "critical",
                "trust-missing",
                f"ntstrustedcerts {path} does not exist{f' and cannot: {blocker}' if blocker else ''}: NTS-KE with "
                "the sources using it fails",
                f"fix the path in {where}"
                if blocker
                else f"copy the CA's root certificate to {path}, or fix the path in {where}",
                path,
                where,
            )
            return
        blocked = self.who.blocked_dir(path)
        if blocked:
            d, st = blocked
            self.add(
                "critical",
                "trust-unreadable",
                f"directory {d} ({access.owner_text(st)}) is not searchable by {self.who.name}, so chronyd cannot reach "
                f"ntstrustedcerts {path} (it reads it for every NTS-KE session)",
                f"chmod o+x {d}, or keep trust files under /etc/chrony/",
                path,
                where,
            )
            return
        st = os.stat(path)
        is_dir = stat.S_ISDIR(st.st_mode)
        if not self.who.may_stat(st, 4 | 1 if is_dir else 4):
            self.add(
                "critical",
                "trust-unreadable",
                f"ntstrustedcerts {path} ({access.owner_text(st)}) is not readable by {self.who.name} "
                "(chronyd reads it for every NTS-KE session)",
                f"chmod 0755 {path}" if is_dir else f"chmod 0644 {path}",
                path,
                where,
            )
            return
        files = sorted(str(p) for p in Path(path).glob("*.crt")) if is_dir else [path]
        if is_dir and not files:
            self.add(
                "critical",
                "trust-empty",
                f"ntstrustedcerts directory {path} holds no *.crt file: chrony trusts nothing from it",
                f"put the CA's root certificate into {path} as NAME.crt",
                path,
                where,
            )
        for f in files:
            self.trust_file(f, where)

    def trust_file(self, path: str, where: str) -> None:
        from cryptography import x509

        data = self.read(path, "trust", where)
        if data is None:
            return
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError:
            self.add(
                "critical",
                "trust-unparsable",
                f"ntstrustedcerts {path} holds no PEM certificate: chrony trusts nothing from it",
                "put the CA's root certificate there in PEM (-----BEGIN CERTIFICATE-----)",
                path,
                where,
            )
            return
        now = dt.datetime.now(dt.UTC)
        for cert in certs:
            subject = cert.subject.rfc4514_string()
            if cert.not_valid_after_utc < now:
                self.add(
                    "critical",
                    "trust-expired",
                    f"ntstrustedcerts {path}: {subject} expired on {cert.not_valid_after_utc:%Y-%m-%d}: chrony "
                    "(GnuTLS) refuses chains that end there",
                    "replace it with the CA's current root certificate",
                    path,
                    where,
                )
            elif cert.not_valid_before_utc > now:
                self.add(
                    "critical",
                    "trust-not-yet-valid",
                    f"ntstrustedcerts {path}: {subject} is not valid before {cert.not_valid_before_utc:%Y-%m-%d}",
                    "check the clocks of this machine and of the CA",
                    path,
                    where,
                )
            else:
                days = (cert.not_valid_after_utc - now).days
                sev = "warning" if days < self.warn_days else "ok"
                self.add(
                    sev,
                    "trust-expiring" if sev == "warning" else "trust-valid",
                    f"ntstrustedcerts {path}: {subject} is valid for {days} more days",
                    "replace it with the CA's new root before it expires" if sev == "warning" else None,
                    path,
                    where,
                )

    def name_type(self, src: chronyconf.Source) -> None:
        """A source that is this very machine can be checked against the certificate served here."""
        from ntspki.pki import verify

        ip = names.parse_ip(src.host)
        where = src.directive.where
        if ip is not None:
            self.add(
                "info",
                "nts-by-address",
                f"{src.kind} {src.host} is given by address: its certificate needs "
                "an IP SAN for it and chrony 4.1 or later",
                where=where,
            )
        if not self.local_leaves or not _is_local(src.host):
            return
        problems = [verify.name_error(leaf, src.host) for leaf in self.local_leaves]
        if all(problems):
            code = "name-type" if ip is not None else "name-mismatch"
            self.add(
                "critical",
                code,
                f"{src.kind} {src.host} is this machine, but {problems[0]}: chrony fails with 'The name in "
                "the certificate does not match the expected.'",
                "use a name the certificate holds in the server line, or reissue the certificate with "
                f"{'--san ' + src.host}",
                where=where,
            )

    # -- every source: authenticated, and enough of them -------------------------------------------------
    def sources(self) -> None:
        mode_d = self.conf.last("authselectmode")
        mode = mode_d.args[0].lower() if mode_d and mode_d.args else None
        srcs = self.conf.sources()
        authenticated = [s for s in srcs if s.nts or "key" in s.directive.args[1:]]
        usable = 0
        for src in srcs:
            args = [a.lower() for a in src.directive.args[1:]]
            weight = _option_int(args, "maxsources", 4) if src.kind == "pool" else 1
            is_auth = src in authenticated
            if "noselect" not in args and (is_auth or mode != "require"):
                usable += weight
            if is_auth:
                continue
            where = src.directive.where
            label = f"{src.kind} {src.host}"
            if mode == "require":
                self.add(
                    "info",
                    "unauthenticated-source",
                    f"{label} is unauthenticated and never selected (authselectmode require)",
                    where=where,
                )
            elif mode_d is not None:
                self.add(
                    "info",
                    "unauthenticated-source",
                    f"{label} is unauthenticated, mixed in on purpose (authselectmode {mode} in {mode_d.where})",
                    where=where,
                )
            else:
                pool = src.host.rstrip(".").lower().endswith("pool.ntp.org")
                self.add(
                    "warning",
                    "unauthenticated-source",
                    f"{label} is unauthenticated (no `nts`, no `key`): anyone on the path can shift this "
                    "machine's clock through it",
                    (
                        "the NTP Pool offers no NTS: add NTS servers (`server NAME iburst nts`, e.g. your own or "
                        "time.cloudflare.com)"
                        if pool
                        else f"add `nts` if {src.host} offers NTS (`ntspki probe "
                        f"{src.host}`), else replace it with an NTS server"
                    )
                    + "; or keep it on purpose with `authselectmode mix`",
                    where=where,
                )
        usable += sum(1 for d in self.conf.all("refclock") if "noselect" not in [a.lower() for a in d.args])
        if usable == 0:
            if self.conf.last("local") is not None:
                self.add("info", "no-sources", "no time sources: this chronyd serves its own clock (`local`)")
            else:
                self.add(
                    "warning",
                    "no-sources",
                    "no time sources and no `local`: chronyd never synchronises and its clients get "
                    "unsynchronised time",
                    "add at least three `server NAME iburst nts` lines",
                )
        elif usable < 3:
            self.add(
                "warning",
                "few-sources",
                f"only {usable} usable time source(s): with fewer than three chronyd cannot tell which one is wrong "
                "(no falseticker detection)",
                "use at least three independent sources (four is better): more `server NAME iburst nts` lines",
            )
        minsources = self.conf.last("minsources")
        if minsources and minsources.args and minsources.args[0].isdigit() and int(minsources.args[0]) > usable:
            self.add(
                "warning",
                "minsources",
                f"minsources {minsources.args[0]} but only {usable} usable source(s): chronyd never updates the clock",
                f"lower minsources in {minsources.where} or add sources",
                where=minsources.where,
            )


def _option_int(args: list[str], name: str, default: int) -> int:
    if name in args:
        i = args.index(name)
        if i + 1 < len(args) and args[i + 1].isdigit():
            return int(args[i + 1])
    return default


def _is_local(host: str) -> bool:
    ip = names.parse_ip(host)
    if ip is not None:
        return ip.is_loopback
    local = {"localhost", socket.gethostname().lower(), socket.getfqdn().lower()}
    return host.rstrip(".").lower() in local
