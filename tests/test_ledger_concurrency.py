"""Several `ntspki issue` processes at once: the lock keeps versions unique and the ledger whole."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading

from cryptography import x509

from ntspki import pki
from ntspki.pki import verify
from ntspki.store import FILES, Home
from ntspki.store.ledger import Ledger
from tests.conftest import NTSPKI, run_cli

SAME = "ntp.example.net"


def start(home, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [*NTSPKI, "--home", str(home), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_concurrent_issues_never_share_a_version_or_corrupt_the_ledger(tmp_path):
    home = Home(tmp_path / "home")
    run_cli("ca", "create", "--no-passphrase", home=home.path, check=True)
    batch = tmp_path / "fleet.txt"
    batch.write_text(f"{SAME}\n" + "".join(f"b{i}.example.net 192.0.2.{i}\n" for i in range(40)))

    expected: dict[str, int] = {}
    singles, batches, readers = [], [], []
    for round_ in range(2):
        procs = []
        for i in range(6):  # the same name from six processes
            procs.append(
                ("single", start(home.path, "issue", SAME, "--san", f"192.0.2.{200 + i}", "--allow-change", "--json"))
            )
            expected[SAME] = expected.get(SAME, 0) + 1
        for i in range(4):  # different names
            name = f"n{round_}-{i}.example.net"
            procs.append(("single", start(home.path, "issue", name, "--json")))
            expected[name] = 1
        for _ in range(2):  # two batches, both holding SAME and the same 40 names
            procs.append(("batch", start(home.path, "issue", "--from", batch, "--allow-change", "--json")))
            expected[SAME] += 1
            for i in range(40):
                expected[f"b{i}.example.net"] = expected.get(f"b{i}.example.net", 0) + 1
        procs.append(("reader", start(home.path, "list", "--json")))  # readers never block or fail
        for kind, proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            assert "Traceback" not in err
            {"single": singles, "batch": batches, "reader": readers}[kind].append(json.loads(out))

    # Every process got its own version of SAME: 1..N, no gaps, none twice.
    same_versions = [r["version"] for r in singles if r["name"] == SAME]
    same_versions += [r["version"] for b in batches for r in b if r["name"] == SAME]
    assert sorted(same_versions) == list(range(1, expected[SAME] + 1))
    b0_versions = sorted(r["version"] for b in batches for r in b if r["name"] == "b0.example.net")
    assert b0_versions == [1, 2, 3, 4]

    db = sqlite3.connect(home.ledger_path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    rows = db.execute("SELECT name, version, sha256, serial FROM certificates").fetchall()
    on_disk = {(name, v) for name in home.lineage_names() for v in home.versions(name)}
    assert {(n, v) for n, v, _, _ in rows} == on_disk  # ledger rows == versions on disk
    assert len(rows) == len(on_disk) == sum(expected.values())
    assert {name: len(home.versions(name)) for name in home.lineage_names()} == expected

    # Each row describes the very certificate written under its version (no cross-talk between writers).
    for name, version, sha256, serial in rows:
        cert = x509.load_pem_x509_certificate((home.archive / name / f"cert{version}.pem").read_bytes())
        assert pki.fingerprint(cert) == sha256 and format(cert.serial_number, "x") == serial
    assert len({sha for _, _, sha, _ in rows}) == len(rows)

    # live/ of each lineage points, consistently, at its newest version, whose files belong together.
    root = x509.load_pem_x509_certificates((home.ca_dir / "root.pem").read_bytes())
    for name in home.lineage_names():
        newest = max(home.versions(name))
        assert set(home.live_versions(name).values()) == {newest}
        lineage = home.read_lineage(name)
        verify.verify_chain(root, x509.load_pem_x509_certificates(lineage.fullchain))
        assert lineage.fullchain == lineage.cert + lineage.chain
    assert not [p for d in home.archive.iterdir() for p in d.iterdir() if p.name.startswith(".")]
    for name in home.lineage_names():
        assert sorted(os.listdir(home.archive / name)) == sorted(
            f"{kind}{v}.pem" for kind in FILES for v in home.versions(name)
        )


def test_a_reader_never_sees_a_ledger_without_its_tables(tmp_path):
    """The first `issue` creates the ledger while `list` reads: the reader finds no ledger, or a
    whole one (CI once caught `list` between the file's creation and its tables)."""
    seen = 0
    for i in range(150):
        path = tmp_path / f"ledger{i}.sqlite3"
        writer = threading.Thread(target=lambda p=path: Ledger(p).close())
        writer.start()
        while True:
            done = not writer.is_alive()
            if os.path.lexists(path):
                reader = Ledger(path, readonly=True)
                assert reader.rows() == []
                reader.close()
                seen += 1
            if done:
                break
        writer.join()
    assert seen >= 150  # every round read the ledger at least once (after the writer, at the latest)
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp ledger left
