"""ntspki's home directory: the CA, certbot-compatible lineages, the ledger and the lock.

    HOME/ca/root.pem                  the issuing root
    HOME/ca/trust.pem                 what clients put in `ntstrustedcerts` (both roots in a rollover)
    HOME/ca/intermediate.pem
    HOME/ca/private/{root,intermediate}.key     (0700 directory, 0600 keys; root key encrypted)
    HOME/archive/NAME/{cert,chain,fullchain,privkey}N.pem
    HOME/live/NAME/{cert,chain,fullchain,privkey}.pem -> ../../archive/NAME/...N.pem
    HOME/renewal/NAME.json            how to make the next version (internal or ACME)
    HOME/ledger.sqlite3, HOME/.lock

Also here: the one atomic writer and lock (`fsutil`), the SQLite ledger (`ledger`), the access model
(`access`) and a lineage's identity (`identity`: the request, what stays across versions, the
result of an issuance, shared by the site CA's issuer and the ACME client).
Layer: bottom (storage). May import `pki` (to read what it stores) and `errors`; never `cli`,
`deploy` or `issuing`.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ntspki.errors import NtspkiError, describe_os_error

if TYPE_CHECKING:
    from ntspki.store.ledger import Ledger
from ntspki.store import fsutil

FILES = ("privkey", "cert", "chain", "fullchain")  # also the order live/ links are switched in
_NAME_OK = re.compile(r"^[A-Za-z0-9*][A-Za-z0-9._*-]{0,254}$")


def default_home() -> Path:
    env = os.environ.get("NTSPKI_HOME")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/etc/ntspki")
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data) / "ntspki"


def check_lineage_name(name: str) -> str:
    if not _NAME_OK.match(name) or name in (".", ".."):
        raise NtspkiError(f"bad lineage name {name!r}: letters, digits, '.', '-', '_' and '*' only", 2)
    return name


@dataclass
class Lineage:
    """A consistent, readable version of a lineage's four files."""

    name: str
    version: int
    live_dir: Path
    privkey: bytes
    cert: bytes
    chain: bytes
    fullchain: bytes


