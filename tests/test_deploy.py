"""`ntspki deploy` against a real chronyd running as `_chrony`: served certificate, owners and
modes, clients synchronising, restart strategies, rollback, and refusals that change nothing."""

from __future__ import annotations

import datetime as dt
import grp
import json
import os
import stat

import pytest
from cryptography import x509

from ntspki import deploy, pki
from ntspki.deploy import deployconfig
from ntspki.errors import NtspkiError
from ntspki.issuing import ca as ca_mod
from ntspki.pki import keys
from ntspki.servers import services
from tests.deploy_env import DeployLab, gnutls_served_ok, openssl_served_sha256


@pytest.fixture(scope="module")
def dl():
    bed = DeployLab()
    yield bed
    bed.stop()


def _mode(path) -> tuple[str, str, int]:
    st = os.stat(path)
    return "root" if st.st_uid == 0 else str(st.st_uid), grp.getgrgid(st.st_gid).gr_name, stat.S_IMODE(st.st_mode)


def test_deploy_serves_the_new_certificate_with_owner_group_modes_and_clients_sync(dl):
    before = dl.served()
    new = dl.new_version()
    assert new != before
    dl.write_config()
    restarts = dl.restarts()
    proc = dl.cli("deploy", "--all", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [t["status"] for t in report["targets"]] == ["deployed"]
    assert report["targets"][0]["served_sha256"] == new
    assert dl.restarts() == restarts + 1
    # Seen from outside by three independent TLS stacks.
    assert dl.served() == new
    assert openssl_served_sha256(dl.server.nts_port) == new
    gnutls = gnutls_served_ok(dl.server.nts_port, dl.site.root)
    assert gnutls.returncode == 0 and "Handshake was completed" in gnutls.stdout, gnutls.stdout + gnutls.stderr
    assert dl.deployed().fingerprint == new
    assert _mode(dl.key) == ("root", "_chrony", 0o640)
    assert _mode(dl.cert) == ("root", "_chrony", 0o644)
    # The previous pair is kept, never readable by others.
    previous = deploy.read_pair(dl.key.with_name("ntpserver.key.previous"), dl.cert.with_name("ntpserver.crt.previous"))
    assert previous is not None and previous.fingerprint == before
    assert _mode(dl.key.with_name("ntpserver.key.previous"))[2] & 0o007 == 0
    # Steps are logged (on stderr with --json, whose stdout is the report), the result once.
    assert "installed" in proc.stderr and "running" in proc.stderr, proc.stderr
    assert (proc.stdout + proc.stderr).count("served on") == 1, proc.stdout + proc.stderr
    client = dl.client_syncs()
    assert client.ok, client.output


def test_second_deploy_is_a_no_op_without_restart(dl):
    pid, restarts = dl.server.pid, dl.restarts()
    proc = dl.cli("deploy", "ntpserver")
    assert proc.returncode == 0, proc.stderr
    # Text: progress and the result on stdout, the result once; stderr only for problems.
    assert proc.stdout.count("unchanged") == 1 and proc.stderr == "", proc.stdout + proc.stderr
    assert dl.restarts() == restarts and dl.server.pid == pid


def test_dry_run_validates_and_changes_nothing(dl):
    served, restarts = dl.served(), dl.restarts()
    dl.new_version()
    proc = dl.cli("deploy", "--all", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["targets"][0]["status"] == "would-deploy"
    assert dl.deployed().fingerprint == served == dl.served()
    assert dl.restarts() == restarts


def test_default_restart_is_systemctl_restart_of_the_unit_that_exists(dl):
    """No restart_command: ntspki asks systemctl which of chrony.service/chronyd.service exists and
    restarts it (systemctl is a stand-in script here; the restart it runs is real)."""
    bindir, log = dl.fake_systemctl()
    dl.write_config({"ntpserver": dl.settings(restart_command=None)})
    want = dl.source_fingerprint()
    proc = dl.cli("deploy", "--all", env={"PATH": f"{bindir}:{os.environ['PATH']}"})
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    assert "show --property=LoadState --value chrony.service" in calls
    assert calls[-1] == "restart chrony.service"
    assert dl.served() == want


def test_one_off_flags_without_a_config(dl):
    want = dl.new_version()
    restarts = dl.restarts()
    proc = dl.cli(
        "deploy",
        "--lineage",
        dl.home.live / "ntpserver",
        "--cert",
        dl.cert,
        "--key",
        dl.key,
        "--restart-command",
        dl.restart_script,
        "--service-conf",
        dl.server.conf_path,
        "--probe",
        f"127.0.0.1:{dl.server.nts_port}",
        "--probe-name",
        "ntpserver",
        "--ca",
        dl.site.root,
        "--service-conf",
        dl.server.conf_path,
        "--group",
        "_chrony",
        "--key-mode",
        "0640",
        "--cert-mode",
        "0644",
    )
    assert proc.returncode == 0, proc.stderr
    assert dl.served() == want and dl.restarts() == restarts + 1


def test_several_targets_one_restart(dl):
    """A second copy (e.g. for a container) and the served one: one restart for both."""
    copy_dir = dl.root / "etc" / "chrony" / "copy"
    dl.write_config(
        {
            "ntpserver": dl.settings(),
            # A copy for something else (service_conf false): chronyd's config is not held against it.
            "copy": dl.settings(
                cert=str(copy_dir / "c.crt"), key=str(copy_dir / "c.key"), probe=False, service_conf=False
            ),
        }
    )
    want = dl.new_version()
    restarts = dl.restarts()
    proc = dl.cli("deploy", "--all", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert len(report["actions"]) == 1 and dl.restarts() == restarts + 1
    assert deploy.read_pair(copy_dir / "c.key", copy_dir / "c.crt").fingerprint == want == dl.served()
    dl.write_config()


def test_restart_without_effect_rolls_back_and_fails(dl):
    old = dl.served()
    dl.noop(True)  # the restart command "succeeds" but the server keeps its old certificate
    try:
        dl.write_config({"ntpserver": dl.settings(probe_timeout=1)})
        new = dl.new_version()
        proc = dl.cli("deploy", "--all", "--json")
    finally:
        dl.noop(False)
    assert proc.returncode == deploy.ROLLED_BACK, proc.stderr
    result = json.loads(proc.stdout)["targets"][0]
    assert result["status"] == "rolled-back" and result["new_sha256"] == new
    assert "not served" in result["message"] and "previous certificate is served again" in result["message"]
    assert dl.served() == old and dl.deployed().fingerprint == old


def test_rollback_to_a_certificate_from_another_ca(dl, tmp_path):
    """Moving to a new CA (say, from the site CA to Let's Encrypt) and failing: the old certificate
    does not verify against the new `ca`, yet it is exactly what was served before, so it counts."""
    from tests.conftest import make_site

    old = dl.served()
    other = make_site(dl.root / "other-home")
    dl.noop(True)
    try:
        target = deployconfig.make_target(
            "ntpserver", dl.settings(source=str(other.live), ca=str(other.root), probe_timeout=1), dl.home
        )
        report = deploy.deploy([target])
    finally:
        dl.noop(False)
    assert report.exit_code == deploy.ROLLED_BACK, report.to_dict()
    assert report.targets[0].served_sha256 == old == dl.served() == dl.deployed().fingerprint


def test_pair_the_server_cannot_load_rolls_back(dl):
    """Configured as if chronyd read its files as root, with group root: ntspki cannot know better
    up front, chronyd (really `_chrony`) fails to read the key; the probe sees it, the previous
    pair (with its previous owner and mode) goes back, the old certificate is served again."""
    old = dl.served()
    dl.write_config({"ntpserver": dl.settings(server_user="root", group="root", probe_timeout=1.5)})
    log_before = dl.server.log().count("Could not set credentials")
    proc = dl.cli("deploy", "--all")
    assert proc.returncode == deploy.ROLLED_BACK, proc.stderr
    assert "rolled-back" in proc.stdout
    assert dl.server.log().count("Could not set credentials") > log_before
    assert dl.served() == old
    assert _mode(dl.key) == ("root", "_chrony", 0o640)
    dl.write_config()
    proc = dl.cli("deploy", "--all")
    assert proc.returncode == 0, proc.stderr
    assert dl.served() == dl.source_fingerprint()


# ---- refusals: validation before anything is touched -----------------------------------------


def _live_dir(path, key_pem: bytes, cert_pem: bytes, chain_pem: bytes, fullchain: bytes | None = None):
    path.mkdir(parents=True)
    for name, data in (
        ("privkey", key_pem),
        ("cert", cert_pem),
        ("chain", chain_pem),
        ("fullchain", fullchain if fullchain is not None else cert_pem + chain_pem),
    ):
        (path / f"{name}.pem").write_bytes(data)
    return path


@pytest.fixture(scope="module")
def bad_sources(dl):
    """Live dirs each wrong in one way, signed by the site CA."""
    ca = ca_mod.load(dl.home)
    base = dl.root / "bad"
    good = dl.home.read_lineage("ntpserver")
    other_key = keys.generate("ec-p256")
    sans = [x509.DNSName("ntpserver"), x509.DNSName("ntpserver-ipv6")]

    def leaf(key, not_after=None, not_before=None):
        if not_after is None and not_before is None:
            return pki.make_leaf(key, ca.intermediate, ca.intermediate_key, sans)
        now = pki.now()
        b = (
            x509.CertificateBuilder()
            .subject_name(ca.intermediate.subject)
            .issuer_name(ca.intermediate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - dt.timedelta(days=30))
            .not_valid_after(not_after or now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        )
        return b.sign(ca.intermediate_key, keys.signature_hash(ca.intermediate_key))

    chain = ca.chain_pem
    k1, k2 = keys.generate("ec-p256"), keys.generate("ec-p256")
    cert_ok = pki.cert_pem(leaf(k1))
    expired = leaf(k2, not_after=pki.now() - dt.timedelta(days=1))
    p384 = keys.generate("ec-p384")
    return {
        "does not match": _live_dir(base / "mismatch", keys.private_pem(other_key), cert_ok, chain),
        "not leaf first": _live_dir(base / "order", keys.private_pem(k1), cert_ok, chain, chain + cert_ok),
        "expired": _live_dir(base / "expired", keys.private_pem(k2), pki.cert_pem(expired), chain),
        "encrypted": _live_dir(base / "encrypted", keys.private_pem(k1, b"secret"), cert_ok, chain),
        "issuer": _live_dir(base / "leafonly", keys.private_pem(k1), cert_ok, b""),
        "no readable PEM": _live_dir(base / "garbage", keys.private_pem(k1), b"not a cert\n", chain, b"junk\n"),
        # Right material, but a name the target requires is not in it.
        "names": (good, {"names": ["ntpserver", "elsewhere.example"]}),
        # P-384 is fine for chrony; ntpd-rs is configured with a type list: check it is enforced.
        "ok-p384": _live_dir(
            base / "p384",
            keys.private_pem(p384),
            pki.cert_pem(pki.make_leaf(p384, ca.intermediate, ca.intermediate_key, sans)),
            chain,
        ),
    }


@pytest.mark.parametrize(
    "case, reason",
    [
        ("does not match", "does not match"),
        ("not leaf first", "not leaf first"),
        ("expired", "expired"),
        ("encrypted", "encrypted"),
        ("issuer", "chain does not verify"),
        ("no readable PEM", "no readable PEM"),
        ("names", "elsewhere.example"),
    ],
)
def test_bad_source_is_refused_and_nothing_changes(dl, bad_sources, case, reason):
    src = bad_sources[case]
    extra = {}
    if isinstance(src, tuple):
        src, extra = src[0].live_dir, src[1]
    before = (dl.key.read_bytes(), dl.cert.read_bytes(), os.stat(dl.key).st_mtime_ns, os.stat(dl.cert).st_mtime_ns)
    restarts = dl.restarts()
    target = deployconfig.make_target("bad", dl.settings(source=str(src), ca=str(dl.site.root), **extra), dl.home)
    report = deploy.deploy([target])
    assert report.exit_code == deploy.REFUSED
    assert report.targets[0].status == "refused" and reason in report.targets[0].message
    after = (dl.key.read_bytes(), dl.cert.read_bytes(), os.stat(dl.key).st_mtime_ns, os.stat(dl.cert).st_mtime_ns)
    assert after == before and dl.restarts() == restarts
    assert not list(dl.dest.glob(".*ntspki*"))


def test_bad_source_through_the_cli_is_one_line(dl, bad_sources):
    proc = dl.cli(
        "deploy",
        "--lineage",
        bad_sources["expired"],
        "--cert",
        dl.cert,
        "--key",
        dl.key,
        "--ca",
        dl.site.root,
        "--restart-command",
        dl.restart_script,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "refused" in proc.stdout and "expired" in proc.stdout


def test_destinations_others_could_write_or_chronyd_could_not_read_are_refused(dl, bad_sources, tmp_path):
    src = str(bad_sources["ok-p384"])
    world = dl.root / "world"
    world.mkdir(mode=0o777)
    world.chmod(0o777)
    link_dir = dl.root / "links"
    link_dir.mkdir(mode=0o755)
    (link_dir / "k.key").symlink_to(dl.key)
    private = tmp_path / "nts"  # pytest's tmp dirs are 0700: _chrony cannot traverse them
    cases = [
        (dict(cert=str(world / "c.crt"), key=str(world / "c.key")), "writable by other users"),
        (dict(cert=str(link_dir / "c.crt"), key=str(link_dir / "k.key")), "symlink"),
        (dict(cert=str(private / "c.crt"), key=str(private / "c.key")), "cannot enter"),
        (dict(cert=str(link_dir / "x.crt"), key=str(link_dir / "x.key"), group="root"), "could not read"),
    ]
    for over, reason in cases:
        target = deployconfig.make_target("t", dl.settings(source=src, ca=str(dl.site.root), **over), dl.home)
        report = deploy.deploy([target])
        assert report.exit_code == deploy.REFUSED, over
        assert reason in report.targets[0].message, report.targets[0].message
        assert not (world / "c.key").exists() and not private.exists() and not (link_dir / "x.key").exists()
    # The key type list is enforced per server (a P-384 key is fine for chrony).
    with pytest.raises(NtspkiError, match="cannot load a ec-p384 key"):
        t = deployconfig.make_target("t", dl.settings(source=src, ca=str(dl.site.root)), dl.home)
        t.service = services.Service("x", "restart", (), (), ("ec-p256",))
        deploy.load_source(t)


def test_config_mistakes_are_one_line_errors(dl, tmp_path):
    cfg = tmp_path / "d.toml"
    cases = [
        ("[targets.a\n", "not valid TOML"),
        ('[targets.a]\nsource = "ntpserver"\ncertt = "/x"\n', "unknown setting(s) certt"),
        ('[targets.a]\nsource = "ntpserver"\nkey_mode = "0644"\n', "every user read"),
        ('[targets.a]\nsource = "ntpserver"\ngroup = "no-such-group"\n', "no such group"),
        ('[targets.a]\nsource = "ntpserver"\nservice = "ntpd"\n', "unknown service"),
        ('[targets.a]\ncert = "/x/c"\nkey = "/x/k"\n[targets.b]\ncert = "/x/c"\nkey = "/x/k2"\n', "both write"),
        ("[target.a]\n", "unknown section"),
    ]
    for text, message in cases:
        cfg.write_text(text)
        proc = dl.cli("deploy", "--all", "--config", cfg)
        assert proc.returncode == 2, (text, proc.stderr)
        assert proc.stderr.startswith("ntspki: error:") and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert dl.cli("deploy", "nope").returncode == 2
    proc = dl.cli("deploy")
    assert proc.returncode == 2 and "--all" in proc.stderr
    proc = dl.cli("deploy", "--cert", "/x")
    assert proc.returncode == 2 and "--lineage" in proc.stderr
    empty_home = tmp_path / "empty"
    # Nothing configured is an error (a timer pointed at a mistyped home must fail), the same
    # exit status as `watch` with nothing to watch.
    proc = dl.cli("--home", empty_home, "deploy", "--all")
    assert proc.returncode == 2 and "no deploy config" in proc.stderr and proc.stdout == ""
    cfg.write_text("[defaults]\n")
    proc = dl.cli("deploy", "--all", "--config", cfg)
    assert proc.returncode == 2 and "has no targets" in proc.stderr
    # An unknown lineage: the same status and words as `show` and `renew`.
    for args in (["deploy", "--lineage", "nosuch"], ["show", "nosuch"], ["renew", "nosuch"]):
        proc = dl.cli(*args)
        assert proc.returncode == 2 and "no lineage 'nosuch'" in proc.stderr, (args, proc.stderr)


def test_no_ntsdumpdir_warns_loudly_with_the_fix(dl, tmp_path):
    copy = dl.root / "etc" / "warn"
    conf = dl.root / "no-dump.conf"
    conf.write_text(f"ntsserverkey {copy}/w.key\nntsservercert {copy}/w.crt\n")
    target = deployconfig.make_target(
        "warn",
        dl.settings(
            cert=str(copy / "w.crt"),
            key=str(copy / "w.key"),
            service_conf=str(conf),
            restart_command="true",
            probe=False,
        ),
        dl.home,
    )
    report = deploy.deploy([target])
    assert report.ok
    assert any("no ntsdumpdir" in w and "ntsdumpdir /var/lib/chrony" in w for w in report.warnings)
    assert services.chrony_conf_facts(dl.server.conf_path)["ntsdumpdir"]  # the lab server has one


def test_missing_systemd_unit_is_refused(dl, monkeypatch):
    bindir, _ = dl.fake_systemctl()
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    target = deployconfig.make_target(
        "rs",
        dl.settings(
            service="ntpd-rs",
            restart_command=None,
            cert=str(dl.root / "rs" / "c.crt"),
            key=str(dl.root / "rs" / "c.key"),
        ),
        dl.home,
    )
    report = deploy.deploy([target])
    assert report.exit_code == deploy.REFUSED
    assert "ntpd-rs.service" in report.targets[0].message
    assert services.action_command(services.get("ntpsec"), ["x"]) == ["x"]
    monkeypatch.setattr(services, "systemd_unit", lambda s: s.units[0])
    assert services.action_command(services.get("ntpsec"), None)[:3] == ["systemctl", "kill", "--signal=HUP"]
    assert services.action_command(services.get("chrony"), None) == ["systemctl", "restart", "chrony.service"]


def test_deploy_lineages_deploys_targets_of_those_live_dirs(dl, tmp_path):
    """What `ntspki renew` calls after renewing: only the targets whose source changed."""
    other = dl.root / "etc" / "lineages"
    cfg = dl.write_config(
        {
            "ntpserver": dl.settings(
                restart_command="true",
                probe=False,
                cert=str(other / "a.crt"),
                key=str(other / "a.key"),
                service_conf=False,
            ),
            "unrelated": dl.settings(
                source=str(dl.root / "bad" / "p384"),
                restart_command="true",
                probe=False,
                cert=str(other / "b.crt"),
                key=str(other / "b.key"),
                ca=str(dl.site.root),
                service_conf=False,
            ),
        }
    )
    try:
        report = deploy.deploy_lineages([dl.home.live / "ntpserver"], home=dl.home)
        assert [t.name for t in report.targets] == ["ntpserver"] and report.ok
        assert (other / "a.crt").exists() and not (other / "b.crt").exists()
        nothing = deploy.deploy_lineages([dl.home.live / "ntpserver"], home=tmp_path / "nohome")
        assert nothing.ok and nothing.targets == [] and "no deploy config" in nothing.note
    finally:
        dl.write_config()
    assert cfg.exists()


def test_example_config_loads_with_the_documented_defaults(dl):
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "deploy.toml"
    targets = deployconfig.load(example, dl.home)
    assert [t.name for t in targets] == ["ntp1", "public"]
    ntp1, public = targets
    assert ntp1.source_dir == dl.home.live / "ntp1" and ntp1.ca == [dl.home.ca_dir / "trust.pem"]
    assert (ntp1.owner, ntp1.group, ntp1.key_mode, ntp1.cert_mode) == ("root", "_chrony", 0o640, 0o644)
    assert public.cert == Path("/etc/chrony/nts/time.example.net.crt") and public.ca == []
    assert public.probe == "127.0.0.1:4460" and public.names == ["time.example.net"]


def test_failed_forced_deploy_of_the_installed_pair_leaves_the_same_bytes(dl):
    """Version N installed and served, `.previous` holding N-1: a forced deploy of N whose restart
    fails must leave N on disk, byte for byte (never N-1 from `.previous`), and N served."""
    dl.write_config({"ntpserver": dl.settings(probe_timeout=1)})
    dl.new_version()
    assert dl.cli("deploy", "--all").returncode == 0
    assert deploy.read_pair(dl.key.with_name(dl.key.name + ".previous"), dl.cert.with_name(dl.cert.name + ".previous"))
    before = (dl.key.read_bytes(), dl.cert.read_bytes(), dl.key.stat().st_mode, dl.cert.stat().st_mode)
    served = dl.served()
    dl.write_config({"ntpserver": dl.settings(probe_timeout=1, restart_command="false")})
    try:
        proc = dl.cli("deploy", "--all", "--force", "--json")
    finally:
        dl.write_config()
    assert proc.returncode == deploy.ROLLED_BACK, proc.stdout + proc.stderr
    assert "byte for byte" in json.loads(proc.stdout)["targets"][0]["message"]
    assert (dl.key.read_bytes(), dl.cert.read_bytes(), dl.key.stat().st_mode, dl.cert.stat().st_mode) == before
    assert dl.served() == served == dl.deployed().fingerprint


def test_deploying_the_installed_and_served_pair_is_a_no_op(dl):
    dl.write_config()
    assert dl.cli("deploy", "--all").returncode == 0
    before = (dl.key.read_bytes(), dl.cert.read_bytes(), dl.key.stat().st_mtime_ns, dl.restarts())
    proc = dl.cli("deploy", "--all", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["targets"][0]["status"] == "unchanged"
    assert (dl.key.read_bytes(), dl.cert.read_bytes(), dl.key.stat().st_mtime_ns, dl.restarts()) == before


def test_deploy_refuses_a_target_the_server_does_not_read_naming_both_paths(dl, tmp_path):
    """chronyd's config (with its includes) reads the pair elsewhere: refused before anything is
    written or restarted, and --dry-run says the same."""
    conf_d = dl.root / "conf.d"
    conf_d.mkdir(exist_ok=True)
    elsewhere = dl.root / "etc" / "chrony" / "other"
    (conf_d / "nts.conf").write_text(f"ntsserverkey {elsewhere}/k.key\nntsservercert {elsewhere}/c.crt\n")
    conf = dl.root / "chrony-elsewhere.conf"
    conf.write_text(f"ntsdumpdir {dl.root}\ninclude {conf_d}/*.conf\n")
    dl.write_config({"ntpserver": dl.settings(service_conf=str(conf))})
    before = (dl.key.read_bytes(), dl.cert.read_bytes(), dl.restarts())
    try:
        dl.new_version()
        for extra in ([], ["--dry-run"]):
            proc = dl.cli("deploy", "--all", *extra, "--json")
            assert proc.returncode == deploy.REFUSED, proc.stderr
            message = json.loads(proc.stdout)["targets"][0]["message"]
            assert f"{elsewhere}/k.key" in message and f"{elsewhere}/c.crt" in message, message
            assert str(dl.key) in message and str(dl.cert) in message and f"{conf_d}/nts.conf:1" in message
        assert (dl.key.read_bytes(), dl.cert.read_bytes(), dl.restarts()) == before
        conf.write_text(f"ntsdumpdir {dl.root}\n")  # no NTS server at all
        proc = dl.cli("deploy", "--all")
        assert proc.returncode == deploy.REFUSED and "serves no NTS" in proc.stdout + proc.stderr
        assert f"ntsserverkey {dl.key}" in proc.stdout + proc.stderr
    finally:
        dl.write_config()
    assert dl.cli("deploy", "--all").returncode == 0  # the lab's own config reads exactly these


def test_renew_dry_run_rehearses_issue_verify_and_the_deploy_plan(dl):
    """As certbot's --dry-run: the renewal is really made (in a scratch area) and verified, the
    deploy is planned with every check a real one makes, and nothing changes anywhere."""
    dl.write_config()
    assert dl.cli("deploy", "--all").returncode == 0
    versions, dest, restarts = dl.home.versions("ntpserver"), (dl.key.read_bytes(), dl.cert.read_bytes()), dl.restarts()
    renewal = (dl.home.renewal / "ntpserver.json").read_bytes()
    proc = dl.cli("renew", "ntpserver", "--force", "--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ntpserver: would renew (forced): issued and verified in a scratch area" in proc.stdout, proc.stdout
    assert f"would write {dl.key} and {dl.cert}" in proc.stdout and str(dl.restart_script) in proc.stdout
    assert f"check 127.0.0.1:{dl.server.nts_port} serves" in proc.stdout
    assert dl.home.versions("ntpserver") == versions and (dl.key.read_bytes(), dl.cert.read_bytes()) == dest
    assert dl.restarts() == restarts and (dl.home.renewal / "ntpserver.json").read_bytes() == renewal
    # What a real run would trip over shows up in the rehearsal: chronyd reading other files.
    conf = dl.root / "elsewhere.conf"
    conf.write_text(f"ntsserverkey {dl.root}/x.key\nntsservercert {dl.root}/x.crt\n")
    dl.write_config({"ntpserver": dl.settings(service_conf=str(conf))})
    try:
        proc = dl.cli("renew", "ntpserver", "--force", "--dry-run")
    finally:
        dl.write_config()
    assert proc.returncode == 1 and f"{dl.root}/x.key" in proc.stdout, proc.stdout + proc.stderr
