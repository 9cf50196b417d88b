"""What `ntspki check` reports: findings, the certificates it saw, the report and its exit code
(the monitoring convention: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

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