class Home:
    def __init__(self, path: Path | str | None = None):
        self.path = (Path(path) if path else default_home()).absolute()
        self.ca_dir = self.path / "ca"
        self.private_dir = self.ca_dir / "private"
        self.live = self.path / "live"
        self.archive = self.path / "archive"
        self.renewal = self.path / "renewal"
        self.ledger_path = self.path / "ledger.sqlite3"
        self.lock_path = self.path / ".lock"
        self._ledger: Ledger | None = None

    # -- set-up ---------------------------------------------------------------------------------
    def ensure(self) -> Home:
        try:
            self.path.mkdir(mode=0o755, parents=True, exist_ok=True)
            self.ca_dir.mkdir(mode=0o755, exist_ok=True)
            for d in (self.private_dir, self.live, self.archive, self.renewal):
                fsutil.make_private_dir(d)
            if not os.access(self.path, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "Permission denied", str(self.path))
        except OSError as e:
            raise NtspkiError(f"cannot use {self.path} as ntspki home: {describe_os_error(e)}")
        return self

    def require_readable(self) -> Home:
        if not self.path.exists():
            raise NtspkiError(f"{self.path} does not exist: run `ntspki ca create` first")
        if not os.access(self.path, os.R_OK | os.X_OK):
            raise NtspkiError(f"cannot read ntspki home {self.path}: permission denied")
        return self

    @property
    def trust_path(self) -> Path:
        """The roots clients trust now: ca/trust.pem (both roots during a rollover), or ca/root.pem
        in a home whose CA predates trust.pem."""
        bundle = self.ca_dir / "trust.pem"
        return bundle if bundle.exists() else self.ca_dir / "root.pem"

    def lock(self):
        return fsutil.locked(self.lock_path)

    @property
    def ledger(self):
        if self._ledger is None:
            from ntspki.store.ledger import Ledger

            try:
                self._ledger = Ledger(self.ledger_path)
            except Exception as e:
                raise NtspkiError(f"cannot open the ledger {self.ledger_path}: {e}")
        return self._ledger

    def ledger_rows(self, name: str | None = None, latest_only: bool = True) -> list[dict]:
        """Ledger rows without writing anything (`list`, `show`: they work on a read-only home)."""
        if self._ledger is not None:
            return self._ledger.rows(name, latest_only)
        if not self.ledger_path.exists():
            return []
        from ntspki.store.ledger import Ledger

        try:
            ledger = Ledger(self.ledger_path, readonly=True)
        except Exception as e:
            raise NtspkiError(f"cannot read the ledger {self.ledger_path}: {e}")
        try:
            return ledger.rows(name, latest_only)
        finally:
            ledger.close()

    # -- lineages -------------------------------------------------------------------------------
    def lineage_names(self) -> list[str]:
        if not self.live.is_dir():
            return []
        return sorted(p.name for p in self.live.iterdir() if p.is_dir() and not p.name.startswith("."))

    def versions(self, name: str) -> list[int]:
        """Complete versions in archive/ (all four files present), ascending."""
        d = self.archive / name
        if not d.is_dir():
            return []
        found: dict[int, set] = {}
        for p in d.iterdir():
            m = re.fullmatch(r"(privkey|cert|chain|fullchain)(\d+)\.pem", p.name)
            if m:
                found.setdefault(int(m.group(2)), set()).add(m.group(1))
        return sorted(v for v, kinds in found.items() if kinds == set(FILES))

    def live_versions(self, name: str) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for kind in FILES:
            try:
                target = os.readlink(self.live / name / f"{kind}.pem")
                m = re.search(rf"{kind}(\d+)\.pem$", target)
                out[kind] = int(m.group(1)) if m else None
            except OSError:
                out[kind] = None
        return out

    def require_lineage(self, name: str) -> str:
        """`name` if it is a lineage here; else the one error every command gives (exit 2)."""
        check_lineage_name(name)
        if not (self.live / name).is_dir():
            raise NtspkiError(f"no lineage {name!r} in {self.live} (`ntspki list` shows them)", 2)
        return name

    def read_lineage(self, name: str) -> Lineage:
        return read_live_dir(self.live / self.require_lineage(name), name)

    def write_version(
        self,
        name: str,
        privkey: bytes,
        cert: bytes,
        chain: bytes,
        durable: bool = True,
    ) -> int:
        """Write a new version into archive/ and switch live/ to it. Caller holds the lock.

        The previous version stays untouched until the four new files are complete, so a crash
        before the switch leaves live/ on the previous version; `repair` finishes a crash during it.
        """
        check_lineage_name(name)
        archive = self.archive / name
        live = self.live / name
        fresh = not live.exists()
        if not fresh:
            self.repair(name)
            self.reconcile_ledger(name)
        fsutil.make_private_dir(archive)
        fsutil.make_private_dir(live)
        existing = [int(m.group(1)) for p in archive.iterdir() if (m := re.fullmatch(r"[a-z]+(\d+)\.pem", p.name))]
        version = max(existing, default=0) + 1
        # Nothing refers to a new version's files until live/ switches, so they are created in
        # place (0600 from the first byte, O_EXCL); fullchain comes last through a rename, and its
        # arrival is what makes the version complete (see `versions`).
        for kind, data in (("privkey", privkey), ("cert", cert), ("chain", chain)):
            _create(archive / f"{kind}{version}.pem", data, 0o600 if kind == "privkey" else 0o644, durable)
        _writer(durable)(archive / f"fullchain{version}.pem", cert + chain, 0o644)
        self._link(name, version, fresh)
        if durable:
            fsutil.fsync_dir(live)
        return version

    def _link(self, name: str, version: int, fresh: bool = False) -> None:
        for kind in FILES:
            target, link = f"../../archive/{name}/{kind}{version}.pem", self.live / name / f"{kind}.pem"
            if fresh:  # a new lineage: no reader can see a half-made live/ as a mix of versions
                os.symlink(target, link)
            else:
                fsutil.atomic_symlink(target, link)

    def repair(self, name: str) -> None:
        """If a crash stopped a live/ switch half-way, finish it (to the newest version linked)."""
        linked = {v for v in self.live_versions(name).values()}
        complete = set(self.versions(name))
        if len(linked) > 1 or (linked and None in linked and complete):
            target = max((v for v in linked if v in complete), default=max(complete, default=None))
            if target is not None:
                self._link(name, target)

    def reconcile_ledger(self, name: str) -> None:
        """Record versions on disk that the ledger lacks (a crash between the live/ switch and the
        ledger row), so `list` never shows an older certificate than the one in live/."""
        recorded = {row["version"] for row in self.ledger.rows(name, latest_only=False)}
        missing = [v for v in self.versions(name) if v not in recorded]
        if not missing:
            return
        from ntspki import pki
        from ntspki.pki import keys

        source = (self.read_renewal(name) or {}).get("source", "internal")
        for v in missing:
            cert = pki.load_certs((self.archive / name / f"cert{v}.pem").read_bytes())[0]
            self.ledger.record(name, v, pki.CertInfo.of(cert), keys.key_type_of(cert.public_key()), source)

    def write_renewal(self, name: str, params: dict, durable: bool = True) -> None:
        _writer(durable)(self.renewal / f"{name}.json", json.dumps(params, indent=2).encode() + b"\n", 0o600)

    def read_renewal(self, name: str) -> dict | None:
        try:
            return json.loads((self.renewal / f"{name}.json").read_text())
        except FileNotFoundError:
            return None

    def sync(self) -> None:
        """Make everything written so far durable (one syncfs for a whole batch)."""
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.syncfs(fd) != 0:
                os.sync()
        except (AttributeError, OSError):
            os.sync()
        finally:
            os.close(fd)


