"""The issuance ledger: one SQLite row per certificate version ntspki wrote, and one per revocation."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path

from ntspki.errors import NtspkiError
from ntspki.store import fsutil

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


COLUMNS = {
    "certificates": {
        "id", "name", "version", "serial", "sans", "not_before", "not_after", "sha256", "key_type", "issuer",
        "source", "issued_at",
    },
    "revocations": {"serial", "name", "version", "issuer", "not_after", "reason", "revoked_at"},
}  # fmt: skip


class BadLedger(NtspkiError):
    """The ledger file is not an ntspki ledger (not SQLite, a FIFO, a foreign schema)."""


def _check_file(path: Path) -> None:
    """SQLite would block opening a FIFO and create the target of a dangling link: refuse both,
    and anything else that is not a regular file, before it gets the path."""
    import stat

    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise BadLedger(f"the ledger {path} is a dangling symbolic link") from None
        return
    if not stat.S_ISREG(st.st_mode):
        raise BadLedger(f"the ledger {path} is not a regular file")


def _check_schema(db: sqlite3.Connection, path: Path) -> None:
    """Tables that are there must have ntspki's columns: another program's table of the same name
    is an error naming it, not a failed INSERT after the certificate was written."""
    for table, wanted in COLUMNS.items():
        kind = db.execute("SELECT type FROM sqlite_master WHERE name = ?", (table,)).fetchone()
        if kind is None:
            continue
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if kind[0] != "table" or not wanted <= have:
            missing = ", ".join(sorted(wanted - have)) or "none"
            raise BadLedger(f"the ledger {path} is not ntspki's: {kind[0]} {table} lacks columns {missing}")


def _create(path: Path) -> None:
    """Make a new ledger complete, tables and all, beside `path` and link it in: a reader
    (`ntspki list` while the first `issue` runs) never sees a ledger without its tables, and of
    two processes creating it at once, one links and the other uses that one."""
    tmp = fsutil.temp_path(path)
    try:
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.executescript(SCHEMA)
            # WAL (kept in the file): readers (`ntspki list`) never block a writer; NORMAL sync
            # (set per connection) is durable at checkpoints, and a batch syncs the file system on exit.
            db.execute("PRAGMA journal_mode=WAL")
        finally:
            db.close()
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # SQLite synced the file's contents at its commits
            fsutil.fsync_dir(path.parent)
    finally:
        for leftover in (tmp, f"{tmp}-wal", f"{tmp}-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)


class Ledger:
    def __init__(self, path: Path, readonly: bool = False):
        _check_file(path)
        if readonly:
            self.db = _open_readonly(path)
            return
        try:
            if not os.path.lexists(path):
                _create(Path(path))
            self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            _check_schema(self.db, path)
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)  # a ledger from before the revocations table gets it here
        except sqlite3.DatabaseError as e:
            raise BadLedger(f"cannot open the ledger {path}: {e}") from None

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

    def rows(self, name: str | None = None, latest_only: bool = True, bad: list[str] | None = None) -> list[dict]:
        """The rows (the latest version of each lineage), each checked: a row that is not what
        ntspki wrote raises BadLedger naming it, or, given a `bad` list, is described there and
        left out (`list` still shows the others)."""
        where, args = ("WHERE name = ?", [name]) if name else ("", [])
        if latest_only:
            query = (
                f"SELECT * FROM certificates c {where} {'AND' if where else 'WHERE'} version = "
                "(SELECT MAX(version) FROM certificates d WHERE d.name = c.name) ORDER BY name"
            )
        else:
            query = f"SELECT * FROM certificates {where} ORDER BY name, version"
        out = []
        try:
            found = [dict(row) for row in self.db.execute(query, args)]
        except sqlite3.DatabaseError as e:
            raise BadLedger(f"cannot read the ledger: {e}") from None
        for d in found:
            problem = _row_problem(d)
            if problem is None:
                out.append(d)
                continue
            what = f"ledger row {d.get('id')} ({d.get('name')!r:.40} version {d.get('version')!r:.10}): {problem}"
            if bad is None:
                raise BadLedger(what)
            bad.append(what)
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


def _row_problem(d: dict) -> str | None:
    """What is wrong with a certificates row (decoding its `sans` in place), or None."""
    import datetime as dt

    for key in ("name", "serial", "sha256", "key_type", "issuer", "source"):
        if not isinstance(d.get(key), str):
            return f"{key} {d.get(key)!r:.40} is not text"
    if isinstance(d.get("version"), bool) or not isinstance(d.get("version"), int):
        return f"version {d.get('version')!r:.20} is not a number"
    for key in ("not_before", "not_after"):
        try:
            when = dt.datetime.fromisoformat(d[key])
        except (TypeError, ValueError):
            return f"{key} {d.get(key)!r:.40} is not a date"
        if when.tzinfo is None:
            return f"{key} {d.get(key)!r:.40} has no time zone"
    try:
        sans = json.loads(d["sans"])
    except (TypeError, ValueError, RecursionError):
        return f"sans {d.get('sans')!r:.40} is not JSON"
    if not isinstance(sans, list) or not all(isinstance(n, str) for n in sans):
        return f"sans {d.get('sans')!r:.40} is not a list of names"
    d["sans"] = sans
    return None


def revoked(home_path: Path, serial: int) -> dict | None:
    """The revocation of `serial` in the ledger of the ntspki home at `home_path` (None: not revoked,
    or no ledger there). Read-only: deploy may run where the home cannot be written."""

    path = Path(home_path) / "ledger.sqlite3"
    if not path.exists():
        return None
    _check_file(path)
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
    error: Exception | None = None
    for mode in ("mode=ro", "mode=ro&immutable=1"):
        db = sqlite3.connect(f"{uri}?{mode}", uri=True, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            _check_schema(db, path)
            db.execute("SELECT count(*) FROM certificates").fetchone()
            return db
        except sqlite3.DatabaseError as e:
            db.close()
            error = e
        except BadLedger:
            db.close()
            raise
    raise BadLedger(f"cannot read the ledger {path}: {error}")
