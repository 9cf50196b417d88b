"""The bad-input corpus: every command and input file, as a hostile or careless user gives them.

Each case asserts: a non-zero exit (2 where it is a usage error), exactly one line on stderr
(no traceback), an answer within a time bound (devices and FIFOs never block), and nothing
changed on disk (paths, types, modes and contents of the home, the deploy targets and the
working directory, before and after). Most cases run in-process through click's CliRunner
(NTSPKI_DEBUG=1, so any exception the CLI does not turn into one line fails the case with its
traceback); a representative subset runs the installed `ntspki` in a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import select
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from ntspki.cli import main
from ntspki.issuing import ca, issue
from ntspki.servers import lab
from ntspki.store import Home

TIME_LIMIT = 10  # seconds per case
NTSPKI = str(Path(sys.executable).parent / "ntspki")
IGNORED_SUFFIXES = ("-wal", "-shm", ".lock")  # SQLite's WAL files and flock files carry no state
MEMORY_LIMIT = 2 << 30  # address space per case: an unbounded read fails the case, not the machine

DEPLOY_TOML = """\
[defaults]
owner = "root"
group = "_chrony"
service_conf = "none"
probe = false
restart_command = "true"

[targets.ntpserver]
source = "ntpserver"
cert = "../targets/ntpserver.crt"
key = "../targets/ntpserver.key"
"""


# ---- the world each case runs in -------------------------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A home with a CA, lineages ntpserver and other, a deploy.toml; built once, copied per case."""
    _preload()
    path = tmp_path_factory.mktemp("hostile-template") / "home"
    home = Home(path)
    ca.create(home, passphrase=None)
    issue.issue(home, "ntpserver", ["ntpserver-ipv6", "127.0.0.1"])
    issue.issue(home, "other", ["other.example"])
    home.ledger.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    home.ledger.close()
    (path / "deploy.toml").write_text(DEPLOY_TOML)
    return path


def _preload() -> None:
    """Import every command's module once, here: each forked case then starts warm."""
    import importlib

    from ntspki.cli import COMMANDS

    for target in COMMANDS.values():
        importlib.import_module(target.split(":")[0])
    for module in ("ntspki.deploy", "ntspki.nts.probe", "ntspki.acme.acmeclient", "ntspki.audit.migrate", "idna"):
        importlib.import_module(module)


@dataclass
class World:
    w: Path  # the working directory: setup files go here
    h: Path  # the home
    t: Path  # the deploy target directory

    def fmt(self, s: str) -> str:
        return s.replace("{h}", str(self.h)).replace("{w}", str(self.w)).replace("{t}", str(self.t))


@pytest.fixture
def world(template) -> World:
    # chronyd's user can traverse it (pytest's tmp dirs are 0700): a good target would really deploy
    w = lab.make_workdir("ntspki-hostile-")
    shutil.copytree(template, w / "home", symlinks=True)
    (w / "targets").mkdir()
    (w / "targets" / "unrelated.conf").write_text("left alone\n")
    yield World(w, w / "home", w / "targets")
    shutil.rmtree(w, ignore_errors=True)


def snapshot(*roots: Path) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for n in dirnames + filenames:
                if n.endswith(IGNORED_SUFFIXES):
                    continue
                p = os.path.join(dirpath, n)
                st = os.lstat(p)
                if stat.S_ISLNK(st.st_mode):
                    what: object = os.readlink(p)
                elif stat.S_ISREG(st.st_mode) and st.st_size > 1 << 20:
                    what = (st.st_size, st.st_mtime_ns)  # the big inputs the cases made: not hashed
                elif stat.S_ISREG(st.st_mode):
                    with open(p, "rb") as f:
                        what = hashlib.sha256(f.read()).hexdigest()
                else:
                    what = None
                out[p] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, what)
    return out


# ---- ways to make a bad file -------------------------------------------------------------------------


def _fifo(p: Path) -> None:
    os.mkfifo(p)


def _dir(p: Path) -> None:
    p.mkdir()


def _dangling(p: Path) -> None:
    p.symlink_to(p.parent / "nowhere")


def _link_to(target: str) -> Callable[[Path], None]:
    return lambda p: p.symlink_to(target)


def _huge(p: Path) -> None:
    with open(p, "wb") as f:
        f.truncate(64 << 20)  # sparse: 64 MiB of NULs that take no disk


def _big_text(p: Path) -> None:
    p.write_bytes(b"# a comment line\n" * (300 << 10))  # ~5 MiB of valid text


def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(data)


BAD_FILES: dict[str, Callable[[Path], None]] = {
    "fifo": _fifo,
    "dev-zero": _link_to("/dev/zero"),
    "dev-urandom": _link_to("/dev/urandom"),
    "directory": _dir,
    "dangling-link": _dangling,
    "missing": lambda p: None,
    "sparse-64M": _huge,
    "text-5M": _big_text,
    "binary": _bytes(bytes(range(256)) * 4),
    "latin1": _bytes(b"caf\xe9 \xff\xfe\n"),
    "nul-in-text": _bytes(b"ntpserver\0evil\n"),
}
BAD_FILES_NO_MISSING = {k: v for k, v in BAD_FILES.items() if k != "missing"}


@dataclass
class Case:
    id: str
    argv: list[str]
    files: dict[str, Callable[[Path], None] | bytes | str] = field(default_factory=dict)  # name -> how
    setup: Callable[[World], None] | None = None  # anything else to break before the run
    code: int | None = 2  # the exit status; None: any non-zero
    stdin: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    home: bool = True  # pass --home {h}
    stdout_ok: bool = False  # a command whose report goes to stdout (check): stderr may be empty


def _make_files(world: World, files: dict) -> None:
    for name, how in files.items():
        p = world.w / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if callable(how):
            how(p)
        elif isinstance(how, bytes):
            p.write_bytes(how)
        else:
            p.write_text(world.fmt(how))


def _prepare(world: World, case: Case) -> list[str]:
    _make_files(world, case.files)
    if case.setup:
        case.setup(world)
    argv = [world.fmt(a) for a in case.argv]
    return (["--home", str(world.h)] if case.home else []) + argv


def _child(argv: list[str], stdin: str | None, env: dict) -> tuple[int, str, str]:
    runner = CliRunner()
    full_env = {"NTSPKI_DEBUG": "1", "NTSPKI_HOME": None, "NTSPKI_PASSPHRASE": None, **env}
    with runner.isolation(input=stdin, env=full_env) as streams:
        try:
            main(argv)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            code = 99
            sys.stderr.write(traceback.format_exc())
        sys.stdout.flush()
        sys.stderr.flush()
        out, err = streams[0].getvalue(), streams[1].getvalue()
    return code, out.decode(errors="replace"), err.decode(errors="replace")


def run_inprocess(argv: list[str], stdin: str | None, env: dict) -> tuple[int, str, str, float]:
    """The CLI's `main` in a forked copy of this process (no new interpreter, no imports to redo):
    a read that blocks inside C (SQLite, open() of a FIFO) or eats memory is killed at the
    limits, and nothing one case does leaks into the next."""
    r, w = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: run, report as JSON on the pipe, and leave without pytest's cleanup
        try:
            os.close(r)
            resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
            result = _child(argv, stdin, env)
        except BaseException:
            result = (99, "", traceback.format_exc())
        data = json.dumps(result).encode()
        while data:
            data = data[os.write(w, data) :]
        os._exit(0)
    os.close(w)
    chunks = []
    deadline = start + TIME_LIMIT
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return 124, "", f"killed: no answer within {TIME_LIMIT} s", time.monotonic() - start
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    took = time.monotonic() - start
    if not chunks:
        return 125, "", f"the case's process died ({status:#x}: out of memory?)", took
    code, out, err = json.loads(b"".join(chunks))
    return code, out, err, took


