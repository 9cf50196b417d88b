"""A lineage's identity: the request that names it (`Request`), what stays the same from one
version to the next (`Identity`, `keep_identity`, held to renewal/NAME.json), and what one issuance
produced (`Issued`). Shared by the site CA's issuer (`issuing.issue`) and the ACME client, which
must not import each other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property

from ntspki.errors import NtspkiError
from ntspki.pki import keys, names
from ntspki.store import Home, check_lineage_name


@dataclass
class Issued:
    name: str
    version: int
    sans: list[str]
    serial: str
    sha256: str
    not_after: str
    key_type: str
    live: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Request:
    name: str
    sans: list[str]
    origin: str = ""  # where it came from, for errors: "fleet.txt line 7"

    @cached_property  # parsed once: a batch validates every line up front, then builds
    def general_names(self):
        return names.unique_sans([self.name, *self.sans])

    @property
    def lineage(self) -> str:
        """The lineage directory name: NAME as a normalised host name (never an address)."""
        if names.is_ip(self.name):
            raise NtspkiError(
                f"the certificate name must be a host name, not an address ({self.name}); put addresses in --san", 2
            )
        return check_lineage_name(names.normalize_dns_name(self.name))


CHANGE_FLAG = "--allow-change"


def check_stored(stored: dict, lineage: str) -> dict:
    """The fields of renewal/NAME.json every source shares, typed as issuance needs them; a wrong
    type is a BadRenewal naming the file and the field, not a crash half-way through."""
    from ntspki.pki import MAX_DAYS
    from ntspki.store import BadRenewal

    where = f"renewal/{lineage}.json"
    sans = stored.get("sans")
    if sans is not None and (not isinstance(sans, list) or not all(isinstance(n, str) for n in sans)):
        raise BadRenewal(f"{where}: sans must be a list of names, not {sans!r:.60}")
    try:
        names.unique_sans(list(sans or []))
    except NtspkiError as e:
        raise BadRenewal(f"{where}: sans: {e}") from None
    key_type = stored.get("key_type")
    if key_type is not None and key_type not in keys.KEY_TYPES:
        raise BadRenewal(f"{where}: unknown key_type {key_type!r:.40}")
    days = stored.get("days")
    if days is not None and (isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS):
        raise BadRenewal(f"{where}: days must be a whole number 1..{MAX_DAYS}, not {days!r:.40}")
    source = stored.get("source", "internal")
    if not isinstance(source, str):
        raise BadRenewal(f"{where}: source must be text, not {source!r:.40}")
    return stored


@dataclass
class Identity:
    """What makes a lineage the same lineage from one version to the next."""

    sans: list[str]  # every name, NAME first
    key_type: str
    days: int | None  # lifetime of internal certificates (ACME: the CA decides)
    source: str  # internal | acme


def keep_identity(
    home: Home,
    req: Request,
    key_type: str | None,
    days: int | None,
    source: str,
    allow_change: bool = False,
    names_given: bool = True,
) -> tuple[Identity, dict | None]:
    """The identity a new version of `req`'s lineage gets, and the stored renewal parameters.

    What the caller leaves out (None, or no names when names_given is False) comes from
    renewal/NAME.json, so re-issuing or renewing never silently drops a name or changes the key
    type, lifetime or source. A different name set, key type or source is refused with what would
    change, unless `allow_change` (the CLI's --allow-change)."""
    lineage = req.lineage
    stored = home.read_renewal(lineage) if (home.live / lineage).exists() else None
    if stored:
        check_stored(stored, lineage)
    if not stored:
        sans = [names.san_text(g) for g in req.general_names]
        return Identity(sans, key_type or keys.DEFAULT_KEY_TYPE, days, source), None
    if not names_given:
        req = Request(req.name, list(stored.get("sans") or []), req.origin)
    sans = [names.san_text(g) for g in req.general_names]
    old_sans = [names.san_text(g) for g in names.unique_sans(list(stored.get("sans") or [lineage]))]
    old_key, old_source = stored.get("key_type") or keys.DEFAULT_KEY_TYPE, stored.get("source", "internal")
    changes = []
    added, removed = [n for n in sans if n not in old_sans], [n for n in old_sans if n not in sans]
    if added or removed:
        changes.append(
            "names "
            + "; ".join(
                part
                for part in (
                    f"added {', '.join(added)}" if added else "",
                    f"removed {', '.join(removed)}" if removed else "",
                )
                if part
            )
        )
    if key_type and key_type != old_key:
        changes.append(f"key type {old_key} -> {key_type}")
    if source != old_source:
        changes.append(f"source {old_source} -> {source}")
    if changes and not allow_change:
        raise NtspkiError(
            f"lineage {lineage} is {', '.join(old_sans)} "
            f"({old_key}, {old_source}); this would change its {'; '.join(changes)}: leave out what should stay "
            f"(its names, key type and source are kept), or confirm with {CHANGE_FLAG}",
            1,
        )
    if days is None and source == old_source:
        days = stored.get("days")
    return Identity(sans, key_type or old_key, days, source), stored
