"""The core of `ntspki check`'s Checker: its state, how a finding is added, the trust it verifies
against, and reading a file chronyd names as root. The checks themselves are mixins on top of it
(`probes`, `filechecks`, `serverside`, `clientside`); `check.Checker` is the whole audit.
"""

from __future__ import annotations

import os
from pathlib import Path

from ntspki.audit.findings import Finding, Report
from ntspki.errors import NtspkiError
from ntspki.servers import chronyconf
from ntspki.store import access, fsutil


def cannot_exist(path: str) -> str | None:
    """Why nothing can be created at `path` as it is written (so a hint must not say mkdir, copy
    or deploy there): the first part of it that exists is a file, or it is a dangling symlink."""
    p = Path(path)
    for part in [p, *p.parents]:
        if os.path.islink(part) and not os.path.exists(part):
            return f"{part} is a symlink to {os.readlink(part)}, which does not exist"
        if os.path.lexists(part):
            return None if part == p or os.path.isdir(part) else f"{part} is a file, not a directory"
    return None


class CheckerBase:
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
            return fsutil.read_bounded(path, fsutil.PEM_LIMIT, f"{what} file", binary=True)
        except NtspkiError as e:
            cause = e.__cause__  # the OSError of the open, when that is what failed
            if isinstance(cause, (FileNotFoundError, NotADirectoryError)):
                blocker = cannot_exist(path)
                self.add(
                    "critical",
                    f"{what}-missing",
                    f"{what} file {path} does not exist" + (f" and cannot: {blocker}" if blocker else ""),
                    f"fix the path in {where}" if blocker else f"fix the path in {where} or deploy the file",
                    path,
                    where,
                )
            elif isinstance(cause, PermissionError):
                self.add(
                    "unknown",
                    f"{what}-unreadable-here",
                    f"cannot read {path} as uid {os.geteuid()}",
                    "run ntspki check as root",
                    path,
                    where,
                )
            else:  # another OSError, or there but no file (a FIFO, a device, a huge file)
                self.add("critical", f"{what}-unreadable", str(e), None, path, where)
        return None