def run_subprocess(argv: list[str], stdin: str | None, env: dict) -> tuple[int, str, str, float]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("NTSPKI_HOME", "NTSPKI_PASSPHRASE", "NTSPKI_DEBUG")}
    full_env.update(env)
    start = time.monotonic()
    p = subprocess.run(
        [NTSPKI, *argv],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        errors="replace",
        env=full_env,
        timeout=TIME_LIMIT,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT)),
    )
    return p.returncode, p.stdout, p.stderr, time.monotonic() - start


def check_case(world: World, case: Case, runner) -> None:
    argv = _prepare(world, case)
    before = snapshot(world.w)
    code, out, err, took = runner(argv, case.stdin, case.env)
    after = snapshot(world.w)
    lines = [line for line in err.splitlines() if line.strip()]
    where = f"argv={argv!r}\nexit {code}\nstdout: {out[-2000:]}\nstderr: {err[-4000:]}"
    assert code != 0, f"false success\n{where}"
    if case.code is not None:
        assert code == case.code, f"exit {code}, expected {case.code}\n{where}"
    assert "Traceback" not in err and "internal error" not in err, where
    if case.stdout_ok and not lines:
        assert out.strip(), f"no word of what went wrong\n{where}"
    else:
        assert len(lines) == 1, f"{len(lines)} lines on stderr, expected one\n{where}"
        assert not lines[0].startswith("Error:"), where
    assert took < TIME_LIMIT, f"took {took:.1f} s\n{where}"
    changed = sorted(set(before) ^ set(after)) + sorted(k for k in before if k in after and before[k] != after[k])
    assert not changed, f"changed on disk: {changed[:10]}\n{where}"


# ---- the cases -----------------------------------------------------------------------------------------

CASES: list[Case] = []


def case(id: str, *argv: str, **kw) -> None:
    CASES.append(Case(id, list(argv), **kw))


NUMBERS_BAD = ["nan", "inf", "-inf", "-1", "1e309", "0x10", "1" + "0" * 40, "", "abc", "1,5"]
INT_BAD = ["0", "-1", "nan", "inf", "1e309", "0x10", "1" + "0" * 40, "99999999", "", "3.5"]
HOST_NAMES_BAD = {
    "zwj": "ntp\u200dserver",
    "zwnj": "ntp\u200cserver",
    "zwsp": "ntp\u200bserver",
    "soft-hyphen": "ntp\u00adserver",
    "word-joiner": "ntp\u2060server",
    "bom": "\ufeffntpserver",
    "rlo": "ntp\u202eserver",
    "lri": "ntp\u2066server",
    "alm": "ntp\u061cserver",
    "lrm": "ntp\u200eserver",
    "mongolian-vs": "ntp\u180eserver",
    "tag-char": "ntp\U000e0041server",
    "variation-selector": "ntp\ufe0fserver",
    "interlinear": "ntp\ufff9server",
    "nul": "ntp\x00server",
    "newline": "ntp\nserver",
    "tab": "ntp\tserver",
    "space": "ntp server",
    "slash": "ntp/server",
    "dotdot": "..",
    "dot": ".",
    "empty": "",
    "leading-hyphen": "-ntp",
    "underscore": "ntp_server",
    "double-dot": "ntp..example",
    "label-64": "a" * 64 + ".example",
    "name-254": ".".join(["a" * 63] * 4),
    "bad-punycode": "xn--zz",
    "numeric-tld": "ntp.123",
    "wildcard-middle": "ntp.*.example",
    "emoji": "\U0001f4a5.example",
    "percent": "ntp%25",
    "bidi-mixed": "\u05d0a.example",
    "nbsp": "ntp\u00a0server",
    "line-separator": "ntp\u2028server",
    "ideographic-space": "ntp\u3000server",
    "combining-grapheme-joiner": "ntp\u034fserver",
    "khmer-inherent-vowel": "ntp\u17b4server",
    "hangul-filler": "ntp\u115fserver",
    "invisible-times": "ntp\u2062server",
    "zero-width-space-only": "\u200b",
}
for key, value in HOST_NAMES_BAD.items():
    case(f"issue-name-{key}", "issue", value)
    case(f"issue-san-{key}", "issue", "newname", "--san", value)
    case(f"csr-name-{key}", "csr", value)

# deploy one-off flags (the cases below change one flag of a target that would deploy)
ONEOFF = [
    "deploy",
    "--lineage",
    "ntpserver",
    "--cert",
    "{t}/a.crt",
    "--key",
    "{t}/a.key",
    "--service-conf",
    "none",
    "--probe",
    "none",
    "--restart-command",
    "true",
    "--owner",
    "root",
    "--group",
    "root",
]


def _oneoff(**changes: str | None) -> list[str]:
    argv = list(ONEOFF)
    for flag, value in changes.items():
        opt = "--" + flag.replace("_", "-")
        if opt in argv:
            i = argv.index(opt)
            if value is None:
                del argv[i : i + 2]
            else:
                argv[i + 1] = value
        elif value is not None:
            argv += [opt, value]
    return argv


for key in ("zwj", "soft-hyphen", "rlo", "bom", "nul", "slash", "empty", "numeric-tld", "emoji"):
    case(f"acme-issue-name-{key}", "acme", "issue", HOST_NAMES_BAD[key], "--agree-tos", "--staging")
    case(
        f"migrate-hostname-{key}",
        "migrate",
        "{w}/ntp.conf",
        "--hostname",
        HOST_NAMES_BAD[key],
        files={"ntp.conf": "server 192.0.2.1 iburst\n"},
    )
    case(f"probe-name-{key}", "probe", "127.0.0.1:1", "--name", HOST_NAMES_BAD[key], "--no-ntp", code=None)
    case(f"deploy-probe-name-{key}", *_oneoff(probe="127.0.0.1:1", probe_name=HOST_NAMES_BAD[key]))

# issue: numbers and the --from list
for v in INT_BAD:
    case(f"issue-days-{v or 'empty'}", "issue", "newname", "--days", v)
    case(f"sign-days-{v or 'empty'}", "sign", "{w}/req.csr", "--days", v, files={"req.csr": b"x"})
    case(f"crl-days-{v or 'empty'}", "crl", "--days", v)
case("issue-days-far-future", "issue", "newname", "--days", "3000000")
case("issue-no-name", "issue")
case("issue-name-and-from", "issue", "x", "--from", "{w}/list", files={"list": "a\n"})
case("issue-key-type", "issue", "newname", "--key-type", "dsa")
for key, how in BAD_FILES.items():
    case(f"issue-from-{key}", "issue", "--from", "{w}/list", files={"list": how})
case("issue-from-empty", "issue", "--from", "{w}/list", files={"list": ""})
case("issue-from-comments-only", "issue", "--from", "{w}/list", files={"list": "# nothing\n\n"})
case("issue-from-stdin-empty", "issue", "--from", "-", stdin="")
case("issue-from-bad-line-late", "issue", "--from", "{w}/list", files={"list": "good1\ngood2\nba\u200dd\n"})
case("issue-from-long-line", "issue", "--from", "{w}/list", files={"list": "a" * 300000 + "\n"})
case("issue-from-ip-name", "issue", "--from", "{w}/list", files={"list": "192.0.2.1\n"})
case("issue-from-stdin-zwj", "issue", "--from", "-", stdin="good1\nntp\u00adserver\n")


def _break_ledger(how):
    def setup(world: World) -> None:
        p = world.h / "ledger.sqlite3"
        p.unlink()
        how(p)

    return setup


