"""How each NTS server picks up a new key and certificate.

    chrony   never re-reads its files: restart (`systemctl restart chrony`). SIGHUP makes it exit.
    ntpsec   re-reads when the cert file changed, on SIGHUP: write key, then cert, then HUP. But
             OpenSSL keeps one certificate per key type: after a HUP with a pair of another key type
             the old certificate is still served (seen with 1.2.2), so a key-type change needs a restart.
    ntpd-rs  reads once at start: restart.

A `Service` says what to do; `action_command` turns that into the argv that does it on this host:
the configured command (any argv, e.g. `docker restart ntp`) or `systemctl` on the unit that exists.
Everything else (writing files, probing, rolling back) is the same for every server.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ntspki.errors import NtspkiError
from ntspki.nts import NTSKE_PORT
from ntspki.store import access


@dataclass(frozen=True)
class Service:
    name: str
    action: str  # "restart" or "reload" (SIGHUP)
    units: tuple[str, ...]  # systemd units, the first that exists is used
    users: tuple[str, ...]  # the unprivileged user the server reads its files as
    key_types: tuple[str, ...]  # key types (ntspki.pki.keys.key_type_of) the server loads
    conf_files: tuple[str, ...] = ()
    default_dir: str = "/etc/chrony/nts"  # where the default destinations go
    reload_keeps_other_key_types: bool = False  # a reload adds a pair of a new key type beside the old

    def user(self) -> str:
        """The first of `users` that exists on this host (`_chrony` on Debian, `chrony` on RHEL);
        root when none does."""
        return next((user for user in self.users if access.user_exists(user)), "root")

    def group(self) -> str:
        """The run user's primary group, so the key can be root:GROUP 0640."""
        return access.Reader.named(self.user()).group

    def conf_file(self) -> Path | None:
        return next((Path(p) for p in self.conf_files if Path(p).exists()), None)


# The key types each server is known to load (chrony: seen with GnuTLS; ntpd-rs: rustls).
_COMMON_KEYS = ("ec-p256", "ec-p384", "ed25519", "rsa-2048", "rsa-3072", "rsa-4096")

SERVICES = {
    # Debian's AppArmor profile and the upstream unit let chronyd read /etc/chrony/**.
    "chrony": Service(
        "chrony",
        "restart",
        ("chrony.service", "chronyd.service"),
        ("_chrony", "chrony"),
        _COMMON_KEYS,
        ("/etc/chrony/chrony.conf", "/etc/chrony.conf"),
        "/etc/chrony/nts",
    ),
    "ntpsec": Service(
        "ntpsec",
        "reload",
        ("ntpsec.service", "ntpd.service"),
        ("ntpsec", "ntp"),
        _COMMON_KEYS,
        ("/etc/ntpsec/ntp.conf", "/etc/ntp.conf"),
        "/etc/ntpsec/nts",
        reload_keeps_other_key_types=True,
    ),
    "ntpd-rs": Service(
        "ntpd-rs",
        "restart",
        ("ntpd-rs.service",),
        ("ntpd-rs",),
        _COMMON_KEYS,
        ("/etc/ntpd-rs/ntp.toml",),
        "/etc/ntpd-rs/nts",
    ),
}


def get(name: str) -> Service:
    try:
        return SERVICES[name]
    except KeyError:
        raise NtspkiError(f"unknown service {name!r} (choose from {', '.join(SERVICES)})", 2)


def needs_restart(service: Service, old_key_type: str | None, new_key_type: str) -> bool:
    """Whether loading a pair of `new_key_type` over one of `old_key_type` takes a restart even
    for a server that reloads (NTPsec would keep serving the old certificate beside the new one)."""
    if service.action == "restart":
        return True
    return service.reload_keeps_other_key_types and old_key_type is not None and old_key_type != new_key_type


def parse_command(value) -> list[str] | None:
    """A command from the config: a list (argv) or a string (split like a shell would, no shell)."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as e:
            raise NtspkiError(f"cannot parse command {value!r}: {e}", 2)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        argv = list(value)
    else:
        raise NtspkiError(f"a command must be a string or a list of strings, not {value!r}", 2)
    return argv or None


def systemd_unit(service: Service) -> str:
    """The first of the service's units that systemd knows (LoadState=loaded)."""
    if shutil.which("systemctl") is None:
        raise NtspkiError(
            f"no systemctl here: set restart_command for the {service.name} target (e.g. `docker restart ntp`)"
        )
    for unit in service.units:
        try:
            out = subprocess.run(
                ["systemctl", "show", "--property=LoadState", "--value", unit],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.SubprocessError) as e:
            raise NtspkiError(f"systemctl failed: {e}")
        if out.returncode == 0 and out.stdout.strip() == "loaded":
            return unit
    raise NtspkiError(
        f"none of the systemd units {', '.join(service.units)} exists: "
        f"set restart_command for the {service.name} target"
    )


