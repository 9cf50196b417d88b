"""`ntspki ca create|intermediate`, `issue`, `list`, `show` end to end through the real CLI."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ntspki import pki
from ntspki.pki import keys, verify
from ntspki.store import FILES, Home
from tests.conftest import NTSPKI, run_cli

PASSPHRASE = "correct horse battery staple"
NO_PASSPHRASE_ENV = {k: v for k, v in os.environ.items() if k != "NTSPKI_PASSPHRASE"}


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """A user error: non-zero exit, exactly one line on stderr, no traceback."""
    err = proc.stderr.strip()
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(err.splitlines()) == 1, proc.stderr
    assert err.startswith("ntspki: error: "), err
    for needle in needles:
        assert needle in err, err
    return err


def ca_create(home: Path, *args, env=None) -> subprocess.CompletedProcess:
    return run_cli("ca", "create", *args, home=home, env=env, check=True)


def load_pem_certs(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def home(tmp_path) -> Path:
    """A home with a CA whose root key is not encrypted (most tests are about issuing)."""
    h = tmp_path / "home"
    ca_create(h, "--no-passphrase")
    return h


# ---- ca create --------------------------------------------------------------------------------------


def _root_key_is_encrypted(home: Path, passphrase: str) -> None:
    pem = (home / "ca/private/root.key").read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(pem, None)
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(pem, b"not the passphrase")
    root_key = serialization.load_pem_private_key(pem, passphrase.encode())
    root = x509.load_pem_x509_certificate((home / "ca/root.pem").read_bytes())
    assert keys.key_matches_cert(root_key, root)


def test_ca_create_with_passphrase_file_then_intermediate(tmp_path):
    home = tmp_path / "home"
    pass_file = tmp_path / "pass"
    pass_file.write_text(PASSPHRASE + "\n")  # the newline is not part of the passphrase
    out = json.loads(ca_create(home, "--passphrase-file", pass_file, "--json", env=NO_PASSPHRASE_ENV).stdout)
    assert out["root_encrypted"] is True
    _root_key_is_encrypted(home, PASSPHRASE)
    # The intermediate issues without the root passphrase: its key is the only one `issue` needs.
    assert (home / "ca/private/intermediate.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert mode(home / "ca/private") == 0o700
    assert mode(home / "ca/private/root.key") == mode(home / "ca/private/intermediate.key") == 0o600
    run_cli("issue", "ntpserver", home=home, check=True)

    old_inter = (home / "ca/intermediate.pem").read_bytes()
    run_cli("ca", "intermediate", "--passphrase-file", pass_file, home=home, env=NO_PASSPHRASE_ENV, check=True)
    new_inter = (home / "ca/intermediate.pem").read_bytes()
    assert new_inter != old_inter
    run_cli("issue", "ntpserver", home=home, check=True)
    fullchain = load_pem_certs(home / "live/ntpserver/fullchain.pem")
    assert pki.cert_pem(fullchain[1]) == new_inter
    verify.verify_chain(load_pem_certs(home / "ca/root.pem"), fullchain)


def test_ca_create_with_passphrase_env_and_wrong_passphrase(tmp_path):
    home = tmp_path / "home"
    ca_create(home, env={"NTSPKI_PASSPHRASE": PASSPHRASE})
    _root_key_is_encrypted(home, PASSPHRASE)
    inter = (home / "ca/intermediate.pem").read_bytes()

    wrong = run_cli("ca", "intermediate", home=home, env={"NTSPKI_PASSPHRASE": "wrong"})
    one_line_error(wrong, "wrong passphrase")
    wrong_file = tmp_path / "wrong"
    wrong_file.write_text("also wrong\n")
    one_line_error(
        run_cli("ca", "intermediate", "--passphrase-file", wrong_file, home=home, env=NO_PASSPHRASE_ENV),
        "wrong passphrase",
    )
    none = run_cli("ca", "intermediate", home=home, env=NO_PASSPHRASE_ENV, input="")
    one_line_error(none, "passphrase")
    assert (home / "ca/intermediate.pem").read_bytes() == inter  # nothing changed
    assert not list((home / "ca").glob("*.old"))


def test_ca_create_no_passphrase(tmp_path):
    home = tmp_path / "home"
    proc = ca_create(home, "--no-passphrase")
    assert "NOT encrypted" in proc.stdout
    key = serialization.load_pem_private_key((home / "ca/private/root.key").read_bytes(), None)
    assert keys.key_matches_cert(key, x509.load_pem_x509_certificate((home / "ca/root.pem").read_bytes()))


def test_ca_create_without_passphrase_on_non_tty_is_a_clear_error(tmp_path):
    home = tmp_path / "home"
    proc = run_cli("ca", "create", home=home, env=NO_PASSPHRASE_ENV, input="")
    one_line_error(proc, "--passphrase-file", "NTSPKI_PASSPHRASE", "--no-passphrase")
    assert not (home / "ca/root.pem").exists()
    assert not (home / "ca/private/root.key").exists()


def test_duplicate_ca_is_refused_and_force_keeps_the_old_one(home):
    root, root_key = (home / "ca/root.pem").read_bytes(), (home / "ca/private/root.key").read_bytes()
    one_line_error(run_cli("ca", "create", "--no-passphrase", home=home), "already exists", "--force")
    assert (home / "ca/root.pem").read_bytes() == root
    assert (home / "ca/private/root.key").read_bytes() == root_key

    ca_create(home, "--no-passphrase", "--force")
    assert (home / "ca/root.pem").read_bytes() != root
    [aside] = [p for p in home.iterdir() if p.name.startswith("ca.old")]
    assert (aside / "root.pem").read_bytes() == root
    assert (aside / "private/root.key").read_bytes() == root_key
    assert mode(aside / "private") == 0o700 and mode(aside / "private/root.key") == 0o600


@pytest.mark.parametrize("key_type", ["ec-p256", "ed25519"])  # Ed25519 chains are checked by ntspki's own code
def test_name_constraints_reject_an_outside_name(tmp_path, key_type):
    home = tmp_path / "home"
    ca_create(
        home, "--no-passphrase", "--key-type", key_type, "--permit-dns", "example.net", "--permit-ip", "127.0.0.0/8"
    )
    run_cli("issue", "ntp.example.net", "--san", "127.0.0.1", home=home, check=True)
    one_line_error(run_cli("issue", "ntp.example.org", home=home), "ntp.example.org")
    one_line_error(run_cli("issue", "ntp2.example.net", "--san", "time.example.org", home=home), "does not verify")
    one_line_error(run_cli("issue", "ntp3.example.net", "--san", "192.0.2.1", home=home), "does not verify")
    # the lineage and its one version directory, nothing of the refused names
    assert sorted(p.name for p in (home / "live").iterdir()) == [".ntp.example.net.v1", "ntp.example.net"]
    assert sorted(p.name for p in (home / "archive").iterdir()) == ["ntp.example.net"]
    rows = json.loads(run_cli("list", "--json", home=home, check=True).stdout)
    assert [r["name"] for r in rows] == ["ntp.example.net"]


# ---- issue: layout, contents, modes ------------------------------------------------------------------


def test_issue_layout_contents_and_modes(home):
    proc = run_cli(
        "issue",
        "NTPServer",
        "--san",
        "ntpserver-ipv6",
        "--san",
        "127.0.0.1",
        "--san",
        "::1",
        "--json",
        home=home,
        check=True,
    )
    result = json.loads(proc.stdout)
    assert result["name"] == "ntpserver" and result["version"] == 1
    live, archive = home / "live/ntpserver", home / "archive/ntpserver"
    for kind in FILES:
        link = live / f"{kind}.pem"
        assert link.is_symlink()
        assert os.readlink(link) == f"../../archive/ntpserver/{kind}1.pem"  # relative: the home can move
        assert link.resolve() == (archive / f"{kind}1.pem").resolve()

    cert = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
    chain = load_pem_certs(live / "chain.pem")
    fullchain = load_pem_certs(live / "fullchain.pem")
    root = x509.load_pem_x509_certificate((home / "ca/root.pem").read_bytes())
    intermediate = x509.load_pem_x509_certificate((home / "ca/intermediate.pem").read_bytes())
    assert (live / "fullchain.pem").read_bytes() == (live / "cert.pem").read_bytes() + (live / "chain.pem").read_bytes()
    assert fullchain == [cert, intermediate] and chain == [intermediate]
    assert root not in fullchain  # never the root: clients must anchor on their own copy

    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["ntpserver", "ntpserver-ipv6"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ntpserver"
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH]
    )
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.serial_number > 0
    assert 89 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 90
    key = serialization.load_pem_private_key((live / "privkey.pem").read_bytes(), None)
    assert keys.key_matches_cert(key, cert) and keys.key_type_of(key) == "ec-p256"
    verify.verify_chain([root], fullchain)

    assert mode(archive / "privkey1.pem") == 0o600
    for kind in ("cert", "chain", "fullchain"):
        assert mode(archive / f"{kind}1.pem") == 0o644
    # live/NAME is one relative link to a complete version directory: a switch is one rename
    assert os.readlink(live) == ".ntpserver.v1" and sorted(os.listdir(live)) == sorted(f"{k}.pem" for k in FILES)
    for d in (home / "live", home / "archive", live.resolve(), archive, home / "ca/private", home / "renewal"):
        assert mode(d) == 0o700, d
    assert not [p for p in archive.iterdir() if p.name.startswith(".")]  # no temp files left
    assert sorted(os.listdir(home / "live")) == [".ntpserver.v1", "ntpserver"]


def test_reissue_makes_version_2_and_keeps_history(home):
    run_cli("issue", "ntpserver", "--san", "127.0.0.1", home=home, check=True)
    v1 = {kind: (home / f"archive/ntpserver/{kind}1.pem").read_bytes() for kind in FILES}
    out = json.loads(
        run_cli(
            "issue",
            "ntpserver",
            "--san",
            "127.0.0.1",
            "--san",
            "::1",
            "--days",
            "30",
            "--key-type",
            "ed25519",
            "--allow-change",  # a new name and key type: refused without it (test_lineage_identity)
            "--json",
            home=home,
            check=True,
        ).stdout
    )
    assert out["version"] == 2
    for kind in FILES:
        assert os.readlink(home / f"live/ntpserver/{kind}.pem") == f"../../archive/ntpserver/{kind}2.pem"
        assert (home / f"archive/ntpserver/{kind}1.pem").read_bytes() == v1[kind]  # history untouched
    assert v1["privkey"] != (home / "live/ntpserver/privkey.pem").read_bytes()  # a new key each time
    show = json.loads(run_cli("show", "ntpserver", "--json", home=home, check=True).stdout)
    assert show["version"] == 2 and show["versions"] == [1, 2]
    assert show["sans"] == ["ntpserver", "127.0.0.1", "::1"] and show["key_type"] == "ed25519"
    rows = json.loads(run_cli("list", "--json", home=home, check=True).stdout)
    assert [(r["name"], r["version"]) for r in rows] == [("ntpserver", 2)]


def test_wildcard_certificate(home):
    run_cli("issue", "*.pool.example.net", "--san", "pool.example.net", home=home, check=True)
    run_cli("issue", "ntp.example.net", "--san", "*.ntp.example.net", home=home, check=True)
    cert = x509.load_pem_x509_certificate((home / "live/*.pool.example.net/cert.pem").read_bytes())
    assert pki.san_strings(cert) == ["*.pool.example.net", "pool.example.net"]
    root = load_pem_certs(home / "ca/root.pem")
    chain = load_pem_certs(home / "live/*.pool.example.net/fullchain.pem")
    verify.verify_chain(root, chain, [x509.DNSName("a.pool.example.net")])
    with pytest.raises(pki.NtspkiError):
        verify.verify_chain(root, chain, [x509.DNSName("a.b.pool.example.net")])  # one label only


def test_list_and_show(home):
    run_cli("issue", "ntp1.example.net", "--san", "192.0.2.1", "--days", "10", home=home, check=True)
    run_cli("issue", "ntp2.example.net", "--key-type", "rsa-2048", home=home, check=True)

    table = run_cli("list", home=home, check=True).stdout
    assert re.search(
        r"^ntp1\.example\.net\s+1\s+\S+\s+(9|10)\s+ec-p256\s+internal\s+ntp1\.example\.net 192\.0\.2\.1$", table, re.M
    ), table
    assert re.search(r"^ntp2\.example\.net\s+1\s.*rsa-2048", table, re.M), table

    rows = json.loads(run_cli("list", "--json", home=home, check=True).stdout)
    assert [r["name"] for r in rows] == ["ntp1.example.net", "ntp2.example.net"]
    leaf = x509.load_pem_x509_certificate((home / "live/ntp1.example.net/cert.pem").read_bytes())
    assert rows[0]["sha256"] == pki.fingerprint(leaf)
    assert rows[0]["serial"] == format(leaf.serial_number, "x")
    assert rows[0]["sans"] == ["ntp1.example.net", "192.0.2.1"]
    assert rows[0]["not_after"] == leaf.not_valid_after_utc.isoformat()

    expiring = json.loads(run_cli("list", "--expiring", "30", "--json", home=home, check=True).stdout)
    assert [r["name"] for r in expiring] == ["ntp1.example.net"]
    assert "no certificates expiring within 5 days" in run_cli("list", "--expiring", "5", home=home, check=True).stdout

    text = run_cli("show", "ntp2.example.net", home=home, check=True).stdout
    assert "rsa-2048, matches the certificate" in text and "verifies against" in text
    info = json.loads(run_cli("show", "ntp1.example.net", "--json", home=home, check=True).stdout)
    assert info["chain_ok"] is True and info["key_matches"] is True
    assert info["sans"] == ["ntp1.example.net", "192.0.2.1"] and info["sha256"] == pki.fingerprint(leaf)
    one_line_error(run_cli("show", "ntp9.example.net", home=home), "ntp9.example.net")


def test_show_reports_a_broken_chain(home, tmp_path):
    run_cli("issue", "ntpserver", home=home, check=True)
    other = tmp_path / "other"
    ca_create(other, "--no-passphrase")
    for trusted in ("root.pem", "trust.pem"):  # the site's root replaced, in the clients' bundle too
        (home / "ca" / trusted).write_bytes((other / "ca/root.pem").read_bytes())
    proc = run_cli("show", "ntpserver", "--json", home=home)
    assert proc.returncode == 1
    info = json.loads(proc.stdout)
    assert info["chain_ok"] is False and "does not verify" in info["chain_error"]


# ---- batches ---------------------------------------------------------------------------------------------


def test_batch_issues_a_fleet(home, tmp_path):
    batch = tmp_path / "fleet.txt"
    batch.write_text(
        "# the fleet\n\nntp1.example.net ntp1-ipv6.example.net 192.0.2.1\n"
        "ntp2.example.net   2001:db8::2  # trailing comment\nntp1.example.net 192.0.2.1\n"
    )
    proc = run_cli("issue", "--from", batch, "--json", home=home, check=True)
    out = json.loads(proc.stdout)
    assert [(r["name"], r["version"]) for r in out] == [
        ("ntp1.example.net", 1),
        ("ntp2.example.net", 1),
        ("ntp1.example.net", 2),
    ]
    assert out[1]["sans"] == ["ntp2.example.net", "2001:db8::2"]
    assert proc.stderr == ""  # not a terminal: no progress bar
    rows = json.loads(run_cli("list", "--json", home=home, check=True).stdout)
    assert [(r["name"], r["version"]) for r in rows] == [("ntp1.example.net", 2), ("ntp2.example.net", 1)]
    root = load_pem_certs(home / "ca/root.pem")
    for name in ("ntp1.example.net", "ntp2.example.net"):
        verify.verify_chain(root, load_pem_certs(home / "live" / name / "fullchain.pem"))


@pytest.mark.parametrize(
    "bad_line, needle",
    [
        ("ntp2.example.net bad_name!", "line 3: bad host name 'bad_name!'"),
        ("ntp2.example.net 1.2.3.256", "line 3: bad host name '1.2.3.256'"),
        ("*.*.example.net", "line 3: bad host name '*.*.example.net'"),
        ("ntp2.example.net *.net", "line 3: bad host name '*.net'"),
        ("192.0.2.7", "line 3: the certificate name must be a host name"),
    ],
)
def test_batch_with_a_bad_line_issues_nothing(home, tmp_path, bad_line, needle):
    batch = tmp_path / "fleet.txt"
    batch.write_text(f"ntp1.example.net\n# comment\n{bad_line}\nntp3.example.net\n")
    one_line_error(run_cli("issue", "--from", batch, home=home), str(batch), needle)
    assert list((home / "live").iterdir()) == [] and list((home / "archive").iterdir()) == []
    assert json.loads(run_cli("list", "--json", home=home, check=True).stdout) == []


def test_batch_line_outside_name_constraints_issues_nothing(tmp_path):
    home = tmp_path / "home"
    ca_create(home, "--no-passphrase", "--permit-dns", "example.net")
    batch = tmp_path / "fleet.txt"
    batch.write_text("ntp1.example.net\nntp2.example.net\nntp.example.org\n")
    one_line_error(run_cli("issue", "--from", batch, home=home), "line 3", "does not verify")
    assert list((home / "live").iterdir()) == [] and list((home / "archive").iterdir()) == []


def _tree(home: Path) -> dict:
    """Every path under `home` with what it holds (the ledger's own files aside: opening it touches them)."""
    out: dict[Path, object] = {}
    for p in sorted(home.rglob("*")):
        if "ledger" not in p.name:
            out[p] = os.readlink(p) if p.is_symlink() else "dir" if p.is_dir() else p.read_bytes()
    return out


def test_large_batch_on_every_cpu_then_one_bad_line_takes_everything_back(tmp_path):
    """A batch large enough for the forked workers: every key its own (no RNG state shared across
    the fork), every key with its certificate; then a batch whose 90th line is refused: the
    versions written for lines 1-89 before it was found are taken back, live/ is untouched."""
    home = tmp_path / "home"
    ca_create(home, "--no-passphrase", "--permit-dns", "example.net")
    names = [f"ntp{i}.example.net" for i in range(100)]
    batch = tmp_path / "fleet.txt"
    batch.write_text("".join(f"{n}\n" for n in names))
    out = json.loads(run_cli("issue", "--from", batch, "--json", home=home, check=True).stdout)
    assert [(r["name"], r["version"]) for r in out] == [(n, 1) for n in names]
    h = Home(home)
    lineages = [h.read_lineage(n) for n in names]
    assert len({lin.privkey for lin in lineages}) == len({r["serial"] for r in out}) == 100
    for lin in lineages:
        assert keys.key_matches_cert(keys.load_private_pem(lin.privkey), pki.load_certs(lin.cert)[0])
    before = _tree(home)
    names[89] = "ntp.example.org"
    batch.write_text("".join(f"{n}\n" for n in names))
    one_line_error(run_cli("issue", "--from", batch, home=home), "line 90", "does not verify")
    assert _tree(home) == before
    assert {r["version"] for r in json.loads(run_cli("list", "--json", home=home, check=True).stdout)} == {1}


# ---- bad input: one line, non-zero, no traceback ------------------------------------------------------------


def test_no_ca_yet(tmp_path):
    for args in (["issue", "ntpserver"], ["issue", "--from", "-"], ["ca", "show"], ["ca", "intermediate"]):
        one_line_error(run_cli(*args, home=tmp_path / "home", input="ntpserver\n"), "ca create")
    (tmp_path / "empty").mkdir()
    one_line_error(run_cli("issue", "ntpserver", home=tmp_path / "empty"), "no CA", "ca create")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["issue", "bad_name!"], "'bad_name!'"),
        (["issue", "ntp..example.net"], "empty label"),
        (["issue", "a" * 64 + ".example.net"], "63"),
        (["issue", "ntp.example.net", "--san", "1.2.3.256"], "'1.2.3.256'"),
        (["issue", "ntp.example.net", "--san", "*.*.example.net"], "wildcard"),
        (["issue", "127.0.0.1"], "not an address"),
        (["issue", "ntpserver", "--key-type", "dsa"], "'dsa'"),
        (["issue", "ntpserver", "--days", "0"], "--days"),
        (["issue", "ntpserver", "--days", "20000"], "intermediate CA expires"),
        (["issue", "ntpserver", "--days", "100000"], "not in the range 1<=x<=36500"),
        (["issue"], "NAME"),
        (["issue", "--from", "/nonexistent/fleet.txt"], "/nonexistent/fleet.txt"),
        (["ca", "create", "--no-passphrase", "--key-type", "dsa"], "'dsa'"),
        (["ca", "create", "--force", "--passphrase-file", "/nonexistent/pass"], "/nonexistent/pass"),
        (["ca", "create", "--no-passphrase", "--permit-dns", "exa mple.net"], "'exa mple.net'"),
        (["ca", "create", "--no-passphrase", "--permit-ip", "300.0.0.0/8"], "300.0.0.0/8"),
        (["show", "nosuch"], "nosuch"),
        (["show", "../../etc"], "../../etc"),
        (["list", "--expiring", "soon"], "--expiring"),
    ],
)
def test_bad_input_is_one_line(home, args, needle):
    before = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    one_line_error(run_cli(*args, home=home, env=NO_PASSPHRASE_ENV, input=""), needle)
    after = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    assert after == before  # nothing half-written


