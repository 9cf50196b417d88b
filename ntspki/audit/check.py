"""`check`: audit a machine's chrony NTS setup as root sees it and as chronyd's own user will.

Every finding names the file, what chronyd or its clients will do about it (in chrony's own words
where there are some), and the fix. Severities follow the monitoring convention: the report's
status is CRITICAL if any finding is, else WARNING, else UNKNOWN (something could not be checked),
else OK.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ntspki.errors import NtspkiError
from ntspki.pki import names
from ntspki.servers import chronyconf, services
from ntspki.store import access

EXIT = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}


@dataclass
class Finding:
    severity: str  # ok, info, warning, critical, unknown
    code: str  # stable identifier, e.g. key-unreadable
    message: str
    hint: str | None = None
    path: str | None = None
    where: str | None = None  # chrony.conf file:line of the directive concerned


@dataclass
class CertState:
    file: str
    position: int  # 1 = first certificate in the file
    subject: str
    sha256: str
    not_after: str
    days_left: float


@dataclass
class Report:
    conf: str
    files: list[str]
    user: str
    findings: list[Finding] = field(default_factory=list)
    certificates: list[CertState] = field(default_factory=list)
    role: str = ""  # one line: does this chronyd serve NTS, does it use NTS sources

    @property
    def status(self) -> str:
        severities = {f.severity for f in self.findings}
        for level, status in (("critical", "CRITICAL"), ("warning", "WARNING"), ("unknown", "UNKNOWN")):
            if level in severities:
                return status
        return "OK"

    @property
    def exit_code(self) -> int:
        return EXIT[self.status]

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in ("critical", "warning", "unknown", "info", "ok")}
        for f in self.findings:
            out[f.severity] = out.get(f.severity, 0) + 1
        return out

    def codes(self, *severities: str) -> set[str]:
        return {f.code for f in self.findings if not severities or f.severity in severities}

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "conf": self.conf,
            "files": self.files,
            "user": self.user,
            "role": self.role,
            "counts": self.counts(),
            "findings": [asdict(f) for f in self.findings],
            "certificates": [asdict(c) for c in self.certificates],
        }


# ---- who chronyd runs as, and what that user may do --------------------------------------------


# ---- the audit ---------------------------------------------------------------------------------


class Checker:
    def __init__(
        self,
        conf: chronyconf.ChronyConf,
        who: access.Reader,
        ca_files,
        warn_days: int,
        critical_days: int,
        do_probe: bool,
        timeout: float,
        trust_bundle: list | None = None,
    ):
        from ntspki.nts import probe

        self.trust_bundle = trust_bundle or []  # roots every NTS client should trust (--trust-bundle)
        self.conf, self.who = conf, who
        # probe.Trust (the site CA's root and the system store, by default), or plain --ca files.
        self.trust = ca_files if isinstance(ca_files, probe.Trust) else probe.Trust(tuple(ca_files), not ca_files)
        self.ca_files = self.trust.ca_files
        self.warn_days, self.critical_days = warn_days, critical_days
        self.do_probe, self.timeout = do_probe, timeout
        self.report = Report(conf.path, conf.files, who.name)
        self.local_leaves: list = []  # leaf certificates this machine serves (from disk)

    def add(self, severity, code, message, hint=None, path=None, where=None) -> None:
        self.report.findings.append(Finding(severity, code, message, hint, str(path) if path else None, where))

    def store(self):
        from ntspki.nts import probe

        return probe.trust_store(self.ca_files, self.trust.system)  # cached there

    @property
    def trust_text(self) -> str:
        return self.trust.describe()

    def run(self) -> Report:
        for problem in self.conf.problems:
            self.add("unknown", "conf-unreadable", problem, "make the file readable or fix the include line")
        self.chronyd_opinion()
        self.server_side()
        self.client_side()
        self.sources()
        pairs, srcs = len(self.conf.all("ntsservercert")), self.conf.sources()
        nts_srcs = sum(1 for s in srcs if s.nts)
        self.report.role = (
            f"serves NTS ({pairs} certificate(s))" if pairs else "serves no NTS"
        ) + f"; {nts_srcs} of {len(srcs)} source(s) use NTS"
        if not pairs and not nts_srcs:
            self.add(
                "warning",
                "no-nts",
                "no NTS here: this chronyd serves no NTS (no ntsserverkey/ntsservercert) and uses no NTS source "
                "(no server or pool line with `nts`)",
                "for a client: `server NAME iburst nts`; for a server: ntspki issue, then ntspki deploy",
            )
        return self.report

    def chronyd_opinion(self) -> None:
        """chronyd's own parser (`chronyd -p`) as a second opinion: what it refuses never starts."""
        verdict = chronyconf.chronyd_verdict(self.conf.path)
        if verdict is None:
            self.add(
                "info", "chronyd-parse", "chronyd is not installed here: the configuration was read by ntspki only"
            )
        elif verdict.startswith("refused: "):
            self.add(
                "critical",
                "conf-refused",
                f"chronyd refuses this configuration: {verdict[len('refused: ') :]}",
                "fix the line chronyd names (`chronyd -p -f FILE` shows its verdict)",
                self.conf.path,
            )
        elif verdict.startswith("unknown: "):
            self.add("unknown", "chronyd-parse", f"chronyd -p could not judge {self.conf.path}: {verdict[9:]}")
        else:
            self.add("ok", "chronyd-parse", f"chronyd parses {self.conf.path}")

    # -- reading files as root --------------------------------------------------------------------
    def read(self, path: str, what: str, where: str) -> bytes | None:
        if os.path.isdir(path):
            self.add(
                "critical",
                f"{what}-is-directory",
                f"{what} file {path} is a directory: chronyd needs the {what} file itself",
                f"point the directive in {where} at the {what} file (ntspki deploy writes /etc/chrony/nts/NAME."
                f"{'key' if what == 'key' else 'crt'})",
                path,
                where,
            )
            return None
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            self.add(
                "critical",
                f"{what}-missing",
                f"{what} file {path} does not exist",
                f"fix the path in {where} or deploy the file",
                path,
                where,
            )
        except PermissionError:
            self.add(
                "unknown",
                f"{what}-unreadable-here",
                f"cannot read {path} as uid {os.geteuid()}",
                "run ntspki check as root",
                path,
                where,
            )
        except OSError as e:
            self.add("critical", f"{what}-unreadable", f"cannot read {path}: {e.strerror}", None, path, where)
        return None

    # -- ntsserverkey / ntsservercert -----------------------------------------------------------------
    def server_side(self) -> None:
        keys = self.conf.all("ntsserverkey")
        certs = self.conf.all("ntsservercert")
        if not keys and not certs:
            self.add("info", "no-nts-server", "no ntsserverkey/ntsservercert: this chronyd is not an NTS server")
            return
        if len(keys) != len(certs):
            self.add(
                "critical",
                "pair-count",
                f"{len(keys)} ntsserverkey but {len(certs)} ntsservercert directives: chronyd pairs them "
                "in order and refuses to start when the counts differ",
                "give one ntsserverkey for every ntsservercert",
                where=(keys or certs)[0].where,
            )
        for d in keys + certs:
            if not d.args:
                self.add(
                    "critical",
                    "conf-syntax",
                    f"{d.name} without a file name: chronyd refuses the configuration",
                    f"fix {d.where}",
                    where=d.where,
                )
                return
        chains = [self.pair(kd, cd) for kd, cd in zip(keys, certs)]
        self.dumpdir()
        if self.do_probe:
            self.probe_local(list(zip(certs, chains)))

    def pair(self, kd: chronyconf.Directive, cd: chronyconf.Directive) -> list:
        """Check one ntsserverkey/ntsservercert pair; the chain read from the certificate file."""
        key_path, cert_path = kd.args[0], cd.args[0]
        chain = self.cert_file(cert_path, cd.where)
        key = self.key_file(key_path, kd.where)
        if key is not None and chain:
            from ntspki.pki import keys as keys_mod

            if keys_mod.key_matches_cert(key, chain[0]):
                self.add(
                    "ok", "key-matches", f"{key_path} is the key of the first certificate in {cert_path}", path=key_path
                )
            else:
                elsewhere = [i + 1 for i, c in enumerate(chain) if keys_mod.key_matches_cert(key, c)]
                detail = f" (it matches certificate #{elsewhere[0]}: the chain is out of order)" if elsewhere else ""
                self.add(
                    "critical",
                    "key-mismatch",
                    f"{key_path} is not the key of the first certificate in {cert_path}{detail}: chronyd "
                    "logs 'The certificate and the given key do not match.' and serves no NTS",
                    "deploy the key and certificate of the same issuance together",
                    key_path,
                    kd.where,
                )
        self.permissions(key_path, "key", kd.where)
        self.permissions(cert_path, "cert", cd.where)
        return chain

    def cert_file(self, path: str, where: str) -> list:
        from ntspki import pki
        from ntspki.pki import verify

        data = self.read(path, "cert", where)
        if data is None:
            return []
        try:
            chain = verify.load_chain(data, path)
        except verify.ChainError as e:
            self.add("critical", "chain-too-long", str(e), "keep only the leaf and its intermediates", path, where)
            return []
        except NtspkiError:
            self.add("critical", "cert-unparsable", f"{path} holds no readable PEM certificate", None, path, where)
            return []
        leaf = chain[0]
        cas = [verify.is_ca(c) for c in chain]
        ordered = True
        if cas[0]:
            ordered = False
            leaf_at = next((i + 1 for i, ca in enumerate(cas) if not ca), None)
            where_leaf = f"the leaf is certificate #{leaf_at} of {len(chain)}" if leaf_at else "it holds no leaf"
            self.add(
                "critical",
                "chain-order",
                f"{path} does not start with the server certificate ({where_leaf}): chronyd pairs the key "
                "with the first certificate and logs 'The certificate and the given key do not match.'",
                "write the leaf first, then the intermediates (certbot's fullchain.pem)",
                path,
                where,
            )
        else:
            for i in range(len(chain) - 1):
                if not verify.issued_by(chain[i], chain[i + 1]):
                    ordered = False
                    self.add(
                        "critical",
                        "chain-order",
                        f"{path}: certificate #{i + 2} ({chain[i + 1].subject.rfc4514_string()}) did not "
                        f"issue certificate #{i + 1}: clients cannot build the chain",
                        "the file must be leaf, then its issuer, then that one's issuer",
                        path,
                        where,
                    )
                    break
        if any(pki.is_self_signed(c) for c in chain[1:]):
            self.add(
                "warning",
                "chain-root",
                f"{path} includes a root certificate: clients must already trust it, so it only adds "
                "bytes to every handshake",
                "drop the root (leaf and intermediates only)",
                path,
                where,
            )
        if ordered:
            self.local_leaves.append(leaf)
            try:
                verify.verify_chain(self.store(), chain)
            except verify.ChainError as e:
                self.chain_refused(e, len(chain), path, where)
            else:
                self.add("ok", "chain-verifies", f"{path} verifies against {self.trust_text}", path=path)
        # Out of order, the server certificate is still somewhere in the file: judge that one.
        leaf = next((c for c, ca in zip(chain, cas) if not ca), leaf)
        eku = verify.eku_error(leaf)
        if eku:
            self.add("critical", "eku", f"{path}: {eku}", "issue a certificate with EKU serverAuth", path, where)
        if not pki.sans_of(leaf):
            self.add(
                "critical",
                "no-san",
                f"{path}: the certificate has no DNS or IP subjectAltName: no client can match it",
                "reissue with the names clients use",
                path,
                where,
            )
        for i, c in enumerate(chain, 1):
            self.expiry(c, path, i, where)
        return chain

    def chain_refused(self, e, length: int, path: str, where: str) -> None:
        """A finding for the verifier's refusal, unless one below (expiry, eku, no-san) says it for
        a certificate in the file."""
        if length == 1 and e.rule == "unknown-issuer":
            self.add(
                "critical",
                "chain-incomplete",
                f"{path} holds only the server certificate, not its intermediates: clients fail with "
                "'The certificate issuer is unknown.'",
                "point ntsservercert at the full chain (leaf then intermediates, e.g. fullchain.pem)",
                path,
                where,
            )
        elif e.rule in ("eku", "no-san") and e.position == 1 or e.rule in ("expired", "not-yet-valid") and e.position:
            return
        else:
            hint = None if self.ca_files else "for a private CA, give its root with --ca ROOT.pem"
            self.add("critical", "chain-verify", f"{path}: {e}", hint, path, where)

    def expiry(self, cert, path: str, position: int, where: str) -> None:
        from ntspki import pki

        now = dt.datetime.now(dt.UTC)
        subject = cert.subject.rfc4514_string()
        days = (cert.not_valid_after_utc - now).total_seconds() / 86400
        self.report.certificates.append(
            CertState(
                path, position, subject, pki.fingerprint(cert), cert.not_valid_after_utc.isoformat(), round(days, 3)
            )
        )
        what = "the server certificate" if position == 1 else f"certificate #{position}"
        label = f"{path}: {what} ({subject})"
        renew = "renew and redeploy it (ntspki renew / certbot renew, then ntspki deploy)"
        if cert.not_valid_before_utc > now:
            self.add(
                "critical",
                "not-yet-valid",
                f"{label} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
                "check the clocks of this machine and of the CA",
                path,
                where,
            )
        elif days < 0:
            self.add(
                "critical",
                "expired",
                f"{label} expired on {cert.not_valid_after_utc:%Y-%m-%d}: every client refuses it",
                renew,
                path,
                where,
            )
        elif days < self.critical_days:
            self.add(
                "critical",
                "expiring",
                f"{label} expires in {days:.1f} days ({cert.not_valid_after_utc:%Y-%m-%d})",
                renew,
                path,
                where,
            )
        elif days < self.warn_days:
            self.add(
                "warning",
                "expiring",
                f"{label} expires in {days:.1f} days ({cert.not_valid_after_utc:%Y-%m-%d})",
                renew,
                path,
                where,
            )
        else:
            self.add("ok", "valid", f"{label} is valid for {int(days)} more days", path=path)

    def key_file(self, path: str, where: str):
        from ntspki.pki import keys

        data = self.read(path, "key", where)
        if data is None:
            return None
        try:
            key = keys.load_private_pem(data, what=path)
        except keys.EncryptedKey:
            self.add(
                "critical",
                "key-encrypted",
                f"{path} is encrypted: chronyd cannot ask for a passphrase and fails with "
                "'Could not set credentials : Decryption has failed.'",
                f"store it unencrypted, readable only by root and {self.who.name}",
                path,
                where,
            )
            return None
        except NtspkiError as e:
            self.add("critical", "key-unparsable", str(e), None, path, where)
            return None
        key_type = keys.key_type_of(key)
        if key_type not in ("ec-p256", "ec-p384", "ed25519") and not key_type.startswith("rsa-"):
            self.add(
                "warning",
                "key-type",
                f"{path}: {type(key).__name__} keys are not known to load in chronyd",
                "use EC P-256/P-384, Ed25519 or RSA",
                path,
                where,
            )
        return key

    # -- permissions, as chronyd's user ------------------------------------------------------------
    def permissions(self, path: str, what: str, where: str) -> None:
        if not path or not os.path.isfile(path):
            return  # missing or not a file: already reported, and no mode makes it right
        who = self.who
        blocked = who.blocked_dir(path)
        if blocked:
            d, st = blocked
            self.add(
                "critical",
                "dir-untraversable",
                f"directory {d} ({access.owner_text(st)}) is not searchable by {who.name}, so chronyd cannot "
                f"reach {path} and fails with 'Could not set credentials : Error while reading file.'",
                f"keep chronyd's files under /etc/chrony/nts/ (ntspki deploy), or chmod o+x {d}",
                path,
                where,
            )
            return
        st = os.stat(path)
        if not who.may_stat(st, 4):
            code = "key-unreadable" if what == "key" else "cert-unreadable"
            self.add(
                "critical",
                code,
                f"{path} ({access.owner_text(st)}) is not readable by {who.name}: chronyd reads it after dropping "
                "root and fails with 'Could not set credentials : Error while reading file.'",
                f"chown root:{who.group} {path} && chmod {'0640' if what == 'key' else '0644'} {path}",
                path,
                where,
            )
        elif what == "key":
            self.add("ok", "key-readable", f"{path} ({access.owner_text(st)}) is readable by {who.name}", path=path)
        if what != "key":
            return
        mode = stat.S_IMODE(st.st_mode)
        fix = f"chown root:{who.group} {path} && chmod 0640 {path}"
        if mode & 0o004:
            self.add(
                "critical",
                "key-exposed",
                f"{path} ({access.owner_text(st)}) is readable by every user",
                fix,
                path,
                where,
            )
        elif mode & 0o040 and st.st_gid not in (0, who.gid):
            self.add(
                "warning",
                "key-group",
                f"{path} ({access.owner_text(st)}) is readable by group {access.group_name(st.st_gid)}, which is not {who.name}'s",
                fix,
                path,
                where,
            )
        if st.st_uid not in (0, who.uid):
            self.add(
                "warning",
                "key-owner",
                f"{path} is owned by {access.owner_text(st).split(':')[0]}, neither root nor {who.name}: "
                "that user can replace the key or change who may read it",
                fix,
                path,
                where,
            )
        if who.uid != 0 and (who.may_stat(st, 2) or st.st_uid == who.uid):
            self.add(
                "warning",
                "key-writable",
                f"{path} ({access.owner_text(st)}) can be changed by {who.name}: a compromised chronyd could "
                "replace its own key (chrony 4.4 and later warn about this)",
                fix,
                path,
                where,
            )

    def dumpdir(self) -> None:
        d = self.conf.last("ntsdumpdir")
        if d is None or not d.args:
            self.add(
                "warning",
                "no-dumpdir",
                "no ntsdumpdir: every restart of chronyd makes new cookie keys, so every client's cookies "
                "are refused (NTS NAK) and all clients redo NTS-KE",
                "add `ntsdumpdir /var/lib/chrony` to chrony.conf",
            )
            return
        path = d.args[0]
        if os.path.exists(path) and not os.path.isdir(path):
            self.add(
                "warning",
                "dumpdir-not-directory",
                f"ntsdumpdir {path} is not a directory: chronyd cannot keep its cookie keys across restarts",
                f"point ntsdumpdir in {d.where} at a directory chronyd's user can write (e.g. /var/lib/chrony)",
                path,
                d.where,
            )
            return
        if not os.path.isdir(path):
            self.add(
                "warning",
                "dumpdir-missing",
                f"ntsdumpdir {path} does not exist: chronyd cannot keep its cookie keys across restarts",
                f"install -d -m 0750 -o {self.who.name} -g {self.who.group} {path}",
                path,
                d.where,
            )
            return
        st = os.stat(path)
        if self.who.blocked_dir(path) or not self.who.may_stat(st, 2 | 1):
            self.add(
                "warning",
                "dumpdir-unwritable",
                f"ntsdumpdir {path} ({access.owner_text(st)}) is not writable by {self.who.name}",
                f"chown {self.who.name}: {path}",
                path,
                d.where,
            )
            return
        self.add("ok", "dumpdir", f"ntsdumpdir {path} is writable by {self.who.name}", path=path)

    # -- --probe: is what is on disk what is served? ------------------------------------------------
    def probe_local(self, pairs) -> None:
        """`pairs`: (ntsservercert directive, the chain read from its file) for each pair."""
        from cryptography import x509

        from ntspki import pki
        from ntspki.nts import probe

        port = self.conf.ntsport()
        host = "127.0.0.1"
        for b in self.conf.all("bindaddress"):
            ip = names.parse_ip(b.args[0]) if b.args else None
            if ip is not None and not ip.is_unspecified:
                host = str(ip)
                break
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        for cd, chain in pairs:
            if not chain:
                continue  # unreadable or unparsable: already reported
            disk = chain[0]
            disk_sha256 = pki.fingerprint(disk)
            sans = pki.sans_of(disk)
            dns = [g.value for g in sans if isinstance(g, x509.DNSName) and "*" not in g.value]
            name = dns[0] if dns else (str(sans[0].value) if sans else host)
            label = f"NTS-KE at {target} (name {name})"
            try:
                r = probe.probe(target, name=name, timeout=self.timeout, trust=self.store())
            except NtspkiError as e:
                self.add("unknown", "probe-failed", f"{label}: could not probe: {e}", None, cd.args[0], cd.where)
                continue
            if r.chain and r.sha256 != disk_sha256:
                served_nb = dt.datetime.fromisoformat(r.chain[0]["not_before"])
                if disk.not_valid_before_utc > served_nb:
                    self.add(
                        "warning",
                        "stale-served",
                        f"{label} serves {r.chain[0]['subject']} (SHA-256 {r.sha256[:16]}...), but "
                        f"{cd.args[0]} on disk is newer: chronyd needs a restart",
                        "systemctl restart chrony (chronyd never re-reads its certificate)",
                        cd.args[0],
                        cd.where,
                    )
                else:
                    self.add(
                        "critical",
                        "served-other",
                        f"{label} serves {r.chain[0]['subject']} (SHA-256 {r.sha256[:16]}...), not the "
                        f"certificate in {cd.args[0]}",
                        "check which chronyd owns the port and its config",
                        cd.args[0],
                        cd.where,
                    )
            if not r.ok:
                self.add(
                    "critical",
                    "probe-failed",
                    f"{label}: {r.error}",
                    "look for 'Could not set credentials' in chronyd's log" if r.stage == "tls" else None,
                    cd.args[0],
                    cd.where,
                )
            elif r.sha256 == disk_sha256:
                self.add(
                    "ok",
                    "served",
                    f"{label} serves the certificate on disk and answers authenticated NTP (stratum {r.stratum})",
                    path=cd.args[0],
                )

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
            self.add(
                "critical",
                "trust-missing",
                f"ntstrustedcerts {path} does not exist: NTS-KE with the sources using it fails",
                f"copy the CA's root certificate to {path}, or fix the path in {where}",
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

    def probe_source(self, src: chronyconf.Source, files: list[str], system: bool) -> None:
        from ntspki.nts import probe

        host = f"[{src.host}]" if ":" in src.host else src.host
        where = src.directive.where
        label = f"{src.kind} {src.host}"
        try:
            r = probe.probe(f"{host}:{src.ntsport}", timeout=self.timeout, trust=probe.trust_store(files, system))
        except NtspkiError as e:  # a target or trust file the probe cannot use: not the source's fault
            self.add("unknown", "source-probe", f"{label}: could not probe: {e}", None, where=where)
            return
        if r.ok:
            self.add("ok", "source-probe", f"{label}: NTS works (stratum {r.stratum})", where=where)
        elif r.stage in ("connect", "internal"):
            self.add(
                "unknown",
                "source-probe",
                f"{label}: could not probe: {r.error}",
                f"check that {src.host} resolves and that port {src.ntsport}/tcp is reachable from here",
                where=where,
            )
        else:
            self.add(
                "critical",
                "source-probe",
                f"{label}: {r.error}",
                f"run `ntspki probe {host}:{src.ntsport}` for details; fix the trust (ntstrustedcerts) or the name",
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


def check(
    conf_path: str | None = None,
    *,
    ca_files=(),
    user: str | None = None,
    warn_days: int = 21,
    critical_days: int = 7,
    probe: bool = False,
    timeout: float = 5.0,
    trust_bundle: str | None = None,
    home=None,
    trust: str = "both",
) -> Report:
    """`home` and `trust`: see nts.probe.default_trust (the site CA's root with the system store)."""
    # Every failure to run maps to UNKNOWN (3): monitoring reads 2 as CRITICAL.
    if critical_days > warn_days:
        raise NtspkiError("--critical-days must not be more than --warn-days", 3)
    bundle_roots = None
    if trust_bundle is not None:
        from ntspki.pki import bundle

        bundle_roots = bundle.read_trusted(trust_bundle) if Path(trust_bundle).is_file() else []
        if not bundle_roots:
            raise NtspkiError(f"--trust-bundle {trust_bundle}: no readable PEM certificate in it", 3)
    if ca_files:
        from ntspki.nts import probe as probe_mod

        try:
            probe_mod.trust_store(ca_files)
        except NtspkiError as e:
            raise NtspkiError(str(e), 3)
    path = str(conf_path or chronyconf.default_path())
    if os.path.exists(path) and not os.path.isfile(path) and path != os.devnull:  # a FIFO or device never ends
        raise NtspkiError(f"cannot read {path}: not a regular file", 3)
    conf = chronyconf.parse(path)
    name = user or conf.value("user") or services.get("chrony").user()
    try:
        who = access.Reader.named(name)
    except access.UnknownUser:
        raise NtspkiError(f"no such user {name!r} (chronyd's run user)", 3)
    from ntspki.nts.probe import default_trust

    try:
        trusted = default_trust(ca_files, home, trust)
    except NtspkiError as e:
        raise NtspkiError(str(e), 3)
    return Checker(conf, who, trusted, warn_days, critical_days, probe, timeout, bundle_roots).run()


# ---- node_exporter textfile ----------------------------------------------------------------------


def _label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(report: Report) -> str:
    lines = [
        "# HELP ntspki_check_status Result of ntspki check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
        "# TYPE ntspki_check_status gauge",
        f"ntspki_check_status {report.exit_code}",
        "# HELP ntspki_check_findings Findings of ntspki check by severity.",
        "# TYPE ntspki_check_findings gauge",
    ]
    lines += [f'ntspki_check_findings{{severity="{s}"}} {n}' for s, n in report.counts().items()]
    labels = [
        f'file="{_label(c.file)}",position="{c.position}",subject="{_label(c.subject)}",sha256="{c.sha256}"'
        for c in report.certificates
    ]
    lines += [
        "# HELP ntspki_cert_days_left Days until a certificate chronyd serves expires (negative: expired).",
        "# TYPE ntspki_cert_days_left gauge",
    ]
    lines += [f"ntspki_cert_days_left{{{lab}}} {c.days_left:.3f}" for lab, c in zip(labels, report.certificates)]
    lines += [
        "# HELP ntspki_cert_not_after_seconds Expiry time of a certificate chronyd serves (Unix time).",
        "# TYPE ntspki_cert_not_after_seconds gauge",
    ]
    lines += [
        f"ntspki_cert_not_after_seconds{{{lab}}} {int(dt.datetime.fromisoformat(c.not_after).timestamp())}"
        for lab, c in zip(labels, report.certificates)
    ]
    lines += [
        "# HELP ntspki_check_timestamp_seconds When ntspki check last ran (Unix time).",
        "# TYPE ntspki_check_timestamp_seconds gauge",
        f"ntspki_check_timestamp_seconds {int(time.time())}",
    ]
    return "\n".join(lines) + "\n"


def write_prometheus(report: Report, path: str) -> None:
    """Atomically (node_exporter must never read half a file): temp file in the same directory, rename."""
    from ntspki.store import fsutil

    target = Path(path)
    if not target.parent.is_dir():
        raise NtspkiError(f"cannot write {path}: directory {target.parent} does not exist", 3)
    try:
        fsutil.atomic_write(target, prometheus_text(report).encode(), 0o644)
    except OSError as e:
        raise NtspkiError(f"cannot write {path}: {e.strerror}", 3)
