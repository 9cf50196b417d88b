"""What an operator meets at the command line: read-only commands on a read-only home, errors
that name the operation, the path and the fix, certbot-style listings, "did you mean"."""

from __future__ import annotations

import errno
import shlex
import subprocess
from pathlib import Path

import pytest

from ntspki.errors import describe_os_error
from tests.conftest import NTSPKI, run_cli


@pytest.fixture
def home(tmp_path) -> Path:
    home = tmp_path / "home"
    run_cli("ca", "create", "--no-passphrase", home=home, check=True)
    run_cli("issue", "ntp1", "--san", "192.0.2.1", "--days", "10", home=home, check=True)
    return home


def _read_only(home: Path, *commands: list[str]) -> subprocess.CompletedProcess:
    """Run ntspki commands with `home` mounted read-only (a private mount namespace)."""
    steps = [f"mount --bind {home} {home}", f"mount -o remount,bind,ro {home} {home}"]
    steps += [shlex.join([*NTSPKI, "--home", str(home), *c]) for c in commands]
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-ec", " && ".join(steps)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_list_and_show_work_on_a_read_only_home(home):
    proc = _read_only(home, ["list"], ["show", "ntp1"])
    assert proc.returncode == 0, proc.stderr
    assert "ntp1" in proc.stdout and "readonly" not in proc.stderr
    # Writing there fails in one line naming the operation, the path and the fix.
    proc = _read_only(home, ["issue", "ntp2"])
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert err.startswith("ntspki: error: cannot") and len(err.splitlines()) == 1, err
    assert str(home) in err and "Read-only file system" in err and "remount it read-write" in err, err


def test_text_list_and_show_print_paths_and_days_left_like_certbot(home):
    live = home / "live" / "ntp1"
    text = run_cli("list", home=home, check=True).stdout
    assert f"{live}/fullchain.pem" in text and f"{live}/privkey.pem" in text
    assert "VALID: 9 days" in text or "VALID: 10 days" in text, text
    text = run_cli("show", "ntp1", home=home, check=True).stdout
    assert f"fullchain: {live}/fullchain.pem" in text and f"key file:  {live}/privkey.pem" in text
    assert "VALID: 9 days" in text or "VALID: 10 days" in text, text


def test_mistyped_subcommands_get_a_suggestion():
    for args, hint in (
        (["deplyo"], "Did you mean 'deploy'?"),
        (["acme", "isue"], "Did you mean 'issue'?"),
        (["hook", "instal"], "Did you mean 'install'?"),
    ):
        proc = run_cli(*args)
        assert proc.returncode == 2 and hint in proc.stderr, proc.stderr
    proc = run_cli("frobnicate")
    assert proc.returncode == 2 and "Did you mean" not in proc.stderr


def test_an_os_error_says_operation_path_reason_and_fix(tmp_path):
    try:
        (tmp_path / "missing" / "x").mkdir()
    except OSError as e:
        text = describe_os_error(e)
    assert text.startswith(f"cannot create directory {tmp_path}/missing/x: No such file or directory (")
    e = PermissionError(errno.EACCES, "Permission denied", "/etc/chrony/nts/a.key")
    assert "run it as root" in describe_os_error(e) and "/etc/chrony/nts/a.key" in describe_os_error(e)


def test_the_files_each_server_reads_come_from_its_own_config(tmp_path):
    """deploy's check that the server reads the target's pair: NTPsec's ntp.conf (with
    includefile, options on one `nts` line or several) and ntpd-rs's ntp.toml."""
    from ntspki.servers import services

    extra = tmp_path / "nts.conf"
    extra.write_text("nts key /etc/ntpsec/nts/k.pem   # the key\n")
    conf = tmp_path / "ntp.conf"
    conf.write_text(f"nts enable mintls TLS1.3\nincludefile {extra}\nnts cert /etc/ntpsec/nts/c.pem\n")
    assert services.files_read(services.get("ntpsec"), conf) == [
        (Path("/etc/ntpsec/nts/k.pem"), Path("/etc/ntpsec/nts/c.pem"), f"{extra}:1")
    ]
    toml = tmp_path / "ntp.toml"
    toml.write_text(
        '[[nts-ke-server]]\nlisten = "[::]:4460"\ncertificate-chain-path = "/x/c.pem"\nprivate-key-path = "/x/k.pem"\n'
    )
    assert [(k, c) for k, c, _ in services.files_read(services.get("ntpd-rs"), toml)] == [
        (Path("/x/k.pem"), Path("/x/c.pem"))
    ]
    assert services.files_read(services.get("chrony"), tmp_path / "missing.conf") is None
