"""`check --prometheus`: the report as a node_exporter textfile."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from ntspki.audit.findings import Report
from ntspki.errors import NtspkiError


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