for key, how in {
    "garbage": _bytes(b"this is not a database\n" * 100),
    "directory": _dir,
    "fifo": _fifo,
    "dev-zero": _link_to("/dev/zero"),
    "dangling": _dangling,
}.items():
    case(f"issue-ledger-{key}", "issue", "brandnew", setup=_break_ledger(how), code=None)
    case(
        f"issue-from-ledger-{key}",
        "issue",
        "--from",
        "{w}/list",
        files={"list": "b1\nb2\n"},
        setup=_break_ledger(how),
        code=None,
    )
    case(f"list-ledger-{key}", "list", setup=_break_ledger(how), code=None)


def _sql(*statements: str):
    def setup(world: World) -> None:
        db = sqlite3.connect(world.h / "ledger.sqlite3", isolation_level=None)
        for s in statements:
            db.execute(s)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()

    return setup


LEDGER_BAD = {
    "sans-not-json": "UPDATE certificates SET sans = 'not json' WHERE name = 'ntpserver'",
    "sans-not-list": "UPDATE certificates SET sans = '{\"a\": 1}' WHERE name = 'ntpserver'",
    "sans-list-of-numbers": "UPDATE certificates SET sans = '[1, 2]' WHERE name = 'ntpserver'",
    "not-after-garbage": "UPDATE certificates SET not_after = 'yesterday' WHERE name = 'ntpserver'",
    "not-after-empty": "UPDATE certificates SET not_after = '' WHERE name = 'ntpserver'",
    "not-after-number": "UPDATE certificates SET not_after = 12345 WHERE name = 'ntpserver'",
    "version-text": "UPDATE certificates SET version = 'one' WHERE name = 'ntpserver'",
}
for key, sql in LEDGER_BAD.items():
    case(f"list-ledger-row-{key}", "list", setup=_sql(sql), code=None)
    case(f"list-json-ledger-row-{key}", "list", "--json", setup=_sql(sql), code=None)
case(
    "list-ledger-foreign-schema",
    "list",
    code=None,
    setup=_sql("DROP TABLE certificates", "CREATE TABLE certificates (id INTEGER PRIMARY KEY, what TEXT)"),
)
case("list-ledger-no-table", "list", code=None, setup=_sql("DROP TABLE certificates"))
case(
    "list-ledger-view",
    "list",
    code=None,
    setup=_sql("ALTER TABLE certificates RENAME TO c2", "CREATE VIEW certificates AS SELECT 1 AS x"),
)
case(
    "show-ledger-foreign-schema",
    "show",
    "ntpserver",
    code=None,
    setup=_sql("DROP TABLE certificates", "CREATE TABLE certificates (id INTEGER PRIMARY KEY, what TEXT)"),
)
for v in ["abc", "nan", "1e309", ""]:
    case(f"list-expiring-{v or 'empty'}", "list", "--expiring", v)

# show: names and broken lineage files
for key in ("slash", "dotdot", "empty", "nul", "zwj"):
    case(f"show-name-{key}", "show", HOST_NAMES_BAD[key], code=None)
case("show-missing", "show", "nosuchname", code=None)


def _break_live(kind: str, how):
    def setup(world: World) -> None:
        p = world.h / "live" / "ntpserver" / f"{kind}.pem"
        target = p.resolve()
        target.unlink()
        how(target)

    return setup


for kind in ("cert", "fullchain", "privkey"):
    for key, how in {
        "fifo": _fifo,
        "dev-zero": _link_to("/dev/zero"),
        "sparse": _huge,
        "garbage": _bytes(b"\xff" * 99),
        "directory": _dir,
    }.items():
        case(f"show-{kind}-{key}", "show", "ntpserver", setup=_break_live(kind, how), code=None)

# renewal files (item 3: a broken one is that lineage's error; here the only lineage asked for)
RENEWAL_BAD = {
    "bad-json": b"{not json",
    "list": b"[1, 2, 3]",
    "string": b'"internal"',
    "null": b"null",
    "number": b"42",
    "sans-string": b'{"source": "internal", "sans": "ntpserver"}',
    "sans-numbers": b'{"source": "internal", "sans": [1, 2]}',
    "sans-bad-name": '{"source": "internal", "sans": ["ntp\u200dserver"]}'.encode(),
    "days-string": b'{"source": "internal", "sans": ["ntpserver"], "days": "ninety"}',
    "days-negative": b'{"source": "internal", "sans": ["ntpserver"], "days": -5}',
    "days-huge": b'{"source": "internal", "sans": ["ntpserver"], "days": 1e300}',
    "days-bool": b'{"source": "internal", "sans": ["ntpserver"], "days": true}',
    "key-type-bad": b'{"source": "internal", "sans": ["ntpserver"], "key_type": "dsa-512"}',
    "key-type-number": b'{"source": "internal", "sans": ["ntpserver"], "key_type": 256}',
    "source-unknown": b'{"source": "martian", "sans": ["ntpserver"]}',
    "source-number": b'{"source": 1, "sans": ["ntpserver"]}',
    "acme-no-directory": b'{"source": "acme", "sans": ["ntpserver"], "directory": 5}',
    "latin1": b'{"source": "internal", "sans": ["caf\xe9"]}',
    "nan": b'{"source": "internal", "sans": ["ntpserver"], "days": NaN}',
    "deep": b"[" * 100000 + b"]" * 100000,
}


def _renewal(data):
    def setup(world: World) -> None:
        (world.h / "renewal" / "ntpserver.json").write_bytes(data)

    return setup


def _renewal_file(how):
    def setup(world: World) -> None:
        p = world.h / "renewal" / "ntpserver.json"
        p.unlink()
        how(p)

    return setup


for key, data in RENEWAL_BAD.items():
    case(f"renew-renewal-{key}", "renew", "ntpserver", "--force", "--no-deploy", setup=_renewal(data), code=None)
    case(f"renew-dry-renewal-{key}", "renew", "ntpserver", "--force", "--dry-run", setup=_renewal(data), code=None)
for key, how in {"fifo": _fifo, "dev-zero": _link_to("/dev/zero"), "sparse": _huge, "directory": _dir}.items():
    case(
        f"renew-renewal-file-{key}", "renew", "ntpserver", "--force", "--no-deploy", setup=_renewal_file(how), code=None
    )
    case(f"issue-renewal-file-{key}", "issue", "ntpserver", setup=_renewal_file(how), code=None)
for v in ["nan", "inf", "-1", "1e309", "abc"]:
    case(f"renew-jitter-{v}", "renew", "--jitter", v)


# deploy.toml: each broken one must stop deploy and renew before anything is written or renewed
def _toml(text: str):
    def setup(world: World) -> None:
        (world.h / "deploy.toml").write_text(DEPLOY_TOML + text)

    return setup


def _target(extra: str, name: str = "second") -> str:
    return f'\n[targets.{name}]\nsource = "other"\ncert = "../targets/o.crt"\nkey = "../targets/o.key"\n{extra}\n'


