"""The issuance ledger: one SQLite row per certificate version ntspki wrote."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS certificates (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    serial      TEXT NOT NULL,
    sans        TEXT NOT NULL,          -- JSON list
    not_before  TEXT NOT NULL,
    not_after   TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    key_type    TEXT NOT NULL,
    issuer      TEXT NOT NULL,
    source      TEXT NOT NULL DEFAULT 'internal',
    issued_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    UNIQUE (name, version)
);
"""


class Ledger:
    def __init__(self, path: Path):
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        # WAL: readers (`ntspki list`) never block a writer; NORMAL sync is durable at checkpoints
        # and the batch path syncs the file system on exit.
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def record(self, name: str, version: int, info, key_type: str, source: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO certificates "
            "(name, version, serial, sans, not_before, not_after, sha256, key_type, issuer, source) "
            "VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                name,
                version,
                info.serial,
                json.dumps(info.sans),
                info.not_before,
                info.not_after,
                info.sha256,
                key_type,
                info.issuer,
                source,
            ),
        )

    def rows(self, name: str | None = None, latest_only: bool = True) -> list[dict]:
        where, args = ("WHERE name = ?", [name]) if name else ("", [])
        if latest_only:
            query = (
                f"SELECT * FROM certificates c {where} {'AND' if where else 'WHERE'} version = "
                "(SELECT MAX(version) FROM certificates d WHERE d.name = c.name) ORDER BY name"
            )
        else:
            query = f"SELECT * FROM certificates {where} ORDER BY name, version"
        out = []
        for row in self.db.execute(query, args):
            d = dict(row)
            d["sans"] = json.loads(d["sans"])
            out.append(d)
        return out
