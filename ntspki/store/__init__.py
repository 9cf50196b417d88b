"""ntspki's home directory: the CA, certbot-compatible lineages, the ledger and the lock.

    HOME/ca/root.pem                  the issuing root
    HOME/ca/trust.pem                 what clients put in `ntstrustedcerts` (both roots in a rollover)
    HOME/ca/intermediate.pem
    HOME/ca/private/{root,intermediate}.key     (0700 directory, 0600 keys; root key encrypted)
    HOME/archive/NAME/{cert,chain,fullchain,privkey}N.pem
    HOME/live/NAME -> .NAME.vN        switched in one rename (see `live`)
    HOME/live/.NAME.vN/{cert,chain,fullchain,privkey}.pem -> ../../archive/NAME/...N.pem
    HOME/renewal/NAME.json            how to make the next version (internal or ACME)
    HOME/ledger.sqlite3, HOME/.lock

Also here: the one atomic writer and lock (`fsutil`), the SQLite ledger (`ledger`), the access model
(`access`) and a lineage's identity (`identity`: the request, what stays across versions, the
result of an issuance, shared by the site CA's issuer and the ACME client).
Layer: bottom (storage). May import `pki` (to read what it stores) and `errors`; never `cli`,
`deploy` or `issuing`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ntspki.errors import NtspkiError, describe_os_error

if TYPE_CHECKING:
    from ntspki.store.ledger import Ledger
from ntspki.store import fsutil, live
from ntspki.store.live import FILES, InconsistentLineage, Lineage, read_live_dir

__all__ = ["FILES", "BadRenewal", "Home", "InconsistentLineage", "Lineage", "check_lineage_name", "read_live_dir"]
MAX_RENEWAL_FILE = 64 << 10  # a few hundred bytes in practice
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
        self._preparing: dict[str, set[int]] = {}  # versions this process wrote, not yet switched
        self._live_ready = False

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
            except NtspkiError:
                raise
            except Exception as e:
                raise NtspkiError(f"cannot open the ledger {self.ledger_path}: {e}")
        return self._ledger

    def ledger_rows(
        self, name: str | None = None, latest_only: bool = True, bad: list[str] | None = None
    ) -> list[dict]:
        """Ledger rows without writing anything (`list`, `show`: they work on a read-only home);
        rows that are not what ntspki wrote are described in `bad` (see Ledger.rows)."""
        if self._ledger is not None:
            return self._ledger.rows(name, latest_only, bad)
        if not os.path.lexists(self.ledger_path):
            return []
        from ntspki.store.ledger import Ledger

        try:
            ledger = Ledger(self.ledger_path, readonly=True)
        except NtspkiError:
            raise
        except Exception as e:
            raise NtspkiError(f"cannot read the ledger {self.ledger_path}: {e}")
        try:
            return ledger.rows(name, latest_only, bad)
        finally:
            ledger.close()

    # -- lineages -------------------------------------------------------------------------------
    def lineage_names(self) -> list[str]:
        if not self.live.is_dir():
            return []
        return sorted(p.name for p in self.live.iterdir() if p.is_dir() and not p.name.startswith("."))

    def versions(self, name: str) -> list[int]:
        """Complete versions in archive/ (all four files present), ascending."""
        return sorted(v for v, kinds in live.archive_numbers(self.archive / name).items() if kinds == set(FILES))

    def live_versions(self, name: str) -> dict[str, int | None]:
        """The version each of live/NAME's four files links to (one directory read: one version)."""
        out: dict[str, int | None] = dict.fromkeys(FILES)
        try:
            dfd = os.open(self.live / name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return out
        try:
            for kind in FILES:
                with contextlib.suppress(OSError):
                    out[kind] = live.linked_version(os.readlink(f"{kind}.pem", dir_fd=dfd))
        finally:
            os.close(dfd)
        return out

    def live_version(self, name: str) -> int | None:
        return live.live_version(self.live, name)

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
        """Write a new version into archive/ and switch live/NAME to it in one step (see `live`).
        Caller holds the lock."""
        self.remove_stale_temps([name])
        version = self.prepare_version(name, privkey, cert, chain, durable)
        self.switch_version(name, version, durable)
        return version

    def remove_stale_temps(self, names: list[str]) -> None:
        """Remove renewal-file temp files that killed writes of `names` left (one directory scan
        for a whole batch; archive/ and live/ are tidied lineage by lineage). Caller holds the lock."""
        wanted = {f"{name}.json" for name in names}
        with contextlib.suppress(FileNotFoundError), os.scandir(self.renewal) as entries:
            for entry in entries:
                if fsutil.temp_for(entry.name) in wanted and not entry.is_dir():
                    os.unlink(entry.path)

    def prepare_version(self, name: str, privkey: bytes, cert: bytes, chain: bytes, durable: bool = True) -> int:
        """The next version of NAME, complete on disk but not live yet (`switch_version` makes it
        live); first, what killed writes of NAME left is removed and the ledger caught up."""
        check_lineage_name(name)
        archive = self.archive / name
        try:  # the common case of a batch: a new lineage (make_private_dir handles the rest)
            os.mkdir(archive, 0o700)
        except OSError:
            fsutil.make_private_dir(archive)
        if not self._live_ready:  # once a process: a batch calls this for every lineage
            fsutil.make_private_dir(self.live)
            self._live_ready = True
        current = live.settle(self.live, name)
        numbers = live.archive_numbers(archive)
        version = max(numbers, default=0) + 1  # never a number a killed run used
        if numbers or current is not None:
            recorded = {row["version"] for row in self.ledger.rows(name, latest_only=False)}
            keep = self._preparing.get(name, set()) | ({current} if current is not None else set())
            live.tidy(self.live, archive, name, keep, max(recorded, default=None))
            if current is not None:
                self.reconcile_ledger(name, recorded)
        files = {"privkey": privkey, "cert": cert, "chain": chain, "fullchain": cert + chain}
        live.prepare(self.live, archive, name, version, files, durable)
        self._preparing.setdefault(name, set()).add(version)
        return version

    def switch_version(self, name: str, version: int, durable: bool = True) -> None:
        live.switch(self.live, name, version, durable)
        self._preparing.get(name, set()).discard(version)

    def discard_version(self, name: str, version: int) -> None:
        """Take back a prepared version that will not go live (nothing, if it went live)."""
        if self.live_version(name) != version:
            live.remove_version(self.live, self.archive / name, name, version)
            with contextlib.suppress(OSError):  # a lineage that this batch would have begun
                (self.archive / name).rmdir()
        self._preparing.get(name, set()).discard(version)

    def reconcile_ledger(self, name: str, recorded: set[int] | None = None) -> None:
        """Record versions on disk that the ledger lacks (a crash between the live/ switch and the
        ledger row), so `list` never shows an older certificate than the one in live/."""
        if recorded is None:
            recorded = {row["version"] for row in self.ledger.rows(name, latest_only=False)}
        preparing = self._preparing.get(name, set())  # not live yet: recorded when switched
        missing = [v for v in self.versions(name) if v not in recorded and v not in preparing]
        if not missing:
            return
        from ntspki import pki
        from ntspki.pki import keys

        source = (self.read_renewal(name) or {}).get("source", "internal")
        for v in missing:
            path = self.archive / name / f"cert{v}.pem"
            cert = pki.load_certs(fsutil.read_bounded(path, fsutil.PEM_LIMIT, "certificate", exit_code=1))[0]
            self.ledger.record(name, v, pki.CertInfo.of(cert), keys.key_type_of(cert.public_key()), source)

    def write_renewal(self, name: str, params: dict, durable: bool = True) -> None:
        data = json.dumps(params, indent=2).encode() + b"\n"
        fsutil.atomic_write(self.renewal / f"{name}.json", data, 0o600, durable=durable)

    def read_renewal(self, name: str) -> dict | None:
        """renewal/NAME.json as a JSON object; None when there is none. Anything else that is there
        (not JSON, not an object, a FIFO, a huge file) is a BadRenewal naming the file."""
        path = self.renewal / f"{name}.json"
        if not os.path.lexists(path):
            return None
        try:
            data = fsutil.read_bounded(path, MAX_RENEWAL_FILE, "renewal file", exit_code=1)
            params = json.loads(data)
        except NtspkiError as e:
            raise BadRenewal(str(e)) from None
        except (ValueError, RecursionError) as e:
            raise BadRenewal(f"{path}: not valid JSON ({e})") from None
        if not isinstance(params, dict):
            raise BadRenewal(f"{path}: not a JSON object but {type(params).__name__}")
        return params

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


class BadRenewal(NtspkiError):
    """renewal/NAME.json is there but unusable: that lineage's error, never the whole run's."""
