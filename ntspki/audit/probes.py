"""`check --probe`: is what is on disk what is served, and does each NTS source work from here."""

from __future__ import annotations

import datetime as dt

from ntspki.audit.checkbase import CheckerBase
from ntspki.errors import NtspkiError
from ntspki.pki import names
from ntspki.servers import chronyconf


class ProbeChecks(CheckerBase):
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
            if not r.ok and r.stage in ("connect", "internal"):
                # Not reaching the port says nothing certain about the certificate (chronyd stopped,
                # another bindaddress, a firewall): UNKNOWN, as for a source that cannot be probed.
                self.add(
                    "unknown",
                    "probe-failed",
                    f"{label}: could not probe: {r.error}",
                    f"is chronyd running and listening on {target}? (ss -ltnp 'sport = :{port}')",
                    cd.args[0],
                    cd.where,
                )
            elif not r.ok:
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