TOML_BAD = {
    "syntax": "[targets.x\n",
    "unknown-key": _target('colour = "blue"'),
    "unknown-section": "\n[extra]\na = 1\n",
    "targets-not-table": None,  # whole-file cases below
    "source-number": _target("source = 1").replace('source = "other"\n', ""),
    "cert-number": _target("").replace('cert = "../targets/o.crt"', "cert = 1"),
    "cert-empty": _target("").replace('cert = "../targets/o.crt"', 'cert = ""'),
    "cert-is-directory": _target("").replace('cert = "../targets/o.crt"', 'cert = "../targets"'),
    "cert-under-a-file": _target("").replace('cert = "../targets/o.crt"', 'cert = "../targets/unrelated.conf/o.crt"'),
    "cert-nul": _target("").replace('cert = "../targets/o.crt"', 'cert = "../targets/o\\u0000.crt"'),
    "key-list": _target("").replace('key = "../targets/o.key"', 'key = ["a"]'),
    "key-equals-cert": _target("").replace('key = "../targets/o.key"', 'key = "../targets/o.crt"'),
    "same-file-two-targets": _target("").replace("o.crt", "ntpserver.crt"),
    "owner-number": _target("owner = 0"),
    "owner-float": _target("owner = 1.5"),
    "owner-unknown": _target('owner = "nosuchuser"'),
    "owner-empty": _target('owner = ""'),
    "owner-huge-uid": _target('owner = "99999999999999"'),
    "owner-negative": _target('owner = "-1"'),
    "group-unknown": _target('group = "nosuchgroup"'),
    "group-number": _target("group = 0"),
    "group-bool": _target("group = true"),
    "group-huge-gid": _target('group = "4294967296"'),
    "key-mode-bool": _target("key_mode = true"),
    "key-mode-float": _target("key_mode = 416.5"),
    "key-mode-world": _target('key_mode = "0644"'),
    "key-mode-setuid": _target('key_mode = "4640"'),
    "key-mode-text": _target('key_mode = "rw-r-----"'),
    "key-mode-negative": _target("key_mode = -1"),
    "key-mode-unreadable": _target('key_mode = "0000"'),
    "cert-mode-huge": _target('cert_mode = "77777"'),
    "cert-mode-world-writable": _target('cert_mode = "0666"'),
    "cert-mode-nan": _target("cert_mode = nan"),
    "service-unknown": _target('service = "ntpd"'),
    "service-number": _target("service = 1"),
    "server-user-number": _target("server_user = 5"),
    "server-user-unknown": _target('server_user = "nosuchuser"'),
    "restart-number": _target("restart_command = 1"),
    "restart-empty": _target('restart_command = ""'),
    "restart-empty-list": _target("restart_command = []"),
    "restart-list-numbers": _target("restart_command = [1, 2]"),
    "restart-unbalanced": _target('restart_command = "echo \\"oops"'),
    "service-conf-number": _target("service_conf = 1"),
    "service-conf-fifo": _target('service_conf = "../conf.fifo"'),
    "probe-number": _target("probe = 4460"),
    "probe-port-0": _target('probe = "127.0.0.1:0"'),
    "probe-port-65536": _target('probe = "127.0.0.1:65536"'),
    "probe-port-negative": _target('probe = "127.0.0.1:-1"'),
    "probe-port-hex": _target('probe = "127.0.0.1:0x10"'),
    "probe-port-text": _target('probe = "127.0.0.1:ntp"'),
    "probe-bad-host": _target('probe = "ntp\u200dserver:4460"'),
    "probe-space": _target('probe = "ntp server:4460"'),
    "probe-ipv6-unbracketed": _target('probe = "::1:4460:"'),
    "probe-ipv6-open": _target('probe = "[::1:4460"'),
    "probe-empty-host": _target('probe = ":4460"'),
    "probe-name-number": _target("probe_name = 7"),
    "probe-name-zwj": _target('probe_name = "ntp\u200dserver"'),
    "timeout-nan": _target("probe_timeout = nan"),
    "timeout-inf": _target("probe_timeout = inf"),
    "timeout-negative": _target("probe_timeout = -1"),
    "timeout-zero": _target("probe_timeout = 0"),
    "timeout-huge": _target("probe_timeout = 1e300"),
    "timeout-huge-int": _target("probe_timeout = 9223372036854775807"),
    "timeout-string": _target('probe_timeout = "10"'),
    "timeout-bool": _target("probe_timeout = true"),
    "ca-number": _target("ca = 1"),
    "ca-list-numbers": _target("ca = [1]"),
    "ca-fifo": _target('ca = ["../conf.fifo"]'),
    "ca-dev-zero": _target('ca = "/dev/zero"'),
    "ca-missing": _target('ca = "../nosuch.pem"'),
    "names-string": _target('names = "other.example"'),
    "names-numbers": _target("names = [1]"),
    "names-zwj": _target('names = ["oth\u200der.example"]'),
    "names-empty-list": _target("names = []"),
    "target-name-slash": _target("", name='"a/b"').replace(
        'cert = "../targets/o.crt"\nkey = "../targets/o.key"\n', 'service_conf = "none"\n'
    ),
    "target-name-dotdot": _target("", name='".."').replace('cert = "../targets/o.crt"\nkey = "../targets/o.key"\n', ""),
    "target-name-dotdot-slash": _target("", name='"../../x"').replace(
        'cert = "../targets/o.crt"\nkey = "../targets/o.key"\n', ""
    ),
    "target-name-empty": _target("", name='""').replace('cert = "../targets/o.crt"\nkey = "../targets/o.key"\n', ""),
    "target-name-nul": _target("", name='"a\\u0000b"').replace(
        'cert = "../targets/o.crt"\nkey = "../targets/o.key"\n', ""
    ),
    "target-name-dot": _target("", name='"."').replace('cert = "../targets/o.crt"\nkey = "../targets/o.key"\n', ""),
}
TOML_WHOLE = {
    "targets-not-table": "targets = 1\n",
    "defaults-not-table": 'defaults = [1]\n[targets.a]\nsource = "ntpserver"\n',
    "target-not-table": "[targets]\nntpserver = 5\n",
    "binary": "\x00\x01\x02",
    "deep-arrays": "a = " + "[" * 5000 + "]" * 5000 + "\n",
}
TOML_FILES = {k: v for k, v in BAD_FILES_NO_MISSING.items()}


def _conf_fifo(world: World) -> None:
    os.mkfifo(world.h.parent / "conf.fifo")


for key, text in TOML_BAD.items():
    if text is None:
        continue
    case(f"deploy-toml-{key}", "deploy", "--all", setup=lambda w, t=text: (_conf_fifo(w), _toml(t)(w)))
    case(f"renew-toml-{key}", "renew", "--force", setup=lambda w, t=text: (_conf_fifo(w), _toml(t)(w)), code=None)
for key, text in TOML_WHOLE.items():
    case(f"deploy-tomlfile-{key}", "deploy", "--all", setup=lambda w, t=text: (w.h / "deploy.toml").write_text(t))
    case(
        f"renew-tomlfile-{key}",
        "renew",
        "--force",
        setup=lambda w, t=text: (w.h / "deploy.toml").write_text(t),
        code=None,
    )
for key, how in TOML_FILES.items():
    case(f"deploy-config-{key}", "deploy", "--all", "--config", "{w}/d.toml", files={"d.toml": how})
    case(f"renew-config-{key}", "renew", "--force", "--deploy-config", "{w}/d.toml", files={"d.toml": how}, code=None)
    case(
        f"renew-dry-config-{key}",
        "renew",
        "--force",
        "--dry-run",
        "--deploy-config",
        "{w}/d.toml",
        files={"d.toml": how},
        code=None,
    )
case("watch-config-missing", "watch", "--config", "{w}/nosuch.toml")
for key in ("fifo", "dev-zero", "directory", "binary", "sparse-64M"):
    case(f"watch-config-{key}", "watch", "--config", "{w}/d.toml", files={"d.toml": BAD_FILES[key]})
for key in ("syntax", "owner-number", "timeout-nan", "probe-port-0", "target-name-dotdot", "cert-is-directory"):
    case(f"watch-toml-{key}", "watch", setup=lambda w, t=TOML_BAD[key]: (_conf_fifo(w), _toml(t)(w)))
