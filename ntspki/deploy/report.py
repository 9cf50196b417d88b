"""A deploy run's outcome per target and in all, with the JSON shape `ntspki deploy --json` prints."""

from __future__ import annotations

from dataclasses import dataclass, field

OK, REFUSED, ROLLED_BACK, BROKEN = 0, 1, 3, 4  # exit codes (also in man/ntspki-deploy.1)


@dataclass
class TargetResult:
    name: str
    status: str  # unchanged | deployed | would-deploy | refused | rolled-back | failed
    message: str = ""
    new_sha256: str | None = None
    previous_sha256: str | None = None
    served_sha256: str | None = None
    exit_code: int = OK

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class DeployReport:
    targets: list[TargetResult] = field(default_factory=list)
    actions: list[dict] = field(default_factory=list)  # restart/reload commands run
    warnings: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def exit_code(self) -> int:
        return max((t.exit_code for t in self.targets), default=OK)

    @property
    def ok(self) -> bool:
        return self.exit_code == OK

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "targets": [t.to_dict() for t in self.targets],
            "actions": self.actions,
            "warnings": self.warnings,
            "note": self.note,
        }