def test_home_that_is_a_file(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    for args in (["ca", "create", "--no-passphrase"], ["issue", "ntpserver"], ["list"], ["show", "ntpserver"]):
        one_line_error(run_cli(*args, home=not_a_dir), str(not_a_dir))
        one_line_error(run_cli(*args, env={"NTSPKI_HOME": str(not_a_dir)}), str(not_a_dir))
    below = tmp_path / "file" / "home"
    one_line_error(run_cli("ca", "create", "--no-passphrase", home=below), str(below))


def test_unreadable_home_as_another_user(home, tmp_path):
    """`nobody` meets root's 0700 home: a clear one-line error, for every command."""
    tmp_path.chmod(0o755)  # `nobody` may reach the home, not into it (it is 0755, ca/private 0700)
    (home / "ca/private").chmod(0o700)
    run_cli("issue", "ntpserver", home=home, check=True)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    (home.rename(locked / "home"))
    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *NTSPKI]
    for args in (["list"], ["show", "ntpserver"], ["issue", "ntp2"], ["ca", "create", "--no-passphrase"]):
        proc = subprocess.run(
            [*as_nobody, "--home", str(locked / "home"), *args], capture_output=True, text=True, timeout=60, cwd="/"
        )
        one_line_error(proc, str(locked / "home"))
    # Reachable home, unreadable CA key (0700 ca/private): issuing says so and writes nothing.
    locked.chmod(0o755)
    proc = subprocess.run(
        [*as_nobody, "--home", str(locked / "home"), "issue", "ntp2"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    one_line_error(proc)
    assert not (locked / "home/live/ntp2").exists()


# ---- private keys are never readable by others, not even for an instant --------------------------------------


class ModeWatcher(threading.Thread):
    """Polls every file under a directory as fast as it can, recording the mode of each key file seen
    (temp files included) — a key readable by others even briefly shows up here."""

    def __init__(self, root: Path):
        super().__init__(daemon=True)
        self.root, self.stop, self.seen, self.exposed, self.scans = root, threading.Event(), set(), [], 0

    def run(self):
        while not self.stop.is_set():
            self.scans += 1
            try:
                dirs = [self.root / e.name for e in os.scandir(self.root)]
            except FileNotFoundError:
                continue
            for d in dirs:
                try:
                    entries = list(os.scandir(d))
                except (FileNotFoundError, NotADirectoryError):
                    continue
                for e in entries:
                    if "privkey" not in e.name and not e.name.endswith(".key"):
                        continue
                    try:
                        m = stat.S_IMODE(os.lstat(e.path).st_mode)
                    except FileNotFoundError:
                        continue
                    self.seen.add(e.path)
                    if m & 0o077:
                        self.exposed.append((e.path, oct(m)))


def test_keys_never_readable_by_others_even_with_umask_0(tmp_path):
    home = tmp_path / "home"
    batch = tmp_path / "fleet.txt"
    batch.write_text("".join(f"ntp{i}.example.net 192.0.2.{i % 250}\n" for i in range(300)))
    old_umask = os.umask(0)  # children inherit it: a file created with default modes would be 0666
    try:
        home.mkdir()
        watchers = [ModeWatcher(home / "ca"), ModeWatcher(home / "archive")]
        for w in watchers:
            w.start()
        run_cli("ca", "create", "--no-passphrase", home=home, check=True)
        run_cli("issue", "--from", batch, home=home, check=True)
        run_cli("issue", "--from", batch, home=home, check=True)  # version 2 next to version 1
        run_cli("issue", "ntp1.example.net", home=home, check=True)
    finally:
        os.umask(old_umask)
        for w in watchers:
            w.stop.set()
            w.join()
    ca_watch, archive_watch = watchers
    assert ca_watch.exposed == [] and archive_watch.exposed == []
    assert archive_watch.scans > 50 and len(archive_watch.seen) >= 300  # it did watch, and saw keys
    keys_on_disk = [p for p in home.rglob("*") if "privkey" in p.name or p.suffix == ".key"]
    assert len(keys_on_disk) == 2 + (2 * 300 + 1) + 300  # CA keys, archive keys, live links
    for p in keys_on_disk:
        assert mode(p.resolve()) == 0o600, p
    for d in [
        home / "ca/private",
        home / "archive",
        home / "live",
        home / "renewal",
        *(home / "archive").iterdir(),
        *(p for p in (home / "live").iterdir() if not p.is_symlink()),  # the version directories
    ]:
        assert mode(d) == 0o700, d