for v in ["nan", "inf", "-1", "0"]:
    case(f"watch-poll-interval-{v}", "watch", "--poll", "--poll-interval", v)
    case(f"watch-debounce-{v}", "watch", "--debounce", v) if v != "0" else None


DEPLOY_FLAGS_BAD = {
    "key-mode-world": {"key_mode": "0644"},
    "key-mode-777": {"key_mode": "777"},
    "key-mode-setuid": {"key_mode": "4640"},
    "key-mode-text": {"key_mode": "abc"},
    "key-mode-negative": {"key_mode": "-1"},
    "key-mode-empty": {"key_mode": ""},
    "key-mode-huge": {"key_mode": "7" * 30},
    "key-mode-0000": {"key_mode": "0000"},
    "cert-mode-8": {"cert_mode": "0648"},
    "cert-mode-world-writable": {"cert_mode": "0646"},
    "owner-unknown": {"owner": "nosuchuser"},
    "owner-empty": {"owner": ""},
    "owner-huge": {"owner": "99999999999999"},
    "owner-negative": {"owner": "-5"},
    "owner-nul": {"owner": "ro\x00ot"},
    "group-unknown": {"group": "nosuchgroup"},
    "group-huge": {"group": "4294967296"},
    "group-empty": {"group": ""},
    "cert-empty": {"cert": ""},
    "cert-is-dir": {"cert": "{t}"},
    "cert-trailing-slash": {"cert": "{t}/new/"},
    "cert-under-file": {"cert": "{t}/unrelated.conf/a.crt"},
    "cert-nul": {"cert": "{t}/a\x00.crt"},
    "key-is-dir": {"key": "{t}"},
    "key-equals-cert": {"key": "{t}/a.crt"},
    "key-same-after-normalising": {"key": "{t}/./a.crt"},
    "restart-empty": {"restart_command": ""},
    "restart-blank": {"restart_command": "   "},
    "restart-unbalanced": {"restart_command": "echo 'oops"},
    "service-conf-fifo": {"service_conf": "{w}/conf.fifo"},
    "service-conf-dev-zero": {"service_conf": "/dev/zero"},
    "service-conf-dir": {"service_conf": "{w}"},
    "service-conf-missing": {"service_conf": "{w}/nosuch.conf"},
    "probe-port-0": {"probe": "127.0.0.1:0"},
    "probe-port-65536": {"probe": "127.0.0.1:65536"},
    "probe-port-huge": {"probe": "127.0.0.1:" + "9" * 40},
    "probe-port-negative": {"probe": "127.0.0.1:-1"},
    "probe-port-hex": {"probe": "127.0.0.1:0x10"},
    "probe-port-text": {"probe": "127.0.0.1:http"},
    "probe-port-space": {"probe": "127.0.0.1: 4460"},
    "probe-port-arabic-digits": {"probe": "127.0.0.1:\u0664\u0664\u0666\u0660"},
    "probe-port-plus": {"probe": "127.0.0.1:+4460"},
    "probe-bad-host": {"probe": "ntp\u00adserver:4460"},
    "probe-ipv6-open": {"probe": "[::1:4460"},
    "probe-empty-host": {"probe": ":4460"},
    "probe-zone": {"probe": "[fe80::1%eth0]:4460"},
    "timeout-nan": {"probe": "127.0.0.1:1", "probe_timeout": "nan"},
    "timeout-inf": {"probe": "127.0.0.1:1", "probe_timeout": "inf"},
    "timeout-neg": {"probe": "127.0.0.1:1", "probe_timeout": "-1"},
    "timeout-zero": {"probe": "127.0.0.1:1", "probe_timeout": "0"},
    "timeout-1e309": {"probe": "127.0.0.1:1", "probe_timeout": "1e309"},
    "timeout-huge": {"probe": "127.0.0.1:1", "probe_timeout": "1e12"},
    "timeout-text": {"probe": "127.0.0.1:1", "probe_timeout": "soon"},
    "lineage-missing": {"lineage": "nosuchlineage"},
    "lineage-dotdot": {"lineage": ".."},
    "lineage-dir-missing": {"lineage": "{w}/nosuch"},
    "lineage-dir-fifo": {"lineage": "{w}/conf.fifo"},
    "lineage-dev": {"lineage": "/dev"},
    "service-unknown": {"service": "ntpd"},
    "ca-fifo": {"ca": "{w}/conf.fifo"},
    "ca-dev-zero": {"ca": "/dev/zero"},
    "ca-garbage": {"ca": "{w}/garbage"},
}
for key, changes in DEPLOY_FLAGS_BAD.items():
    case(
        f"deploy-flag-{key}",
        *_oneoff(**changes),
        files={"conf.fifo": _fifo, "garbage": b"\xff\xfe garbage"},
        code=None if key.startswith("lineage-") else 2,
    )
case("deploy-flags-without-lineage", "deploy", "--owner", "root")
case("deploy-nothing-named", "deploy")
case("deploy-unknown-target", "deploy", "nosuchtarget")
case("deploy-no-config", "deploy", "--all", setup=lambda w: (w.h / "deploy.toml").unlink())


def _break_source(kind: str, how):
    def setup(world: World) -> None:
        src = world.w / "certbot-live"
        shutil.copytree(world.h / "live" / "ntpserver", src, symlinks=False)
        (src / f"{kind}.pem").unlink()
        how(src / f"{kind}.pem")

    return setup


for kind in ("privkey", "fullchain", "cert"):
    for key, how in {
        "fifo": _fifo,
        "dev-zero": _link_to("/dev/zero"),
        "sparse": _huge,
        "garbage": _bytes(b"\x00x"),
        "directory": _dir,
        "dangling": _dangling,
    }.items():
        case(
            f"deploy-source-{kind}-{key}",
            *_oneoff(lineage="{w}/certbot-live", ca="{h}/ca/root.pem"),
            setup=_break_source(kind, how),
            code=None,
        )

# probe
for target in [
    "127.0.0.1:0",
    "127.0.0.1:65536",
    "127.0.0.1:-1",
    "127.0.0.1:99999999999999999999",
    "[::1",
    "::1:4460:x",
    ":4460",
    "",
    "ntp\u200dserver",
    "ntp server:4460",
    "127.0.0.1:abc",
    "[fe80::1%eth0]",
    "a" * 300,
    "127.0.0.1:4460:4460",
]:
    case(f"probe-target-{target[:20]!r}", "probe", target, "--no-ntp", code=None)
for v in ["nan", "inf", "-1", "0", "1e309", "abc", "-inf"]:
    case(f"probe-timeout-{v}", "probe", "127.0.0.1:1", "--timeout", v)
    case(f"check-timeout-{v}", "check", "--chrony-conf", "{w}/c.conf", "--timeout", v, files={"c.conf": ""}, code=3)
    case(f"migrate-timeout-{v}", "migrate", "{w}/n.conf", "--timeout", v, files={"n.conf": "server 192.0.2.1\n"})
for v in ["0", "65536", "-1", "nan", "abc"]:
    case(f"probe-port-{v}", "probe", "127.0.0.1", "--port", v)
for v in ["-1", "nan", "inf", "abc"]:
    case(f"probe-warn-days-{v}", "probe", "127.0.0.1:1", "--warn-days", v)
for v in ["0", "-1", "100000", "nan"]:
    case(f"probe-concurrency-{v}", "probe", "127.0.0.1:1", "--concurrency", v)
