"""A lineage switches all four files at once.

A reader in another process that enters live/NAME once (a directory fd) and reads the four files
never sees two versions, across thousands of re-issues; and a SIGKILL at every step of a switch
(`tests.pause_at`: deterministic, no timing) leaves live/NAME at the old version or the new one,
entirely, in the current layout, in the earlier one (live/NAME a directory of four links, converted
by the next write) and on a file system without RENAME_EXCHANGE. The next run leaves the ledger
matching the disk and nothing of the killed run behind."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from ntspki import pki
from ntspki.issuing import ca as ca_mod
from ntspki.issuing import issue
from ntspki.pki import keys, verify
from ntspki.store import FILES, Home, live
from tests import pause_at
from tests.conftest import NTSPKI

ROOT = Path(__file__).resolve().parent.parent
NAME = "ntp.example.net"

# The reader: enter live/NAME once, read the four files relative to it; a version directory that
# a switch removed under it is retried (counted). It reports each distinct (key, cert) pair once,
# so the test can check that every pair it saw belongs together.
READER = r"""
import hashlib, json, os, sys
live_dir, rounds, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
files = ("privkey", "cert", "chain", "fullchain")
pairs, reads, retries, bad_fullchain, versions = {}, 0, 0, 0, set()
print("ready", flush=True)
done = 0
while done < rounds or not os.path.exists(stop):
    try:  # entering live/NAME can race the removal of the version it pointed at: retried too
        dfd = os.open(live_dir, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        retries += 1
        continue
    try:
        data = {}
        for kind in files:
            fd = os.open(kind + ".pem", os.O_RDONLY, dir_fd=dfd)
            try:
                data[kind] = os.read(fd, 1 << 16)
            finally:
                os.close(fd)
            reads += 1
    except FileNotFoundError:
        retries += 1
        continue
    finally:
        os.close(dfd)
    done += 1
    if data["fullchain"] != data["cert"] + data["chain"]:
        bad_fullchain += 1
    key = hashlib.sha256(data["privkey"] + b"|" + data["cert"]).hexdigest()
    if key not in pairs:
        pairs[key] = (data["privkey"].decode(), data["cert"].decode())
json.dump({"reads": reads, "retries": retries, "bad_fullchain": bad_fullchain, "pairs": list(pairs.values())}, sys.stdout)
"""


def _materials(ca: ca_mod.CA, count: int) -> list[tuple[bytes, bytes, pki.CertInfo]]:
    out = []
    for _ in range(count):
        key = keys.generate("ec-p256")
        cert = pki.make_leaf(key, ca.intermediate, ca.intermediate_key, [x509.DNSName(NAME)])
        out.append((keys.private_pem(key), pki.cert_pem(cert), pki.CertInfo.of(cert)))
    return out


def test_a_reader_never_sees_two_versions(tmp_path):
    home = Home(tmp_path / "home")
    ca_mod.create(home, passphrase=None)
    issue.issue(home, NAME)
    ca = ca_mod.load(home)
    materials = _materials(ca, 4)
    rounds, stop = 25_000, tmp_path / "stop"  # x4 files: 100,000 file reads at least
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(home.live / NAME), str(rounds), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout is not None
    assert reader.stdout.readline().strip() == "ready"
    switches = 0
    deadline = time.monotonic() + 300
    while reader.poll() is None and time.monotonic() < deadline:
        if switches % 25 == 24:
            issue.issue(home, NAME)  # the whole product path, durable
        else:  # the same switch, faster: more of them overlap the reads
            key_pem, cert_pem, info = materials[switches % len(materials)]
            with home.lock():
                version = home.write_version(NAME, key_pem, cert_pem, ca.chain_pem, durable=False)
                home.ledger.record(NAME, version, info, "ec-p256", "internal")
        switches += 1
        if switches == 500:
            stop.touch()
    out, _ = reader.communicate(timeout=60)
    assert reader.returncode == 0
    result = json.loads(out)
    print(
        f"{result['reads']} file reads, {switches} switches, {result['retries']} retries, {len(result['pairs'])} pairs"
    )
    assert result["reads"] >= 100_000 and switches >= 500, (result["reads"], switches)
    assert len(result["pairs"]) >= 4  # it did read across many versions
    assert result["bad_fullchain"] == 0
    for key_pem, cert_pem in result["pairs"]:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        assert keys.key_matches_cert(keys.load_private_pem(key_pem.encode()), cert), "a key with another version's cert"
    # ntspki's own reader agrees, and the switches left nothing behind
    lineage = home.read_lineage(NAME)
    assert lineage.version == max(home.versions(NAME)) == switches + 1
    assert sorted(os.listdir(home.live)) == [live.version_dir(NAME, lineage.version), NAME]


# ---- the kill sweep ------------------------------------------------------------------------------


def _kill_at(step: str, home: Home, *args: str, no_exchange: bool = False) -> None:
    pause_at.kill_at(step, "--home", str(home.path), *args, no_exchange=no_exchange)


def _run(home: Home, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([*NTSPKI, "--home", str(home.path), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A home whose lineages are at version 2 (copied for each case)."""
    home = Home(tmp_path_factory.mktemp("template") / "home")
    ca_mod.create(home, passphrase=None)
    for name in (NAME, *BATCH):
        for _ in range(2):
            issue.issue(home, name)
    return home.path


def _earlier_layout(home: Home, name: str) -> None:
    """live/NAME as ntspki wrote it before version directories: a directory of four links."""
    link = home.live / name
    target = link.resolve()
    os.unlink(link)
    shutil.rmtree(target)
    link.mkdir(mode=0o700)
    v = max(home.versions(name))
    for kind in FILES:
        os.symlink(f"../../archive/{name}/{kind}{v}.pem", link / f"{kind}.pem")


def _home(template: Path, tmp_path: Path, layout: str, names) -> Home:
    shutil.copytree(template, tmp_path / "home", symlinks=True)
    home = Home(tmp_path / "home")
    if layout != "current":
        for name in names:
            _earlier_layout(home, name)
    return home


def _check_whole(home: Home, name: str, root) -> int:
    """live/NAME is one version entirely, read both ways; its number."""
    lineage = home.read_lineage(name)
    by_path = {kind: (home.live / name / f"{kind}.pem").read_bytes() for kind in FILES}  # nothing is writing now
    assert by_path == {kind: getattr(lineage, kind) for kind in FILES}
    assert set(home.live_versions(name).values()) == {lineage.version}
    chain = pki.load_certs(lineage.fullchain)
    assert lineage.fullchain == lineage.cert + lineage.chain
    assert keys.key_matches_cert(keys.load_private_pem(lineage.privkey), chain[0])
    verify.verify_chain(root, chain)
    return lineage.version


def _check_tidy(home: Home, names) -> None:
    """After a completed run: nothing of a killed one left, and the ledger matches the disk."""
    db = sqlite3.connect(home.ledger_path)
    try:
        rows = set(db.execute("SELECT name, version FROM certificates"))
    finally:
        db.close()
    expected_live = []
    for name in names:
        v = home.live_version(name)
        assert v == max(home.versions(name))
        expected_live += [name, live.version_dir(name, v)]
        assert sorted(os.listdir(home.archive / name)) == sorted(
            f"{kind}{n}.pem" for kind in FILES for n in home.versions(name)
        )  # complete versions only, no temp files
        assert {v for n, v in rows if n == name} == set(home.versions(name))
    ours = [e for e in os.listdir(home.live) if e in names or any(e.startswith(f".{n}.") for n in names)]
    assert sorted(ours) == sorted(expected_live)


SINGLE = {
    "current": [s for s in live.STEPS if s not in ("set-aside", "exchanged")],
    "earlier": [s for s in live.STEPS if s != "set-aside"],
    "earlier-no-exchange": [s for s in live.STEPS if s != "exchanged"],
}


@pytest.mark.parametrize(("layout", "step"), [(layout, step) for layout, steps in SINGLE.items() for step in steps])
def test_sigkill_at_every_step_of_a_switch(template, tmp_path, layout, step):
    home = _home(template, tmp_path, layout, [NAME])
    root = [ca_mod.load(home).root]
    _kill_at(step, home, "issue", NAME, no_exchange=layout.endswith("no-exchange"))
    if step == "set-aside":
        # The one instant of the fallback: live/NAME is missing (never a mix); the next write undoes it.
        assert not os.path.lexists(home.live / NAME) and (home.live / f".{NAME}.old").is_dir()
    else:
        switched = live.STEPS.index(step) >= live.STEPS.index("exchanged")
        assert _check_whole(home, NAME, root) == (3 if switched else 2), step
    # The next run: a fresh number (never one the killed run used), the ledger caught up, nothing left over.
    assert json.loads(_run(home, "issue", NAME, "--json").stdout)["version"] == 4
    assert _check_whole(home, NAME, root) == 4
    _check_tidy(home, [NAME])
    assert home.versions(NAME) == ([1, 2, 3, 4] if step in ("exchanged", "switched") else [1, 2, 4])


def test_sigkill_while_writing_the_renewal_file(template, tmp_path):
    """After the switch, before the renewal file's rename: the next run removes the temp file
    (a complete copy of the renewal parameters) and records the switched version in the ledger."""
    home = _home(template, tmp_path, "current", [NAME])
    root = [ca_mod.load(home).root]
    _kill_at(f"before-rename:{NAME}.json", home, "issue", NAME)
    assert [p.name for p in home.renewal.iterdir() if p.name.endswith(".tmp")]
    assert _check_whole(home, NAME, root) == 3
    assert json.loads(_run(home, "issue", NAME, "--json").stdout)["version"] == 4
    assert not [p.name for p in home.renewal.iterdir() if p.name.endswith(".tmp")]
    _check_tidy(home, [NAME])


BATCH = [f"b{i}.example.net" for i in range(4)]


@pytest.mark.parametrize("step", [s for s in live.STEPS if s not in ("set-aside", "exchanged")])
def test_sigkill_a_batch_at_every_step(template, tmp_path, step):
    """Killed at the third lineage's step: each lineage is at its old or its new version."""
    home = _home(template, tmp_path, "current", BATCH)
    root = [ca_mod.load(home).root]
    batch = tmp_path / "fleet.txt"
    batch.write_text("".join(f"{n}\n" for n in BATCH))
    _kill_at(f"{step}#3", home, "issue", "--from", str(batch))
    seen = [_check_whole(home, name, root) for name in BATCH]
    # Every new version is complete before the first switch; then they switch in order.
    switching = live.STEPS.index(step) >= live.STEPS.index("switch-link")
    expected = {"switch-link": [3, 3, 2, 2], "switched": [3, 3, 3, 2]}.get(step, [2, 2, 2, 2])
    assert seen == expected, (step, seen)
    _run(home, "issue", "--from", str(batch))
    # A number the killed run used is never reused (the fourth lineage's was, when it got that far).
    after = [4, 4, 4, 4] if switching else [4, 4, 4, 3]
    assert [_check_whole(home, name, root) for name in BATCH] == after
    _check_tidy(home, BATCH)
