"""The issuance ledger: one SQLite row per certificate version ntspki wrote, and one per revocation."""

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
CREATE TABLE IF NOT EXISTS revocations (
    serial      TEXT PRIMARY KEY,       -- lowercase hex, as in certificates.serial
    name        TEXT,
    version     INTEGER,
    issuer      TEXT NOT NULL,          -- SHA-256 of the intermediate that issued it
    not_after   TEXT NOT NULL,
    reason      TEXT NOT NULL,
    revoked_at  TEXT NOT NULL
);
"""


class Ledger:
    def __init__(self, path: Path, readonly: bool = False):
        if readonly:
            self.db = _open_readonly(path)
            return
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

    # -- revocations (ntspki.issuing.revocation writes them; deploy refuses what they list) ----------
    def revoke(
        self,
        serial: str,
        name: str | None,
        version: int | None,
        issuer: str,
        not_after: str,
        reason: str,
        revoked_at: str,
    ) -> tuple[dict, bool]:
        """Record a revocation unless there is one already: the row, and whether it is new."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO revocations (serial, name, version, issuer, not_after, reason, revoked_at) "
            "VALUES (?,?,?,?,?,?,?)",
            (serial, name, version, issuer, not_after, reason, revoked_at),
        )
        row = self.db.execute("SELECT * FROM revocations WHERE serial = ?", (serial,)).fetchone()
        return dict(row), cur.rowcount == 1

    def revocations(self) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM revocations ORDER BY revoked_at, serial")]


def revoked(home_path: Path, serial: int) -> dict | None:
    """The revocation of `serial` in the ledger of the ntspki home at `home_path` (None: not revoked,
    or no ledger there). Read-only: deploy may run where the home cannot be written."""
    from ntspki.errors import NtspkiError

    path = Path(home_path) / "ledger.sqlite3"
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM revocations WHERE serial = ?", (format(serial, "x"),)).fetchone()
        finally:
            db.close()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return None  # a ledger from before revocations: nothing was ever revoked
        raise NtspkiError(f"cannot read revocations from {path}: {e}")
    except sqlite3.DatabaseError as e:
        raise NtspkiError(f"cannot read revocations from {path}: {e}")
    return dict(row) if row else None


def refuse_revoked(live_dir: Path, *certs) -> None:
    """Raise when one of `certs` (a lineage's chain, leaf first), read from lineage directory
    `live_dir`, is revoked in the ledger of the ntspki home that holds it (HOME/live/NAME): the leaf,
    or the intermediate that issued it. Other sources, such as certbot's, have no ledger here."""
    from ntspki.errors import NtspkiError

    live_dir = Path(live_dir)
    if live_dir.parent.name != "live":
        return
    for position, cert in enumerate(certs):
        row = revoked(live_dir.parent.parent, cert.serial_number)
        if row:
            what = "certificate" if position == 0 else "its issuing intermediate"
            raise NtspkiError(
                f"{live_dir}: {what} {row['serial']} was revoked on {row['revoked_at'][:10]} ({row['reason']}): "
                f"re-issue it first (`ntspki renew {live_dir.name}`)"
            )


def _open_readonly(path: Path) -> sqlite3.Connection:
    """For `list` on a home it cannot write (read-only mount, another user's home): read-only, and
    immutable when even WAL's shared-memory file cannot be made (nobody can be writing then)."""
    from urllib.parse import quote

    uri = f"file:{quote(str(Path(path).absolute()))}"
    for mode in ("mode=ro", "mode=ro&immutable=1"):
        db = sqlite3.connect(f"{uri}?{mode}", uri=True, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("SELECT count(*) FROM certificates").fetchone()
            return db
        except sqlite3.OperationalError as e:
            db.close()
            error = e
    raise error
