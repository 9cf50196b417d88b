"""`check`: audit a machine's chrony NTS setup as root sees it and as chronyd's own user will.

Every finding names the file, what chronyd or its clients will do about it (in chrony's own words
where there are some), and the fix. Severities follow the monitoring convention: the report's
status is CRITICAL if any finding is, else WARNING, else UNKNOWN (something could not be checked),
else OK.

The audit is split by what it looks at: `findings` (the report), `checkbase` (reading files,
adding findings), `serverside` (key, chain, expiry), `filechecks` (permissions, ntsdumpdir), `clientside` (sources and
their trust), `probes` (`--probe`), `prometheus` (node_exporter output). This module puts them
together and keeps `check`, `Report`, `write_prometheus`, ... importable from here.
"""

from __future__ import annotations

import os
from pathlib import Path

from ntspki.audit.clientside import ClientChecks
from ntspki.audit.findings import EXIT, CertState, Finding, Report
from ntspki.audit.prometheus import prometheus_text, write_prometheus
from ntspki.errors import NtspkiError
from ntspki.servers import chronyconf, services
from ntspki.store import access

__all__ = ["EXIT", "CertState", "Checker", "Finding", "Report", "check", "prometheus_text", "write_prometheus"]


class Checker(ClientChecks):
    """The whole audit: chronyd's own opinion, the server side, the client side, the sources."""

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
        if self.conf.not_files:
            self.add(
                "unknown",
                "chronyd-parse",
                f"chronyd -p not run: it would read {', '.join(self.conf.not_files)}, which is not a regular file",
            )
            return
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
