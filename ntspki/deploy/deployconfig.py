"""Deploy targets: `HOME/deploy.toml` (or `--config FILE`), or one target from command-line flags.

    [defaults]                    # any target setting, applied to every target
    group = "_chrony"

    [targets.ntpserver]
    source = "ntpserver"          # an ntspki lineage, or a certbot-style live dir (has a "/")
    cert = "/etc/chrony/nts/ntpserver.crt"     # the full chain, leaf first (default shown)
    key = "/etc/chrony/nts/ntpserver.key"
    owner = "root"
    group = "_chrony"             # default: the group of chronyd's user, detected
    key_mode = "0640"
    cert_mode = "0644"
    service = "chrony"            # chrony | ntpsec | ntpd-rs
    server_user = "_chrony"       # who the server reads the files as (default: detected); checked
                                  # before writing (a container's user may differ from the host's)
    restart_command = "docker restart ntp"     # default: systemctl on the unit that exists
    service_conf = "/etc/chrony/chrony.conf"   # read for ntsdumpdir, ntsport and the files it reads:
                                  # deploy refuses a target whose key/cert the server does not read
                                  # there; false: a copy for something else, don't read it
    probe = "127.0.0.1:4460"      # where to check the served certificate; false: don't
    probe_name = "ntpserver"      # name to verify (default: the certificate's first name)
    probe_timeout = 10            # seconds to wait for the server to serve the new certificate
    ca = ["/etc/ntspki/ca/trust.pem"]  # trust for the chain check (default: the site's trust.pem for ntspki
                                  # lineages, the system store for others)
    names = ["ntpserver"]         # names the certificate must cover (default: all it has)

Relative paths are relative to the config file's directory.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ntspki.deploy import checks
from ntspki.errors import NtspkiError
from ntspki.nts import NTSKE_PORT
from ntspki.servers import services
from ntspki.store import access

CONFIG_NAME = "deploy.toml"
MAX_CONFIG = 1 << 20  # a thousand targets fit in a tenth of it
KEYS = {
    "source",
    "cert",
    "key",
    "owner",
    "group",
    "key_mode",
    "cert_mode",
    "service",
    "server_user",
    "restart_command",
    "service_conf",
    "probe",
    "probe_name",
    "probe_timeout",
    "ca",
    "names",
}


@dataclass
class Target:
    name: str
    source: str  # as written: lineage name or directory
    source_dir: Path  # the live directory to read
    lineage: str | None  # the ntspki lineage name, when the source is one
    cert: Path
    key: Path
    owner: str = "root"
    group: str = "root"
    key_mode: int = 0o640
    cert_mode: int = 0o644
    service: services.Service = field(default_factory=lambda: services.get("chrony"))
    server_user: str | None = None
    restart_command: list[str] | None = None
    service_conf: Path | None = None
    probe: str | None = None  # HOST:PORT, None = don't probe
    probe_name: str | None = None
    probe_timeout: float = 10.0
    ca: list[Path] = field(default_factory=list)
    names: list[str] | None = None

    @property
    def uid(self) -> int:
        return access.user_id(self.owner)

    @property
    def gid(self) -> int:
        return access.group_id(self.group)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "source": str(self.source_dir),
            "cert": str(self.cert),
            "key": str(self.key),
            "owner": self.owner,
            "group": self.group,
            "key_mode": f"{self.key_mode:04o}",
            "cert_mode": f"{self.cert_mode:04o}",
            "service": self.service.name,
            "restart_command": self.restart_command,
            "probe": self.probe,
        }


def default_config_path(home) -> Path:
    return Path(home.path) / CONFIG_NAME


def make_target(name: str, settings: dict, home=None, base: Path | None = None) -> Target:
    """A Target from settings (config table or flags), with every default filled in and checked."""
    checks.check_target_name(name)
    where = f"target {name!r}"
    unknown = set(settings) - KEYS
    if unknown:
        raise NtspkiError(
            f"{where}: unknown setting(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(KEYS))})", 2
        )
    base = base or Path.cwd()

    def text(key: str, default=None):
        """A setting that must be text: a number or a list where text belongs names the key."""
        value = settings.get(key, default)
        if value is None:
            return None
        if not isinstance(value, str):
            raise NtspkiError(f"{where}: {key} must be text, not {type(value).__name__} {value!r}", 2)
        if "\0" in value:
            raise NtspkiError(f"{where}: {key} holds a NUL character", 2)
        return value

    def path(value, what) -> Path:
        if not isinstance(value, str) or not value:
            raise NtspkiError(f"{where}: {what} must be a path", 2)
        if "\0" in value:
            raise NtspkiError(f"{where}: {what} holds a NUL character", 2)
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else base / p

    def destination(value, what) -> Path:
        """Where a file will be written: a file name in a directory, not the directory itself."""
        from ntspki.store import fsutil

        p = path(value, what)
        return fsutil.check_destination(
            str(p) + ("/" if value.endswith("/") else ""), f"{where}: {what}", parents_made=True
        )

    service = services.get(text("service", "chrony"))
    source = settings.get("source", name)
    if not isinstance(source, str) or not source or "\0" in source:
        raise NtspkiError(f"{where}: source must be a lineage name or a directory", 2)
    if "/" in source or source.startswith("."):
        source_dir, lineage = path(source, "source"), None
    else:
        if home is None:
            raise NtspkiError(f"{where}: source {source!r} is an ntspki lineage but there is no ntspki home", 2)
        from ntspki.store import check_lineage_name

        lineage = check_lineage_name(source)
        source_dir = home.live / lineage
    default_dir = Path(service.default_dir)
    cert = destination(settings["cert"], "cert") if "cert" in settings else default_dir / f"{name}.crt"
    key = destination(settings["key"], "key") if "key" in settings else default_dir / f"{name}.key"
    if cert == key:
        raise NtspkiError(f"{where}: cert and key must be different files", 2)

    ca = settings.get("ca", [])
    ca = [ca] if isinstance(ca, str) else ca
    if not isinstance(ca, list):
        raise NtspkiError(f"{where}: ca must be a file or a list of files", 2)
    ca_paths = [path(c, "ca") for c in ca]
    for c in ca_paths:
        checks.check_ca_file(c, where)
    if not ca_paths and lineage is not None and (_renewal_source(home, lineage, where)) != "acme":
        ca_paths = [home.trust_path]  # the site CA issued it (an ACME lineage: the system store)

    conf = settings.get("service_conf")
    if conf is False or conf in ("none", "off"):
        service_conf = None  # a copy for another consumer: no server config to hold it to
    elif conf is None or conf is True:
        service_conf = service.conf_file()
    else:
        service_conf = path(conf, "service_conf")
        checks.check_readable(service_conf, f"{where}: service_conf")

    probe = settings.get("probe", True)
    if probe is True:
        port = services.chrony_conf_facts(service_conf)["ntsport"] if service.name == "chrony" else NTSKE_PORT
        probe = f"127.0.0.1:{port}"
    elif probe is False or probe in ("", "none", "off"):
        probe = None
    elif not isinstance(probe, str):
        raise NtspkiError(f"{where}: probe must be HOST:PORT or false, not {probe!r}", 2)
    else:
        checks.check_probe(probe, f"{where}: probe")

    names = settings.get("names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names):
        raise NtspkiError(f"{where}: names must be a non-empty list of host names or addresses", 2)
    from ntspki.pki import names as names_mod

    for n in names or []:
        names_mod.parse_san(n)  # a one-line BadName (exit 2)
    probe_name = text("probe_name")
    if probe_name is not None:
        names_mod.parse_san(probe_name)
    timeout = checks.check_probe_timeout(settings.get("probe_timeout", 10.0), f"{where}: probe_timeout")
    owner, group, server_user = text("owner", "root"), text("group"), text("server_user")
    for setting, value in (("owner", owner), ("group", group), ("server_user", server_user)):
        if value is not None and not value.strip():
            raise NtspkiError(f"{where}: {setting} is empty", 2)
    restart = settings.get("restart_command")
    if isinstance(restart, str) and not restart.strip():
        raise NtspkiError(f"{where}: restart_command is blank (leave it out for the default)", 2)
    if restart == [] or (isinstance(restart, list) and restart and not restart[0]):
        raise NtspkiError(f"{where}: restart_command is an empty command", 2)
    try:
        restart_command = services.parse_command(restart)
    except NtspkiError as e:
        raise NtspkiError(f"{where}: restart_command: {e}", 2)

    target = Target(
        name=name,
        source=source,
        source_dir=source_dir,
        lineage=lineage,
        cert=cert,
        key=key,
        owner=owner or "",
        group=group or service.group(),
        key_mode=checks.parse_mode(settings.get("key_mode", 0o640), f"{where}: key_mode"),
        cert_mode=checks.parse_mode(settings.get("cert_mode", 0o644), f"{where}: cert_mode"),
        service=service,
        server_user=server_user,
        restart_command=restart_command,
        service_conf=service_conf,
        probe=probe,
        probe_name=probe_name,
        probe_timeout=timeout,
        ca=ca_paths,
        names=names,
    )
    if target.key_mode & 0o007:
        raise NtspkiError(
            f"{where}: key_mode {target.key_mode:04o} lets every user read or write the "
            "private key; use 0640 (owner root, group of the server's user)",
            2,
        )
    if target.cert_mode & 0o002:
        raise NtspkiError(f"{where}: cert_mode {target.cert_mode:04o} lets every user replace the certificate", 2)
    for what, mode in (("key_mode", target.key_mode), ("cert_mode", target.cert_mode)):
        if not mode & 0o440:
            raise NtspkiError(f"{where}: {what} {mode:04o} lets neither the owner nor the group read the file", 2)
    # Unknown users and groups fail here, before any write (one resolver: store.access).
    access.user_id(target.owner), access.group_id(target.group)
    if server_user is not None:
        access.Reader.named(server_user)
    return target


def _renewal_source(home, lineage: str, where: str):
    try:
        params = home.read_renewal(lineage) or {}
    except NtspkiError:
        return None  # a broken renewal file is that lineage's error (renew reports it), not the config's
    return params.get("source")


def load(config_path: Path, home=None) -> list[Target]:
    """Every target in the config file, in file order. Raises NtspkiError on any mistake."""
    from ntspki.store import fsutil

    config_path = Path(config_path)
    if not os.path.lexists(config_path):
        raise NtspkiError(f"no deploy config {config_path}", 2)
    text = fsutil.read_bounded(config_path, MAX_CONFIG, "deploy config").decode()
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as e:
        raise NtspkiError(f"{config_path}: not valid TOML ({e})", 2)
    extra = set(data) - {"defaults", "targets"}
    if extra:
        raise NtspkiError(
            f"{config_path}: unknown section(s) {', '.join(sorted(extra))} (use [defaults] and [targets.NAME])", 2
        )
    defaults = data.get("defaults", {})
    targets = data.get("targets", {})
    if not isinstance(defaults, dict) or not isinstance(targets, dict):
        raise NtspkiError(f"{config_path}: [defaults] and [targets.NAME] must be tables", 2)
    out = []
    for name, settings in targets.items():
        try:
            checks.check_target_name(name)
        except NtspkiError as e:
            raise NtspkiError(f"{config_path}: {e}", 2)
        if not isinstance(settings, dict):
            raise NtspkiError(f"{config_path}: targets.{name} must be a table", 2)
        try:
            out.append(make_target(name, {**defaults, **settings}, home, config_path.parent))
        except NtspkiError as e:
            raise NtspkiError(f"{config_path}: {e}", e.exit_code)
    owners: dict[Path, str] = {}
    for t in out:
        for p in (t.cert, t.key):
            if p in owners:
                raise NtspkiError(f"{config_path}: targets {owners[p]!r} and {t.name!r} both write {p}", 2)
            owners[p] = t.name
    return out


def select(targets: list[Target], names: list[str]) -> list[Target]:
    by_name = {t.name: t for t in targets}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise NtspkiError(f"no target named {', '.join(missing)} (configured: {', '.join(by_name) or 'none'})", 2)
    return [by_name[n] for n in names]


def by_source(targets: list[Target], live_dirs: list[Path]) -> list[Target]:
    """The targets whose source is one of `live_dirs` (compared after resolving symlinks)."""
    wanted = {Path(d).resolve() for d in live_dirs}
    return [t for t in targets if t.source_dir.resolve() in wanted]


def advice(home, lineage: str) -> list[dict]:
    """Where `deploy` puts lineage's pair and the server config lines that read it there: one entry
    per configured target whose source is the lineage, else the one-off `deploy --lineage` target.
    `issue` prints this (never the live/ paths, which the server's user cannot read)."""
    targets: list[Target] = []
    config_path = default_config_path(home)
    if config_path.exists():
        try:
            targets = by_source(load(config_path, home), [home.live / lineage])
        except NtspkiError:
            targets = []  # `deploy` reports a broken config; the advice falls back to the one-off
    commands = {t.name: f"ntspki deploy {t.name}" for t in targets}
    if not targets:
        targets = [make_target(lineage, {"source": lineage, "probe": False}, home)]
        commands = {lineage: f"ntspki deploy --lineage {lineage}"}
    return [
        {
            "target": t.name,
            "command": commands[t.name],
            "service": t.service.name,
            "key": str(t.key),
            "cert": str(t.cert),
            "conf_file": str(t.service_conf or t.service.conf_files[0]),
            "conf_lines": services.conf_lines(t.service, t.key, t.cert),
        }
        for t in targets
    ]
