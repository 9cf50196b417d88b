"""SIGKILL `ntspki issue` and `ntspki issue --from` while they write: the previous versions stay
intact, live/ never points at a partial file, and the next issue succeeds.

The kill is aimed: the test watches the archive directory and kills the moment the new version's
first file (or temp file) appears, plus a random few milliseconds, so it lands inside the write and
the link switch rather than in interpreter start-up. No hooks in ntspki itself."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import stat
import subprocess
import time
from collections import Counter

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ntspki.pki import keys, verify
from ntspki.store import FILES, Home
from tests.conftest import NTSPKI, run_cli

NAME = "ntpserver"


def snapshot(home: Home) -> dict[tuple[str, int, str], bytes]:
    """The bytes of every version that went live (the next write removes only versions that never
    did: incomplete ones, and complete ones a kill stopped before the switch)."""
    return {
        (name, v, kind): (home.archive / name / f"{kind}{v}.pem").read_bytes()
        for name in os.listdir(home.archive)
        for v in home.versions(name)
        if v <= (home.live_version(name) or 0)
        for kind in FILES
    }


def check_home(home: Home, before: dict, root: list[x509.Certificate]) -> str:
    """Invariants that hold whenever a writer dies; returns how the lineages look ("consistent")."""
    for (name, v, kind), data in before.items():
        assert (home.archive / name / f"{kind}{v}.pem").read_bytes() == data, (name, v, kind)  # untouched
    state = "consistent"
    for name in home.lineage_names():
        complete = set(home.versions(name))
        linked = home.live_versions(name)
        for kind, v in linked.items():
            # A link is there or not (a new lineage's first links); never one to a partial version.
            assert v is None or v in complete, (name, kind, v, complete)
        # live/NAME switches in one rename: never four links of two versions (certbot's window)
        assert len(set(linked.values())) == 1 and None not in linked.values(), (name, linked)
        lineage = home.read_lineage(name)
        chain = x509.load_pem_x509_certificates(lineage.fullchain)
        assert lineage.fullchain == lineage.cert + lineage.chain
        assert keys.key_matches_cert(serialization.load_pem_private_key(lineage.privkey, None), chain[0])
        verify.verify_chain(root, chain)
    for d in home.archive.iterdir():
        for p in d.iterdir():  # leftovers of a killed writer: never readable by others
            if "privkey" in p.name:
                assert stat.S_IMODE(p.lstat().st_mode) == 0o600, p
    db = sqlite3.connect(home.ledger_path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = set(db.execute("SELECT name, version FROM certificates"))
    finally:
        db.close()
    on_disk = {(name, v) for name in os.listdir(home.archive) for v in home.versions(name)}
    assert rows <= on_disk  # the ledger never names a version that is not on disk
    return state


def kill_while_writing(cmd: list[str], started, max_delay: float = 0.015) -> str:
    """Run cmd; SIGKILL it a random 0..max_delay s after `started()` is first true.
    Returns 'killed' or 'finished'."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not started() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.0002)
    time.sleep(random.uniform(0, max_delay))
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert b"Traceback" not in err
    return "finished" if proc.returncode == 0 else "killed"


def new_files(directory):
    """True once `directory` holds a name it did not hold when this was called (a new version's file
    or temp file: the writer is past start-up and into its writes)."""
    try:
        before = set(os.listdir(directory))
    except FileNotFoundError:
        before = set()

    def started() -> bool:
        try:
            return bool(set(os.listdir(directory)) - before)
        except FileNotFoundError:
            return False

    return started


def test_sigkill_single_issue_keeps_previous_version(tmp_path):
    random.seed(os.getpid())
    home = Home(tmp_path / "home")
    run_cli("ca", "create", "--no-passphrase", home=home.path, check=True)
    run_cli("issue", NAME, "--san", "127.0.0.1", home=home.path, check=True)
    root = x509.load_pem_x509_certificates((home.ca_dir / "root.pem").read_bytes())
    outcomes, states = Counter(), Counter()
    cmd = [*NTSPKI, "--home", str(home.path), "issue", NAME, "--san", "127.0.0.1", "--san", "::1", "--allow-change"]
    for i in range(24):
        before = snapshot(home)
        # A single issue writes its version and switches live/ in about 2.5 ms (measured here):
        # aim inside that window.
        outcomes[kill_while_writing(cmd, new_files(home.archive / NAME), max_delay=0.003)] += 1
        states[check_home(home, before, root)] += 1
        if i % 3 == 2:  # the next issue succeeds, whatever state the kill left, with a fresh number
            taken = max(
                int(m.group(1)) for n in os.listdir(home.archive / NAME) if (m := re.fullmatch(r"[a-z]+(\d+)\.pem", n))
            )
            proc = run_cli("issue", NAME, "--json", home=home.path, check=True)
            assert json.loads(proc.stdout)["version"] == taken + 1
            assert check_home(home, snapshot(home), root) == "consistent"
            # ... and the ledger caught up with every version a kill left on disk unrecorded.
            db = sqlite3.connect(home.ledger_path)
            recorded = {v for (v,) in db.execute("SELECT version FROM certificates WHERE name = ?", (NAME,))}
            db.close()
            assert recorded == set(home.versions(NAME))
    proc = run_cli("issue", NAME, home=home.path, check=True)
    assert check_home(home, snapshot(home), root) == "consistent"
    assert home.read_lineage(NAME).version == max(home.versions(NAME))
    # The kills did land mid-write: some left a partial (or never switched) new version, which a
    # later run removed: a gap in the version numbers (never reused).
    partial = sum(1 for v in range(1, max(home.versions(NAME))) if v not in home.versions(NAME))
    print("single issue:", outcomes, states, "partial versions", partial)
    assert outcomes["killed"] >= 12, outcomes
    assert partial >= 3, (outcomes, states, partial)


def test_sigkill_batch_keeps_previous_versions(tmp_path):
    random.seed(os.getpid() + 1)
    home = Home(tmp_path / "home")
    run_cli("ca", "create", "--no-passphrase", home=home.path, check=True)
    batch = tmp_path / "fleet.txt"
    names = [f"ntp{i}.example.net" for i in range(60)]
    batch.write_text("".join(f"{n} 192.0.2.{i}\n" for i, n in enumerate(names)))
    run_cli("issue", "--from", batch, home=home.path, check=True)
    root = x509.load_pem_x509_certificates((home.ca_dir / "root.pem").read_bytes())
    cmd = [*NTSPKI, "--home", str(home.path), "issue", "--from", str(batch)]
    outcomes, states = Counter(), Counter()
    for i in range(10):
        before = snapshot(home)
        outcomes[kill_while_writing(cmd, new_files(home.archive / names[0]))] += 1
        states[check_home(home, before, root)] += 1
        if i % 3 == 2:
            run_cli("issue", "--from", batch, home=home.path, check=True)
            assert check_home(home, snapshot(home), root) == "consistent"
    run_cli("issue", "--from", batch, home=home.path, check=True)
    assert check_home(home, snapshot(home), root) == "consistent"
    counts = Counter(max(home.versions(n)) for n in names)
    print("batch:", outcomes, states, "lineage versions", counts)
    assert outcomes["killed"] >= 5, outcomes
    assert len(counts) > 1, counts  # kills landed part-way through the fleet: lineages differ in version
    # Every lineage's ledger rows match its versions on disk, once the next batch went through.
    db = sqlite3.connect(home.ledger_path)
    latest = dict(db.execute("SELECT name, MAX(version) FROM certificates GROUP BY name"))
    db.close()
    assert latest == {n: max(home.versions(n)) for n in names}