case("probe-fingerprint-bad", "probe", "127.0.0.1:1", "--expect-fingerprint", "zz")
case("probe-fingerprint-short", "probe", "127.0.0.1:1", "--expect-fingerprint", "ab:cd")
case("probe-serial-bad", "probe", "127.0.0.1:1", "--expect-serial", "xyz")
case("probe-no-target", "probe", code=None)
for key, how in BAD_FILES.items():
    case(f"probe-from-{key}", "probe", "--from", "{w}/list", "--no-ntp", files={"list": how})
    case(f"probe-ca-{key}", "probe", "127.0.0.1:1", "--ca", "{w}/ca.pem", "--no-ntp", files={"ca.pem": how})
case("probe-from-bad-line", "probe", "--from", "{w}/list", "--no-ntp", files={"list": "127.0.0.1:0\n"})
case("probe-ca-not-pem", "probe", "127.0.0.1:1", "--ca", "{w}/ca.pem", files={"ca.pem": "not a certificate\n"})

# check: exit 3 (UNKNOWN) for what cannot be read, reported on stdout as monitoring expects
for key, how in BAD_FILES_NO_MISSING.items():
    case(f"check-conf-{key}", "check", "--chrony-conf", "{w}/c.conf", files={"c.conf": how}, code=None, stdout_ok=True)
    case(
        f"check-include-{key}",
        "check",
        "--chrony-conf",
        "{w}/c.conf",
        files={"c.conf": "include {w}/inc.conf\n", "inc.conf": how},
        code=None,
        stdout_ok=True,
    )
for key, how in BAD_FILES.items():
    case(
        f"check-ca-{key}",
        "check",
        "--chrony-conf",
        "{w}/c.conf",
        "--ca",
        "{w}/ca.pem",
        files={"c.conf": "", "ca.pem": how},
        code=None,
        stdout_ok=True,
    )
    case(
        f"check-trust-bundle-{key}",
        "check",
        "--chrony-conf",
        "{w}/c.conf",
        "--trust-bundle",
        "{w}/b.pem",
        files={"c.conf": "", "b.pem": how},
        code=None,
        stdout_ok=True,
    )
for key in ("fifo", "dev-zero", "dev-urandom", "sparse-64M", "directory"):
    case(
        f"check-serverkey-{key}",
        "check",
        "--chrony-conf",
        "{w}/c.conf",
        files={"c.conf": "ntsserverkey {w}/k.pem\nntsservercert {w}/c.pem\n", "k.pem": BAD_FILES[key], "c.pem": "x"},
        code=None,
        stdout_ok=True,
    )
    case(
        f"check-trustedcerts-{key}",
        "check",
        "--chrony-conf",
        "{w}/c.conf",
        files={"c.conf": "server ntp.example iburst nts\nntstrustedcerts {w}/t.pem\n", "t.pem": BAD_FILES[key]},
        code=None,
        stdout_ok=True,
    )
case("probe-from-stdin-binary", "probe", "--from", "-", stdin="\x00\x01", code=None)
case(
    "check-user-unknown",
    "check",
    "--chrony-conf",
    "{w}/c.conf",
    "--user",
    "nosuchuser",
    files={"c.conf": ""},
    code=None,
    stdout_ok=True,
)
case(
    "check-prometheus-dir",
    "check",
    "--chrony-conf",
    "{w}/c.conf",
    "--prometheus",
    "{t}",
    files={"c.conf": ""},
    code=None,
    stdout_ok=True,
)
for v in ["-1", "nan", "abc"]:
    case(f"check-warn-days-{v}", "check", "--warn-days", v, code=3)

# migrate
for key, how in BAD_FILES.items():
    case(f"migrate-{key}", "migrate", "{w}/n.conf", files={"n.conf": how})
    case(
        f"migrate-include-{key}",
        "migrate",
        "{w}/n.conf",
        files={"n.conf": "server 192.0.2.1\nincludefile {w}/inc.conf\n", "inc.conf": how},
    )
case(
    "migrate-out-is-file",
    "migrate",
    "{w}/n.conf",
    "--out",
    "{t}/unrelated.conf",
    files={"n.conf": "server 192.0.2.1\n"},
    code=None,
)

# ca create on a fresh home: nothing may be created when an option is bad
FRESH = "{w}/fresh"
for v in [
    "",
    "ex ample.com",
    "ex\u200dample.com",
    "-bad.example",
    "a..b",
    "*.example.com",
    "\u00ad.example",
    "a" * 64 + ".com",
    "192.0.2.1",
]:
    case(
        f"ca-create-permit-dns-{v[:12]!r}",
        "--home",
        FRESH,
        "ca",
        "create",
        "--no-passphrase",
        "--permit-dns",
        v,
        home=False,
    )
for v in [
    "10.0.0.0/33",
    "::/129",
    "abc",
    "10.0.0.0/-1",
    "",
    "10.0.0.0/8/8",
    "10.0.0.256/8",
    "fe80::%eth0/64",
    "10.0.0.0/nan",
]:
    case(f"ca-create-permit-ip-{v!r}", "--home", FRESH, "ca", "create", "--no-passphrase", "--permit-ip", v, home=False)
for v in ["", "x" * 200, "a\x00b", "a\nb", "\u202eevil"]:
    case(f"ca-create-name-{v[:8]!r}", "--home", FRESH, "ca", "create", "--no-passphrase", "--name", v, home=False)
for v in ["0", "-1", "36501", "nan", "1e309"]:
    case(f"ca-create-root-days-{v}", "--home", FRESH, "ca", "create", "--no-passphrase", "--root-days", v, home=False)
case(
    "ca-create-intermediate-outlives-root",
    "--home",
    FRESH,
    "ca",
    "create",
    "--no-passphrase",
    "--root-days",
    "10",
    "--intermediate-days",
    "20",
    home=False,
)
PASSPHRASE_BAD = {
    **BAD_FILES,
    "empty": b"",
    "newline-only": b"\n",
    "too-long": b"p" * 2000 + b"\n",
    "non-utf8": b"pass\xff\xfeword\n",
    "nul": b"pass\x00word\n",
    "multi-line": b"first\nsecond\n",
}
for key, how in PASSPHRASE_BAD.items():
    case(
        f"ca-create-passphrase-{key}",
        "--home",
        FRESH,
        "ca",
        "create",
        "--passphrase-file",
        "{w}/pass",
        files={"pass": how},
        home=False,
    )
case(
    "ca-create-passphrase-env-long", "--home", FRESH, "ca", "create", env={"NTSPKI_PASSPHRASE": "p" * 2000}, home=False
)
case("ca-create-no-passphrase-source", "--home", FRESH, "ca", "create", home=False)
case("ca-create-exists", "ca", "create", "--no-passphrase", code=None)
case("ca-create-home-is-file", "--home", "{t}/unrelated.conf", "ca", "create", "--no-passphrase", home=False, code=None)
for key in ("fifo", "dev-zero", "directory", "empty", "too-long", "non-utf8", "sparse-64M"):
    case(
        f"ca-intermediate-passphrase-{key}",
        "ca",
        "intermediate",
        "--passphrase-file",
        "{w}/pass",
        files={"pass": PASSPHRASE_BAD[key]},
        code=None,
    )
    case(
        f"revoke-passphrase-{key}",
        "revoke",
        "ntpserver",
        "--passphrase-file",
        "{w}/pass",
        files={"pass": PASSPHRASE_BAD[key]},
        code=None,
    )
    case(
        f"crl-arl-passphrase-{key}",
        "crl",
        "--arl",
        "--passphrase-file",
        "{w}/pass",
        files={"pass": PASSPHRASE_BAD[key]},
        code=None,
    )
for v in ["0", "-1", "36501", "nan"]:
    case(f"ca-intermediate-days-{v}", "ca", "intermediate", "--intermediate-days", v)
    case(f"ca-status-warn-days-{v}", "ca", "status", "--warn-days", v) if v != "0" else None
