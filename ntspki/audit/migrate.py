"""`migrate`: an ntpd or NTPsec configuration (autokey or not) as the chrony configuration with NTS
that does the same job.

Every directive of the input gets a fate, reported with its file:line: translated (to which chrony
lines), obsolete (autokey and symmetric-key material that NTS replaces) or manual (no equivalent,
or a choice only the operator can make). Nothing is dropped silently.

Why one file over ~400 lines: it is one translation table with its reader and writer. Every
directive's fate is decided here, and "nothing is dropped" can only be checked by reading the
parser, the table and the writer side by side; split, each part would need the others' private
shapes (the parsed line, the fate) and the check would span files.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ntspki.errors import NtspkiError
from ntspki.nts import NTSKE_PORT
from ntspki.pki import names
from ntspki.store import fsutil

MAX_CONF_BYTES = 1 << 20
MAX_INCLUDE_DEPTH = 5  # ntpd's own limit
COMMENT = "#"
# Options of server/pool/peer lines that take a value, in ntpd and NTPsec.
VALUE_OPTIONS = {
    "key",
    "version",
    "minpoll",
    "maxpoll",
    "mode",
    "ttl",
    "ca",
    "aead",
    "bias",
    "subtype",
    "maxdelay",
    "port",
}
# Options that carry over to chrony unchanged.
KEPT_FLAGS = {"iburst", "burst", "prefer", "noselect", "xleave"}
KEPT_VALUES = {"minpoll", "maxpoll"}
# The NTP Pool has no NTS; probing it is pointless and `nts` on it would leave the host without time.
NO_NTS_SUFFIXES = ("pool.ntp.org",)
CHRONY_NTS_DIR = "/etc/chrony/nts"
SITE_ROOT_COPY = "/etc/chrony/ntspki-root.pem"
AUTOKEY_DIRECTIVES = {"crypto", "keysdir", "revoke", "automax", "ident"}
SYMMETRIC_KEY_DIRECTIVES = {"keys", "trustedkey", "requestkey", "controlkey"}
# Directives chrony has no use for, with why (everything not here and not translated is "manual").
OBSOLETE_WHY = {
    "crypto": "autokey (RFC 5906) is broken by design and gone from NTPsec; NTS (RFC 8915) replaces it",
    "keysdir": "held autokey keys and certificates; NTS uses the X.509 files ntspki deploys",
    "revoke": "autokey key refresh interval",
    "automax": "autokey session key lifetime",
    "ident": "autokey identity scheme",
    "keys": "symmetric keys (ntp.keys): NTS authenticates without shared secrets; chrony's keyfile has "
    "its own format if some peers must keep a key",
    "trustedkey": "symmetric key IDs for the keys file",
    "requestkey": "ntpdc/ntpq authentication; chronyc uses a local socket",
    "controlkey": "ntpq authentication; chronyc uses a local socket",
}
AUTOKEY_FILE_PREFIX = "ntpkey_"
GROUP_KEY_KINDS = ("iffkey", "gqkey", "mvkey")  # server (trusted host) side of the identity schemes


@dataclass
class Line:
    name: str
    args: list[str]
    file: str
    line: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Fate:
    where: str
    directive: str  # the input line
    fate: str  # translated, obsolete, manual
    chrony: list[str] = field(default_factory=list)
    why: str = ""


@dataclass
class Upstream:
    kind: str  # server, pool, peer
    host: str
    where: str
    nts: bool  # gets `nts` in chrony.conf
    why: str  # why it does or does not
    autokey: bool = False
    probed: bool = False
    line: str = ""


@dataclass
class Migration:
    source: str
    files: list[str] = field(default_factory=list)
    chrony_conf: str = ""
    fates: list[Fate] = field(default_factory=list)
    upstreams: list[Upstream] = field(default_factory=list)
    obsolete_files: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    serves: bool = False
    served_autokey: bool = False
    served_nts: bool = False

    @property
    def manual(self) -> list[Fate]:
        return [f for f in self.fates if f.fate == "manual"]

    def to_dict(self) -> dict:
        return asdict(self)


# ---- reading ntp.conf -------------------------------------------------------------------------------


def _read_text(path: str) -> str:
    """A bounded read of a regular text file (ntp.conf or one it includes)."""
    return fsutil.read_bounded(path, MAX_CONF_BYTES, "ntp.conf").decode()


def read_conf(path: str) -> tuple[list[Line], list[str]]:
    """Every directive of `path` and the files it includes (`includefile`, relative to the including
    file's directory, at most five deep as in ntpd); and the files read."""
    lines: list[Line] = []
    files: list[str] = []
    _read_into(str(path), lines, files, 0)
    return lines, files


def _read_into(path: str, lines: list[Line], files: list[str], depth: int) -> None:
    if depth > MAX_INCLUDE_DEPTH:
        raise NtspkiError(f"{path}: includefile nested more than {MAX_INCLUDE_DEPTH} deep (a loop?)", 2)
    text = _read_text(path)
    files.append(path)
    for number, raw in enumerate(text.splitlines(), 1):
        body = raw.split(COMMENT, 1)[0].strip()
        if not body:
            continue
        name, *args = body.split()
        line = Line(name.lower(), args, path, number, body)
        lines.append(line)
        if line.name == "includefile" and args:
            target = args[0] if os.path.isabs(args[0]) else os.path.join(os.path.dirname(path), args[0])
            _read_into(target, lines, files, depth + 1)


# ---- translating ------------------------------------------------------------------------------------


@dataclass
class _Restrict:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None  # None: default (both families)
    family: int | None  # 4 or 6 for `restrict -4/-6 default`
    serves: bool
    limited: bool
    line: Line


def _parse_restrict(line: Line) -> _Restrict | None:
    args = list(line.args)
    family = None
    if args and args[0] in ("-4", "-6"):
        family = int(args.pop(0)[1])
    if not args:
        return None
    addr, flags = args[0], set(args[1:])
    mask = None
    if "mask" in flags:
        i = args.index("mask")
        mask = args[i + 1] if i + 1 < len(args) else None
        flags.discard("mask")
        flags.discard(mask)
    serves = not flags & {"ignore", "noserve"}
    limited = bool(flags & {"limited", "kod"})
    if addr == "default":
        return _Restrict(None, family, serves, limited, line)
    if addr == "source":
        return None
    try:
        if mask:
            network = ipaddress.ip_network(f"{addr}/{mask}", strict=False)
        else:
            network = ipaddress.ip_network(addr, strict=False)
    except ValueError:
        return None
    return _Restrict(network, family, serves, limited, line)


def _refclock(host: str) -> tuple[int, int] | None:
    """ntpd's 127.127.TYPE.UNIT refclock pseudo-addresses."""
    parts = host.split(".")
    if len(parts) == 4 and parts[:2] == ["127", "127"] and all(p.isdigit() for p in parts[2:]):
        return int(parts[2]), int(parts[3])
    return None


class Translator:
    def __init__(self, lines: list[Line], files: list[str], source: str, hostname: str | None):
        self.lines = lines
        self.m = Migration(source, files)
        self.hostname = hostname or socket.getfqdn()
        self.out: dict[str, list[str]] = {"sources": [], "trust": [], "serve": [], "access": [], "misc": []}
        self.fudge: dict[str, dict[str, str]] = {}
        self.keysdir: str | None = None
        self.crypto_host: str | None = None
        self.nts_server: dict[str, str] = {}  # NTPsec `nts cert/key/ca/cookie ...`
        self.fates: dict[int, Fate] = {}

    def fate(self, line: Line, fate: str, chrony: list[str] | None = None, why: str = "") -> None:
        self.fates[id(line)] = Fate(line.where, line.text, fate, chrony or [], why)

    # -- pass 1: facts that other lines depend on (fudge, keysdir, crypto host, nts enable) --------------
    def collect(self) -> None:
        for line in self.lines:
            if line.name == "fudge" and line.args:
                opts = line.args[1:]
                self.fudge[line.args[0]] = {opts[i]: opts[i + 1] for i in range(0, len(opts) - 1, 2)}
            elif line.name == "keysdir" and line.args:
                self.keysdir = line.args[0]
            elif line.name == "crypto":
                args = line.args
                for i, a in enumerate(args[:-1]):
                    if a == "host":
                        self.crypto_host = args[i + 1]
            elif line.name == "nts" and line.args:
                word = line.args[0]
                if word in ("enable", "disable"):
                    self.nts_server["enable"] = word
                elif len(line.args) >= 2:
                    self.nts_server[word] = line.args[1]

    def run(self, probe_results: dict[str, tuple[bool, str]] | None) -> Migration:
        self.collect()
        restricts: list[_Restrict] = []
        has_crypto = any(line.name == "crypto" for line in self.lines)
        local_clock = False
        for line in self.lines:
            handler = getattr(self, "_" + line.name.replace("-", "_"), None)
            if line.name in ("server", "pool", "peer"):
                local_clock |= self.source(line, probe_results)
            elif line.name == "restrict":
                r = _parse_restrict(line)
                if r is not None:
                    restricts.append(r)
                else:
                    self.fate(
                        line,
                        "manual" if line.args[:1] != ["source"] else "obsolete",
                        why="chrony always answers the servers it polls"
                        if line.args[:1] == ["source"]
                        else "not an address, network or `default`: write allow/deny by hand",
                    )
            elif line.name == "fudge":
                self.fate(line, "translated", why="its settings are part of the refclock's chrony line")
            elif line.name in AUTOKEY_DIRECTIVES or line.name in SYMMETRIC_KEY_DIRECTIVES:
                self.fate(line, "obsolete", why=OBSOLETE_WHY[line.name])
            elif handler is not None:
                handler(line)
            elif line.name == "includefile":
                self.fate(line, "translated", why="its lines are translated in place")
            else:
                self.fate(line, "manual", why="no chrony equivalent known to ntspki: translate it by hand")
        self.access(restricts, local_clock)
        autokey_upstream = any(u.autokey for u in self.m.upstreams)
        self.m.served_nts = self.nts_server.get("enable") == "enable"
        self.m.served_autokey = has_crypto and (self.m.serves or self._group_keys())
        if autokey_upstream:
            self.out["trust"].append(f"ntstrustedcerts {SITE_ROOT_COPY}")
            self.m.notes.append(
                f"the former autokey servers need NTS certificates from your CA; copy its root "
                f"(ntspki's ca/root.pem) to {SITE_ROOT_COPY} on this host"
            )
        if self.m.served_autokey or self.m.served_nts:
            self.serve()
        if has_crypto or self.keysdir:
            self.autokey_files()
        if not any(u.nts for u in self.m.upstreams):
            self.m.notes.append(
                "no NTS source: this host gets unauthenticated time; add `server NAME iburst nts` lines for NTS servers"
            )
        if "ca" in self.nts_server:
            self.out["trust"].append(f"ntstrustedcerts {self.nts_server['ca']}")
        # Every input line has exactly one fate, reported in input order.
        self.m.fates = [
            self.fates.get(id(line)) or Fate(line.where, line.text, "manual", [], "not understood")
            for line in self.lines
        ]
        self.m.chrony_conf = self.render()
        return self.m

    # -- sources ---------------------------------------------------------------------------------------
    def source(self, line: Line, probe_results) -> bool:
        """Translate a server/pool/peer line; True if it was ntpd's local clock (the host serves)."""
        if not line.args:
            self.fate(line, "manual", why="no address")
            return False
        args = [a for a in line.args if a not in ("-4", "-6")]
        if not args:
            self.fate(line, "manual", why="no address")
            return False
        host, opts = args[0], args[1:]
        ntsport = None
        if host.count(":") == 1 and host.rsplit(":", 1)[1].isdigit():  # NTPsec's HOST:PORT for NTS-KE
            host, ntsport = host.rsplit(":", 1)
        flags, values, unknown = set(), {}, []
        i = 0
        while i < len(opts):
            o = opts[i].lower()
            if o in VALUE_OPTIONS and i + 1 < len(opts):
                values[o] = opts[i + 1]
                i += 2
                continue
            if o in VALUE_OPTIONS:
                unknown.append(o)
            else:
                flags.add(o)
            i += 1
        ref = _refclock(host)
        if ref is not None:
            return self.refclock(line, ref)
        kept = ["iburst", *sorted(flags & KEPT_FLAGS - {"iburst"})]
        kept += [f"{k} {values[k]}" for k in sorted(values) if k in KEPT_VALUES]
        if "true" in flags:
            kept.append("trust")
        dropped = sorted(flags - KEPT_FLAGS - {"true", "autokey", "nts", "noval", "preempt"}) + unknown
        dropped += [f"{k} {values[k]}" for k in sorted(values) if k not in KEPT_VALUES and k not in ("key", "ca")]
        autokey = "autokey" in flags
        why_notes = []
        if "key" in values:
            why_notes.append(f"symmetric key {values['key']} dropped (NTS authenticates instead)")
        if dropped:
            why_notes.append("options with no chrony equivalent dropped: " + ", ".join(dropped))
        certset = ""
        if "ca" in values:
            self.out["trust"].append(f"ntstrustedcerts 1 {values['ca']}")
            certset = " certset 1"
            why_notes.append(f"its CA {values['ca']} is certificate set 1")
        if "noval" in flags:
            why_notes.append(
                "NTPsec's noval (no certificate validation) has no chrony equivalent: the certificate is validated"
            )
        name = host.rstrip(".").lower()
        kind = "server" if line.name == "server" else line.name
        if kind == "peer":
            nts, why = (
                False,
                ("NTS has no symmetric mode: make each side a `server ... nts` of the other, or keep a symmetric key"),
            )
        elif any(name == s or name.endswith("." + s) for s in NO_NTS_SUFFIXES):
            nts, why = False, "the NTP Pool offers no NTS: add NTS servers (e.g. from your CA) alongside"
        elif probe_results is not None:
            ok, detail = probe_results.get(host, (False, "not probed"))
            nts, why = ok, ("answers NTS-KE: " + detail if ok else "no NTS: " + detail)
        elif autokey:
            nts, why = True, "was autokey: NTS once it serves a certificate from your CA (ntspki issue/deploy)"
        elif "nts" in flags:
            nts, why = True, "already NTS in NTPsec"
        else:
            nts, why = True, "not probed: run `ntspki migrate --probe` to keep `nts` only where NTS-KE answers"
        nts_opts = " nts" + certset + (f" ntsport {ntsport}" if ntsport and int(ntsport) != NTSKE_PORT else "")
        text = f"{kind} {host} {' '.join(kept)}{nts_opts if nts else ''}"
        self.out["sources"].append(text)
        self.m.upstreams.append(Upstream(kind, host, line.where, nts, why, autokey, probe_results is not None, text))
        self.fate(line, "translated", [text], "; ".join([why, *why_notes]))
        return False

    def refclock(self, line: Line, ref: tuple[int, int]) -> bool:
        kind, unit = ref
        fudge = self.fudge.get(line.args[0], {})
        if kind == 1:  # LOCAL: serve the local clock (orphan-like)
            stratum = fudge.get("stratum", "10")
            text = f"local stratum {stratum}"
            self.out["serve"].append(text)
            self.fate(line, "translated", [text], "ntpd's local clock driver")
            return True
        if kind == 28:  # SHM (gpsd)
            text = f"refclock SHM {unit}" + (f" refid {fudge['refid']}" if "refid" in fudge else "")
            self.out["sources"].append(text)
            self.fate(line, "translated", [text], "shared memory refclock (gpsd)")
            return False
        self.fate(line, "manual", why=f"refclock type {kind}: write a chrony `refclock` line by hand")
        return False

    # -- access: restrict -> allow/deny -----------------------------------------------------------------
    def access(self, restricts: list[_Restrict], local_clock: bool) -> None:
        defaults = [r for r in restricts if r.network is None]
        default_serves = all(r.serves for r in defaults) if defaults else True
        limited = any(r.limited for r in restricts if r.serves)
        out = []
        explicit = False
        for r in restricts:
            if r.network is None:
                continue
            loopback = r.network.network_address.is_loopback
            if r.serves and not default_serves and not loopback:
                out.append(f"allow {r.network.with_prefixlen}")
                explicit = True
                self.fate(r.line, "translated", [out[-1]])
            elif not r.serves and default_serves:
                out.append(f"deny {r.network.with_prefixlen}")
                self.fate(r.line, "translated", [out[-1]])
            else:
                self.fate(r.line, "translated", [], "already covered by the default")
        # The host served others on purpose if it allowed networks explicitly or served a clock of its own.
        self.m.serves = (
            self.m.serves
            or explicit
            or local_clock
            or self.nts_server.get("enable") == "enable"
            or (default_serves and any(line.name in ("broadcast", "manycastserver") for line in self.lines))
        )
        for r in defaults:
            if r.serves and (self.m.serves or explicit):
                text = "allow all" if r.family is None else ("allow 0.0.0.0/0" if r.family == 4 else "allow ::/0")
                out.insert(0, text)
                self.fate(r.line, "translated", [text])
            elif r.serves:
                self.fate(
                    r.line,
                    "manual",
                    ["# allow all"],
                    "ntpd answered NTP from every address; chrony answers no one unless allowed. This "
                    "host looks like a client only, so `allow all` is left commented out",
                )
                out.insert(0, "# allow all    # ntpd answered everyone: uncomment to keep serving")
            else:
                self.fate(r.line, "translated", [], "chrony answers no one unless allowed")
        if not defaults and self.m.serves:
            out.insert(0, "allow all")
        if limited and any(not o.startswith("#") for o in out):
            out.append("ratelimit")
        self.out["access"] += out

    # -- serving NTS --------------------------------------------------------------------------------------
    def serve(self) -> None:
        name = self._server_name()
        sans = self._extra_sans(name)
        key, crt = f"{CHRONY_NTS_DIR}/{name}.key", f"{CHRONY_NTS_DIR}/{name}.crt"
        self.out["serve"] += [f"ntsserverkey {key}", f"ntsservercert {crt}", "ntsdumpdir /var/lib/chrony"]
        issue = "ntspki issue " + name + "".join(f" --san {s}" for s in sans)
        self.m.commands += [issue, f"ntspki deploy --lineage {name}"]
        was = "autokey" if self.m.served_autokey else "NTS (NTPsec)"
        self.m.notes.append(
            f"this host served {was}: it serves NTS with a certificate for {name} "
            f"({', '.join([name, *sans])}) once the commands below have run"
        )

    def _server_name(self) -> str:
        for candidate in (self.crypto_host, *self._cert_names()[:1], self.hostname, *self._autokey_hosts()):
            if candidate:
                try:
                    return names.normalize_dns_name(candidate)
                except NtspkiError:
                    continue
        return "ntpserver"

    def _cert_names(self) -> list[str]:
        """The names in NTPsec's current NTS certificate, when it can be read."""
        path = self.nts_server.get("cert")
        if not path:
            return []
        try:
            from cryptography import x509

            from ntspki.pki import san_strings

            cert = x509.load_pem_x509_certificates(fsutil.read_bounded(path, fsutil.PEM_LIMIT, "certificate"))[0]
            return san_strings(cert)
        except Exception:
            return []

    def _extra_sans(self, name: str) -> list[str]:
        out: list[str] = []
        for s in [*self._autokey_hosts(), *self._cert_names(), self.hostname]:
            s = s.rstrip(".").lower()
            if s and s != name and s not in out and s != "localhost":
                out.append(s)
        return out

    # -- autokey leftovers -------------------------------------------------------------------------------
    def _autokey_paths(self) -> list[str]:
        d = self.keysdir or "/etc/ntp"
        try:
            return sorted(os.path.join(d, n) for n in os.listdir(d) if n.startswith(AUTOKEY_FILE_PREFIX))
        except OSError:
            return []

    def _autokey_hosts(self) -> list[str]:
        """Host names from autokey's `ntpkey_host_NAME` links (ntp-keygen's naming)."""
        prefix = AUTOKEY_FILE_PREFIX + "host_"
        return [
            os.path.basename(p)[len(prefix) :] for p in self._autokey_paths() if os.path.basename(p).startswith(prefix)
        ]

    def _group_keys(self) -> bool:
        return any(any(f"_{k}_" in os.path.basename(p) for k in GROUP_KEY_KINDS) for p in self._autokey_paths())

    def autokey_files(self) -> None:
        found = self._autokey_paths()
        self.m.obsolete_files = found
        d = self.keysdir or "/etc/ntp"
        if found:
            self.m.notes.append(
                f"autokey material now obsolete ({len(found)} file(s) in {d}): remove it once "
                "chrony runs with NTS; the `crypto pw` password only protected these files"
            )
        else:
            self.m.notes.append(f"no autokey files found in {d}")

    # -- directives with a direct translation ----------------------------------------------------------
    def _driftfile(self, line: Line) -> None:
        self.out["misc"].append("driftfile /var/lib/chrony/chrony.drift")
        self.fate(line, "translated", [self.out["misc"][-1]], "ntpd's drift file format differs: chrony starts its own")

    def _leapfile(self, line: Line) -> None:
        self.out["misc"].append("leapsectz right/UTC")
        self.fate(line, "translated", [self.out["misc"][-1]], "chrony reads leap seconds from the tz database")

    def _logfile(self, line: Line) -> None:
        self.out["misc"].append("logdir /var/log/chrony")
        self.fate(line, "translated", [self.out["misc"][-1]], "chronyd logs to syslog; logdir is for its statistics")

    _statsdir = _logfile

    def _statistics(self, line: Line) -> None:
        self.out["misc"] += ["logdir /var/log/chrony", "log measurements statistics tracking"]
        self.fate(line, "translated", self.out["misc"][-2:], "chrony's own statistics logs")

    def _filegen(self, line: Line) -> None:
        self.fate(line, "obsolete", why="chrony writes one file per log in logdir: rotate them with logrotate")

    def _tinker(self, line: Line) -> None:
        if line.args[:1] == ["panic"]:
            self.fate(
                line,
                "translated",
                ["makestep 1 3"],
                "chrony steps the clock on large offsets at start (makestep) instead of ntpd's panic threshold",
            )
        else:
            self.fate(line, "manual", why="ntpd loop tuning with no chrony equivalent")

    def _disable(self, line: Line) -> None:
        if set(line.args) <= {"monitor", "stats", "kernel"}:
            self.fate(line, "obsolete", why="ntpd internals (monitor, stats, kernel discipline) chrony does not have")
        else:
            self.fate(line, "manual", why="ntpd feature switch with no chrony equivalent")

    _enable = _disable

    def _tos(self, line: Line) -> None:
        args = line.args
        made, skipped = [], []
        for i in range(0, len(args) - 1, 2):
            k, v = args[i], args[i + 1]
            if k == "minsane":
                made.append(f"minsources {v}")
            elif k == "orphan":
                made.append(f"local stratum {v} orphan")
                self.m.serves = True
            else:
                skipped.append(f"{k} {v}")
        self.out["misc"] += [m for m in made if m.startswith("minsources")]
        self.out["serve"] += [m for m in made if m.startswith("local")]
        self.fate(
            line,
            "translated" if made else "manual",
            made,
            ("no chrony equivalent: " + ", ".join(skipped)) if skipped else "",
        )

    def _nts(self, line: Line) -> None:
        word = line.args[0] if line.args else ""
        if word in ("enable", "cert", "key", "cookie"):
            self.fate(line, "translated", [], "NTPsec NTS server: becomes ntsserverkey/ntsservercert/ntsdumpdir")
        elif word == "ca":
            self.fate(line, "translated", [f"ntstrustedcerts {line.args[1]}"] if len(line.args) > 1 else [])
        else:
            self.fate(line, "manual", why="NTPsec NTS tuning with no chrony equivalent")

    # -- output -----------------------------------------------------------------------------------------
    def render(self) -> str:
        head = [
            f"# chrony.conf made by `ntspki migrate` from {self.m.source}",
            "# Review it, then install it as /etc/chrony/chrony.conf (Debian) or /etc/chrony.conf.",
        ]
        body: list[str] = []
        for section, title in (
            ("sources", "time sources"),
            ("trust", "who NTS sources must be certified by"),
            ("serve", "serving time"),
            ("access", "who may ask"),
            ("misc", "other"),
        ):
            lines = list(dict.fromkeys(self.out[section]))
            if lines:
                body += ["", f"# {title}"] + lines
        manual = [f for f in self.m.fates if f.fate == "manual"]
        if manual:
            body += ["", "# Not translated (see `ntspki migrate` output):"]
            body += [f"#   {f.where}: {f.directive}" for f in manual]
        body += ["", "makestep 1 3", "rtcsync"]
        return "\n".join(head + body) + "\n"


def migrate(
    path: str, *, probe: bool = False, ca_files=(), timeout: float = 5.0, hostname: str | None = None
) -> Migration:
    lines, files = read_conf(path)
    results = None
    if probe:
        results = probe_upstreams(lines, ca_files, timeout)
    return Translator(lines, files, str(path), hostname).run(results)


def probe_upstreams(lines: list[Line], ca_files, timeout: float) -> dict[str, tuple[bool, str]]:
    """host -> (NTS-KE and an authenticated exchange worked, one line why) for each server/pool host."""
    from concurrent.futures import ThreadPoolExecutor

    from ntspki.nts import probe as probe_mod

    hosts = []
    for line in lines:
        if line.name in ("server", "pool") and line.args and _refclock(line.args[0]) is None:
            host = line.args[0]
            if not any(host.rstrip(".").lower().endswith(s) for s in NO_NTS_SUFFIXES) and host not in hosts:
                hosts.append(host)
    trust = probe_mod.trust_store(ca_files, system=True)

    def one(host: str) -> tuple[bool, str]:
        target = f"[{host}]" if ":" in host else host
        try:
            r = probe_mod.probe(target, timeout=timeout, trust=trust, default_port=NTSKE_PORT)
        except NtspkiError as e:
            return False, str(e)
        return (True, f"stratum {r.stratum}") if r.ok else (False, r.error or "failed")

    with ThreadPoolExecutor(max_workers=min(16, len(hosts) or 1)) as pool:
        return dict(zip(hosts, pool.map(one, hosts)))


def write_out(m: Migration, out_dir: str) -> list[Path]:
    """DIR/chrony.conf and, when certificates are needed, DIR/ntspki-commands.sh (atomically)."""
    from ntspki.store import fsutil

    d = Path(out_dir)
    if not d.is_dir():
        raise NtspkiError(f"--out {out_dir}: no such directory", 2)
    written = [d / "chrony.conf"]
    fsutil.atomic_write(written[0], m.chrony_conf.encode(), 0o644)
    if m.commands:
        script = "#!/bin/sh\n# Certificates for the NTS server this host becomes (made by ntspki migrate).\nset -e\n"
        script += "".join(c + "\n" for c in m.commands)
        written.append(d / "ntspki-commands.sh")
        fsutil.atomic_write(written[1], script.encode(), 0o755)
    return written
