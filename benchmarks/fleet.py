"""Benchmark: rolling NTS certificates out to a fleet with the Ansible collection, on the real
multi-host lab of tests/fleet_env.py (network namespaces with sshd and chronyd).

    rollout    `site.yml` (first roll-out), then `renew.yml -e force=true` (every server renewed,
               one at a time) while a loop probes every server's NTS-KE (chain and name checked)
               from the control node every 0.2 s
    probing    the same fleet probed all at once (probe_many, one thread per server) and one
               server after the other, full probes (NTS-KE + authenticated NTP)

Prints the rollout times (total and per server), the NTS-KE availability during the renewal (the
fewest servers valid at any moment, and the share of samples with every server valid), and the
concurrent/sequential probing ratio.

    python benchmarks/fleet.py [--servers 3] [--clients 1] [--rounds 20]

Must run as root (namespaces, chronyd).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ntspki.nts.probe import probe_many  # noqa: E402
from ntspki.servers.lab import make_workdir  # noqa: E402
from tests.fleet_env import FleetLab  # noqa: E402
from tests.test_fleet import Watch, output, play  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", type=int, default=3)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=20, help="probes of the whole fleet, each way")
    args = ap.parse_args()

    lab = FleetLab(make_workdir("ntspki-bench-fleet-"), servers=args.servers, clients=args.clients)
    try:
        lab.start()
        lab.make_ca()
        lab.inventory_path = lab.inventory()
        lab.env = lab.ansible_env()
        n = len(lab.servers)

        start = time.perf_counter()
        proc, _ = play(lab, "site.yml")
        site_s = time.perf_counter() - start
        if proc.returncode != 0:
            print(output(proc), file=sys.stderr)
            return 1

        start = time.perf_counter()
        with Watch(lab) as watch:
            proc, _ = play(lab, "renew.yml", "-e", "force=true")
        renew_s = time.perf_counter() - start
        if proc.returncode != 0:
            print(output(proc), file=sys.stderr)
            return 1
        valid = [sum(ok) for _, ok in watch.samples]

        root = [lab.ca.ntspki_home / "ca" / "root.pem"]
        targets = [f"{h.ip4}:4460" for h in lab.servers]
        # By address: every lab server's certificate holds its addresses as IP SANs.
        start = time.perf_counter()
        for _ in range(args.rounds):
            results = probe_many(targets, concurrency=n, ca_files=root)
        together = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(args.rounds):
            for t in targets:
                results += probe_many([t], ca_files=root)
        one_by_one = time.perf_counter() - start
        failed = [r.error for r in results if not r.ok]
        if failed:
            print(f"probes failed, e.g.: {failed[0]}", file=sys.stderr)
            return 1

        print(f"fleet: {n} servers, {len(lab.clients)} clients, each a network namespace with sshd and chronyd")
        print(f"site.yml (first roll-out):         {site_s:6.1f} s   {site_s / n:5.1f} s per server")
        print(f"renew.yml -e force=true (rolling): {renew_s:6.1f} s   {renew_s / n:5.1f} s per server")
        print(
            f"NTS-KE availability during renewal: {len(valid)} samples, fewest valid servers {min(valid)} of {n} "
            f"(goal >= {n - 1}), all {n} valid in {sum(v == n for v in valid) / len(valid):.0%} of samples"
        )
        print(
            f"probing the fleet ({args.rounds} rounds of {n} full probes): together {together:.2f} s, "
            f"one by one {one_by_one:.2f} s, ratio {one_by_one / together:.2f}x"
        )
        return 0 if min(valid) >= n - 1 else 1
    finally:
        lab.stop()
        shutil.rmtree(lab.root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