for v in ["", "ex ample.com", "ex\u200dample.com", "10.0.0.0/33"]:
    case(
        f"ca-intermediate-permit-{v!r}",
        "ca",
        "intermediate",
        "--permit-dns",
        v,
        "--passphrase-file",
        "{w}/pass",
        files={"pass": "x\n"},
    )
case("ca-status-no-ca", "--home", FRESH, "ca", "status", home=False, code=None)

# csr, sign, install
for key, how in {**BAD_FILES, "empty": b"", "pem-of-cert": None}.items():
    files: dict = {"req.csr": how} if how is not None else {}
    setup = (lambda w: shutil.copy(w.h / "ca" / "root.pem", w.w / "req.csr")) if how is None else None
    case(f"sign-csr-{key}", "sign", "{w}/req.csr", files=files, setup=setup, code=None)
    case(f"install-cert-{key}", "install", "ntpserver", "--cert", "{w}/req.csr", files=files, setup=setup, code=None)
case("sign-csr-stdin-garbage", "sign", "-", stdin="garbage\n", code=None)
case("sign-csr-der-garbage", "sign", "{w}/req.csr", files={"req.csr": b"\x30\x82\xff\xff" + b"\x00" * 50}, code=None)
for key, how in BAD_FILES.items():
    case(
        f"install-root-{key}",
        "install",
        "ntpserver",
        "--cert",
        "{h}/live/ntpserver/fullchain.pem",
        "--root",
        "{w}/root.pem",
        files={"root.pem": how},
        code=None,
    )
case("csr-out-missing-dir", "csr", "newhost", "--out", "{w}/nosuch/dir/req.csr", code=None)
case("csr-out-is-dir", "csr", "newhost", "--out", "{t}", code=None)
case("csr-key-type", "csr", "newhost", "--key-type", "dsa")
case("install-no-pending-key", "install", "nosuchhost", "--cert", "{h}/live/ntpserver/fullchain.pem", code=None)

# revoke
for v in ["zz", "-1", "", "0x", "f" * 1000, "12 34"]:
    case(f"revoke-serial-{v[:10]!r}", "revoke", "--serial", v, code=None)
case("revoke-unknown-name", "revoke", "nosuchname", code=None)
case("revoke-reason-bad", "revoke", "ntpserver", "--reason", "because")
case("revoke-name-and-serial", "revoke", "ntpserver", "--serial", "01", code=None)
for v in ["0", "-1", "nan", "1" + "0" * 30]:
    case(f"crl-arl-days-{v}", "crl", "--arl", "--arl-days", v)

# acme: argument validation, before any network
ACME_BAD = {
    "http-port-0": ["--http-port", "0"],
    "http-port-65536": ["--http-port", "65536"],
    "http-port-negative": ["--http-port", "-1"],
    "dns-wait-nan": ["--dns-wait", "nan", "--dns-hook", "/bin/true"],
    "dns-wait-inf": ["--dns-wait", "inf", "--dns-hook", "/bin/true"],
    "dns-wait-negative": ["--dns-wait", "-1", "--dns-hook", "/bin/true"],
    "directory-ftp": ["--directory", "ftp://example.com/dir"],
    "directory-garbage": ["--directory", "not a url"],
    "directory-empty": ["--directory", ""],
    "webroot-missing": ["--webroot", "{w}/nosuch"],
    "webroot-file": ["--webroot", "{t}/unrelated.conf"],
    "dns-hook-missing": ["--dns-hook", "{w}/nosuch.sh"],
    "eab-kid-only": ["--eab-kid", "kid"],
    "eab-hmac-bad": ["--eab-kid", "kid", "--eab-hmac-key", "!!!not base64!!!"],
    "email-bad": ["--email", "not an address"],
    "email-newline": ["--email", "a@b.c\nx"],
    "http-address-bad": ["--http-address", "999.1.1.1"],
    "ca-bundle-fifo": ["--ca-bundle", "{w}/conf.fifo"],
    "ca-bundle-dev-zero": ["--ca-bundle", "/dev/zero"],
    "ca-bundle-garbage": ["--ca-bundle", "{w}/garbage"],
    "ca-bundle-missing": ["--ca-bundle", "{w}/nosuch"],
    "profile-empty": ["--profile", ""],
    "ip-san-with-dns01": ["--san", "192.0.2.1", "--dns-hook", "/bin/true"],
    "wildcard-http01": ["--san", "*.ntp.example"],
}
for key, extra in ACME_BAD.items():
    case(
        f"acme-issue-{key}",
        "acme",
        "issue",
        "ntp.example",
        "--agree-tos",
        *([] if "--directory" in extra else ["--staging"]),
        *extra,
        files={"conf.fifo": _fifo, "garbage": b"\xff garbage"},
    )
for key in ("eab-hmac-bad", "eab-kid-only", "email-bad", "directory-ftp", "ca-bundle-fifo", "ca-bundle-dev-zero"):
    case(
        f"acme-register-{key}",
        "acme",
        "register",
        "--agree-tos",
        *([] if "--directory" in ACME_BAD[key] else ["--staging"]),
        *ACME_BAD[key],
        files={"conf.fifo": _fifo, "garbage": b"\xff garbage"},
    )

# trust export: both destinations checked before either is written
for key, (out, snippet) in {
    "out-dir": ("{t}", None),
    "out-missing-parent": ("{w}/nosuch/trust.pem", None),
    "out-under-file": ("{t}/unrelated.conf/trust.pem", None),
    "snippet-dir": ("{w}/trust.pem", "{t}"),
    "snippet-missing-parent": ("{w}/trust.pem", "{w}/nosuch/snippet.conf"),
    "same-file": ("{w}/trust.pem", "{w}/trust.pem"),
}.items():
    case(f"trust-export-{key}", "trust", "export", "--out", out, *(["--chrony-snippet", snippet] if snippet else []))
case("trust-export-client-path-relative", "trust", "export", "--out", "{w}/t.pem", "--client-path", "rel/t.pem")
for key in ("fifo", "empty", "too-long", "non-utf8", "dev-zero"):
    case(
        f"ca-rollover-start-passphrase-{key}",
        "ca",
        "rollover",
        "start",
        "--passphrase-file",
        "{w}/pass",
        files={"pass": PASSPHRASE_BAD[key]},
    )
case(
    "ca-rollover-start-outlives",
    "ca",
    "rollover",
    "start",
    "--no-passphrase",
    "--root-days",
    "10",
    "--intermediate-days",
    "20",
)

# the home itself
case("home-is-file", "--home", "{t}/unrelated.conf", "list", home=False, code=None)
case("home-is-fifo", "--home", "{w}/h.fifo", "list", home=False, files={"h.fifo": _fifo}, code=None)
case("home-dev-null", "--home", "/dev/null", "issue", "x", home=False, code=None)
case("home-nul", "--home", "{w}/ho\x00me", "list", home=False, code=None)
case("home-nul-issue", "--home", "{w}/ho\x00me", "issue", "x", home=False, code=None)
case("from-nul", "issue", "--from", "{w}/li\x00st")
case("config-nul", "deploy", "--all", "--config", "{w}/d\x00.toml")
case("chrony-conf-nul", "check", "--chrony-conf", "{w}/c\x00.conf", code=None)  # refused before check runs
case("migrate-nul", "migrate", "{w}/n\x00.conf")
case("sign-nul", "sign", "{w}/r\x00.csr", code=None)
case("passphrase-nul", "--home", FRESH, "ca", "create", "--passphrase-file", "{w}/p\x00ss", home=False)
case("show-name-long", "show", "a" * 5000, code=None)
case("issue-name-long", "issue", "a" * 5000)
case("unknown-command", "frobnicate")
case("misspelt-command", "isue", "x")
case("unknown-option", "issue", "x", "--colour", "blue")