def action_command(service: Service, configured: list[str] | None, restart: bool = False) -> list[str]:
    """The argv that makes `service` load its new files; `restart` even when it reloads
    (`needs_restart`). A configured command is used as it is: what it does is the operator's."""
    if configured:
        return configured
    unit = systemd_unit(service)
    if service.action == "reload" and not restart:
        return ["systemctl", "kill", "--signal=HUP", "--kill-who=main", unit]
    return ["systemctl", "restart", unit]


def run_action(argv: list[str], timeout: float = 120.0) -> tuple[bool, str]:
    """Run it; (succeeded, what it printed or why it failed)."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return False, f"{argv[0]}: command not found"
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f} s"
    except OSError as e:
        return False, f"{argv[0]}: {e.strerror or e}"
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        return False, f"exit status {proc.returncode}" + (f": {out[-500:]}" if out else "")
    return True, out[-500:]


# ---- what chrony's configuration says (ntsdumpdir, ntsport) ------------------------------------


def chrony_conf_facts(conf: Path | None) -> dict:
    """{'readable', 'ntsdumpdir', 'ntsport'} from chrony.conf and what it includes."""
    from ntspki.servers import chronyconf

    if conf is None or not Path(conf).is_file():
        return {"readable": False, "ntsdumpdir": None, "ntsport": NTSKE_PORT}
    try:
        parsed = chronyconf.parse(conf)
    except NtspkiError:
        return {"readable": False, "ntsdumpdir": None, "ntsport": NTSKE_PORT}
    return {"readable": True, "ntsdumpdir": parsed.value("ntsdumpdir"), "ntsport": parsed.ntsport()}


def conf_lines(service: Service, key: Path, cert: Path) -> list[str]:
    """The lines of the server's own config that make it read this key and certificate."""
    if service.name == "ntpsec":
        return ["nts enable", f"nts key {key}", f"nts cert {cert}"]
    if service.name == "ntpd-rs":
        return ["[[nts-ke-server]]", f'private-key-path = "{key}"', f'certificate-chain-path = "{cert}"']
    return [f"ntsserverkey {key}", f"ntsservercert {cert}", "ntsdumpdir /var/lib/chrony"]


def files_read(service: Service, conf: Path | None) -> list[tuple[Path, Path, str]] | None:
    """The (key, certificate, where) pairs the server's own config makes it read, in its order;
    None when there is no config to read (the probe after the restart is then the only check)."""
    if conf is None or not Path(conf).is_file():
        return None
    try:
        if service.name == "chrony":
            from ntspki.servers import chronyconf

            parsed = chronyconf.parse(conf)
            keys, certs = parsed.all("ntsserverkey"), parsed.all("ntsservercert")
            # chronyd pairs them by order (unequal counts are fatal to it).
            return [(_abs(k.args[0]), _abs(c.args[0]), k.where) for k, c in zip(keys, certs) if k.args and c.args]
        if service.name == "ntpsec":
            return _ntpsec_files(Path(conf), depth=0)
        if service.name == "ntpd-rs":
            import tomllib

            from ntspki.store import fsutil

            text = fsutil.read_bounded(conf, 4 << 20, "ntpd-rs config").decode()
            servers = tomllib.loads(text).get("nts-ke-server") or []
            return [
                (_abs(s["private-key-path"]), _abs(s["certificate-chain-path"]), f"{conf} [[nts-ke-server]] {i + 1}")
                for i, s in enumerate(servers)
                if isinstance(s, dict) and "private-key-path" in s and "certificate-chain-path" in s
            ]
    except (NtspkiError, OSError, ValueError):
        return None
    return None


def _abs(path: str) -> Path:
    return Path("/") / path  # the servers run from /


def _ntpsec_files(conf: Path, depth: int = 0, found: dict | None = None) -> list[tuple[Path, Path, str]]:
    """`nts key FILE` / `nts cert FILE` (on one `nts` line or several, in included files too);
    the last of each wins, as in ntpd."""
    found = {} if found is None else found
    from ntspki.store import fsutil

    text = fsutil.read_bounded(conf, 4 << 20, "ntp.conf", binary=True).decode(errors="replace")
    for lineno, raw in enumerate(text.splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] == "includefile" and len(words) > 1 and depth < 10:
            _ntpsec_files(Path(words[1]), depth + 1, found)
        elif words[0] == "nts":
            for option, value in zip(words[1:], words[2:]):
                if option in ("key", "cert"):
                    found[option] = (value, f"{conf}:{lineno}")
    if depth or "key" not in found or "cert" not in found:
        return []
    return [(_abs(found["key"][0]), _abs(found["cert"][0]), found["key"][1])]