def _writer(durable: bool):
    """Replace-by-rename, with fsyncs (durable) or without (a batch, synced once at the end)."""
    return fsutil.atomic_write if durable else _fast_write


def _create(path: Path, data: bytes, mode: int, durable: bool) -> None:
    """A new file that nothing refers to yet: created 0600, then given `mode`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        if mode != 0o600:
            os.fchmod(fd, mode)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def _fast_write(path: Path, data: bytes, mode: int) -> None:
    """atomic_write without the fsyncs: for batches, made durable by one `Home.sync` at the end."""
    tmp = path.parent / f".{path.name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class InconsistentLineage(NtspkiError):
    """live/ points at files from different versions, or a file is missing (e.g. mid-renewal)."""


def read_live_dir(live_dir: Path, name: str | None = None) -> Lineage:
    """Read a certbot-style live directory (ntspki's or certbot's) as one consistent version."""
    live_dir = Path(live_dir)
    name = name or live_dir.name
    data: dict[str, bytes] = {}
    versions = set()
    for kind in FILES:
        p = live_dir / f"{kind}.pem"
        try:
            data[kind] = p.read_bytes()
        except FileNotFoundError:
            if not live_dir.exists():
                raise NtspkiError(f"no lineage {name!r} (no {live_dir})")
            raise InconsistentLineage(f"lineage {name!r}: {p.name} is missing")
        except OSError as e:
            raise NtspkiError(f"cannot read {p}: {e.strerror}")
        if p.is_symlink():
            m = re.search(r"(\d+)\.pem$", os.readlink(p))
            versions.add(int(m.group(1)) if m else None)
    if len(versions) > 1:
        raise InconsistentLineage(
            f"lineage {name!r}: live/ links point at different versions {sorted(map(str, versions))}"
        )
    version = versions.pop() if versions else 0
    return Lineage(name, version or 0, live_dir, data["privkey"], data["cert"], data["chain"], data["fullchain"])