IDS = [c.id for c in CASES]
assert len(IDS) == len(set(IDS)), [i for i in IDS if IDS.count(i) > 1]

# A representative subset also runs the installed command in a subprocess: the real exit path.
SUBPROCESS = [
    c
    for c in CASES
    if c.id
    in {
        "issue-from-fifo",
        "issue-from-dev-zero",
        "issue-from-sparse-64M",
        "issue-name-zwj",
        "issue-san-soft-hyphen",
        "issue-days-1" + "0" * 40,
        "issue-ledger-garbage",
        "list-ledger-row-not-after-garbage",
        "list-ledger-foreign-schema",
        "deploy-toml-owner-number",
        "deploy-toml-timeout-nan",
        "deploy-toml-target-name-dotdot-slash",
        "deploy-toml-probe-port-65536",
        "deploy-config-fifo",
        "deploy-flag-owner-huge",
        "deploy-flag-timeout-inf",
        "deploy-source-privkey-fifo",
        "renew-toml-syntax",
        "renew-renewal-bad-json",
        "renew-jitter-inf",
        "probe-timeout-nan",
        "probe-from-dev-urandom",
        "migrate-fifo",
        "ca-create-passphrase-fifo",
        "ca-create-passphrase-non-utf8",
        "sign-csr-dev-zero",
        "show-cert-fifo",
        "watch-config-fifo",
        "check-timeout-nan",
    }
]


@pytest.mark.parametrize("c", CASES, ids=IDS)
def test_bad_input(world, c):
    check_case(world, c, run_inprocess)


@pytest.mark.parametrize("c", SUBPROCESS, ids=[c.id for c in SUBPROCESS])
def test_bad_input_installed_command(world, c):
    check_case(world, c, run_subprocess)


def test_subprocess_subset_is_all_there():
    assert len(SUBPROCESS) == 29


# ---- one broken lineage never stops the others (item 3) -------------------------------------------


@pytest.mark.parametrize("key", ["bad-json", "list", "sans-numbers", "source-unknown", "days-string"])
def test_renew_reports_the_broken_lineage_and_renews_the_rest(world, key):
    (world.h / "renewal" / "ntpserver.json").write_bytes(RENEWAL_BAD[key])
    before = Home(world.h).versions("other")
    code, out, err, _ = run_inprocess(["--home", str(world.h), "renew", "--force", "--no-deploy", "--json"], None, {})
    assert code == 1, (out, err)
    report = json.loads(out)
    by_name = {o["name"]: o for o in report["lineages"]}
    assert by_name["ntpserver"]["error"] and not by_name["ntpserver"]["renewed"]
    assert "ntpserver.json" in by_name["ntpserver"]["error"]
    assert by_name["other"]["renewed"], report
    assert Home(world.h).versions("other") == before + [max(before) + 1]


@pytest.mark.parametrize("key", ["bad-json", "null", "sans-bad-name"])
def test_renew_dry_run_reports_the_broken_lineage_and_rehearses_the_rest(world, key):
    (world.h / "renewal" / "ntpserver.json").write_bytes(RENEWAL_BAD[key])
    before = snapshot(world.w)
    code, out, err, _ = run_inprocess(["--home", str(world.h), "renew", "--force", "--dry-run", "--json"], None, {})
    assert code == 1, (out, err)
    by_name = {o["name"]: o for o in json.loads(out)["lineages"]}
    assert by_name["ntpserver"]["error"]
    assert by_name["other"]["rehearsal"] and not by_name["other"]["error"]
    assert snapshot(world.w) == before


def test_list_names_the_bad_row_and_still_lists_the_rest(world):
    _sql(LEDGER_BAD["not-after-garbage"])(world)
    code, out, err, _ = run_inprocess(["--home", str(world.h), "list"], None, {})
    assert code == 1
    assert "other" in out
    assert "ntpserver" in err and "not_after" in err


def test_debug_env_shows_the_traceback_for_developers(world, monkeypatch):
    """NTSPKI_DEBUG=1 lets an unexpected exception through; without it, one line."""
    from ntspki.cli import issue as issue_cli

    def boom(*a, **k):
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr("ntspki.issuing.issue.issue", boom)
    assert issue_cli  # imported: the command module is loaded
    code, out, err, _ = run_inprocess(["--home", str(world.h), "issue", "x"], None, {"NTSPKI_DEBUG": ""})
    assert code == 1 and err.count("\n") == 1 and "internal error: RuntimeError: a bug over two lines" in err
    code, out, err, _ = run_inprocess(["--home", str(world.h), "issue", "x"], None, {})
    assert code == 99 and "Traceback" in err and "RuntimeError: a bug" in err


# ---- the one bounded reader ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(BAD_FILES))
def test_read_bounded_refuses_quickly_in_bounded_memory(tmp_path, key):
    from ntspki.errors import NtspkiError
    from ntspki.store import fsutil

    path = tmp_path / "input"
    BAD_FILES[key](path)
    start = time.monotonic()
    with pytest.raises(NtspkiError) as e:
        fsutil.read_bounded(path, 1 << 20, "input")
    assert time.monotonic() - start < 2
    assert str(e.value).startswith(f"cannot read input {path}: ") and "\n" not in str(e.value)
    assert e.value.exit_code == 2


def test_read_bounded_reads_text_up_to_the_limit(tmp_path):
    from ntspki.errors import NtspkiError
    from ntspki.store import fsutil

    p = tmp_path / "ok"
    p.write_text("caf\u00e9\n" * 100)
    assert fsutil.read_bounded(p, p.stat().st_size, "x").decode() == "caf\u00e9\n" * 100
    with pytest.raises(NtspkiError, match="larger than"):
        fsutil.read_bounded(p, p.stat().st_size - 1, "x")
    assert fsutil.read_bounded(Path("/proc/self/status"), 1 << 20, "x")  # st_size 0, still read
    p.write_bytes(b"\x00\xff")
    assert fsutil.read_bounded(p, 10, "x", binary=True) == b"\x00\xff"


def test_every_file_read_goes_through_read_bounded():
    """No unbounded reads of input files anywhere in ntspki (the test labs excepted: they read
    what they wrote themselves)."""
    import re

    root = Path(__file__).parent.parent / "ntspki"
    allowed = {"servers/lab.py", "servers/nslab.py", "errors.py", "store/fsutil.py", "pki/bundle.py"}
    offenders = []
    for path in sorted(root.rglob("*.py")):
        rel = str(path.relative_to(root))
        if rel in allowed:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\.read_(bytes|text)\(|(?<![.\w])open\(", line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


# ---- host names: what IDNA refuses or would drop is an error, never dropped (item 8) --------------

INVISIBLE = {k: v for k, v in HOST_NAMES_BAD.items() if any(not c.isascii() for c in v) and k not in ("emoji",)}


@pytest.mark.parametrize("key", sorted(INVISIBLE))
def test_names_refuse_what_idna_would_drop_or_refuse(key):
    from ntspki.pki import names

    with pytest.raises(names.BadName) as e:
        names.parse_san(INVISIBLE[key] + ".example")
    assert e.value.exit_code == 2 and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "name, alabel",
    [("b\u00fccher.example", "xn--bcher-kva.example"), ("\uff4e\uff54\uff50.example", "ntp.example")],
)
def test_names_still_map_what_idna_maps(name, alabel):
    """Visible characters UTS 46 maps (a fullwidth letter, an umlaut) keep working."""
    from ntspki.pki import names

    assert names.normalize_dns_name(name) == alabel
