"""Benchmark: 200 full NTS probes (NTS-KE over TLS 1.3 + one authenticated NTP exchange) against a
local chronyd with ntsprocesses > 1, against the same check done the usual way: one `chronyd -Q`
process per probe, one at a time.

    ntspki   probe_many(): 200 probes in one process, --concurrency in flight, every one a full
             TLS handshake with chain and name check, NTS-KE records, key export, and an
             AES-SIV-authenticated NTP request/reply with a fresh cookie.
    chronyd  `chronyd -Q -t 5` with `server 127.0.0.1 iburst nts ... maxsamples 1` and the site root
             as ntstrustedcerts (ntspki.servers.lab.chrony_client), sequentially. By default a sample of 20
             runs is timed and extrapolated to 200 (--sequential 200 runs them all).

Goal (issue 3): ntspki >= 10x chronyd -Q. Both are measured in this one run, on this machine.
A third line, ntspki one probe at a time, shows where the gain comes from: on a small machine
the concurrent run is CPU-bound (client and chronyd share the cores), and most of a `chronyd -Q`
run is process start-up plus chronyd's own poll schedule, not the NTS work.

    python benchmarks/probe.py [--probes 200] [--concurrency 32] [--sequential 20] [--ntsprocesses 4] [--strict]

--strict exits 1 when the goal is missed. Must run as root (chronyd starts as root).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ntspki.nts.probe import probe_many  # noqa: E402
from ntspki.servers import lab  # noqa: E402
from tests.conftest import make_site  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--sequential", type=int, default=20, help="chronyd -Q runs actually timed")
    ap.add_argument("--ntsprocesses", type=int, default=4)
    ap.add_argument("--strict", action="store_true")
    args = ap.parse_args()

    base = lab.make_workdir("ntspki-bench-probe-")
    server = None
    try:
        site = make_site(base / "home")
        server = lab.ChronyServer(
            site.live / "privkey.pem",
            site.live / "fullchain.pem",
            workdir=base / "chronyd",
            user="root",
            ntsprocesses=args.ntsprocesses,
        ).start()
        target = f"127.0.0.1:{server.nts_port}"
        warm = probe_many([target], ca_files=[site.root])
        if not warm[0].ok:
            print(f"probe failed: {warm[0].error}", file=sys.stderr)
            return 1

        start = time.perf_counter()
        results = probe_many([target] * args.probes, concurrency=args.concurrency, ca_files=[site.root])
        ntspki_s = time.perf_counter() - start
        failed = [r.error for r in results if not (r.ok and r.authenticated)]
        if failed:
            print(f"{len(failed)} probes failed, e.g.: {failed[0]}", file=sys.stderr)
            return 1
        latencies = sorted(r.elapsed_s for r in results)

        # ntspki one at a time too: how much of the gain is concurrency, how much is no process start-up.
        start = time.perf_counter()
        for _ in range(args.sequential):
            probe_many([target], ca_files=[site.root])
        ntspki_seq_rate = args.sequential / (time.perf_counter() - start)

        times = []
        for _ in range(args.sequential):
            t = time.perf_counter()
            c = lab.chrony_client("127.0.0.1", server.ntp_port, server.nts_port, site.root, timeout=5)
            times.append(time.perf_counter() - t)
            if not c.ok:
                print(f"chronyd -Q failed: {c.output[-500:]}", file=sys.stderr)
                return 1
        chrony_s = sum(times) * args.probes / args.sequential

        ntspki_rate = args.probes / ntspki_s
        chrony_rate = args.probes / chrony_s
        ratio = ntspki_rate / chrony_rate
        print(
            f"chronyd with ntsprocesses {args.ntsprocesses}, "
            f"{args.probes} full probes (NTS-KE + authenticated NTP) against 127.0.0.1"
        )
        print(
            f"ntspki probe_many, concurrency {args.concurrency}: {ntspki_s:7.2f} s  {ntspki_rate:8.1f} probes/s"
            f"   (per probe: median {statistics.median(latencies) * 1000:.1f} ms, "
            f"max {latencies[-1] * 1000:.1f} ms)"
        )
        print(
            f"ntspki probe, one at a time:    {args.probes / ntspki_seq_rate:7.2f} s  {ntspki_seq_rate:8.1f} probes/s"
            f"   (extrapolated from {args.sequential} timed probes)"
        )
        extrapolated = (
            ""
            if args.sequential == args.probes
            else (
                f"   (extrapolated from {args.sequential} timed runs, median {statistics.median(times) * 1000:.0f} ms)"
            )
        )
        print(f"chronyd -Q, one at a time:      {chrony_s:7.2f} s  {chrony_rate:8.1f} probes/s{extrapolated}")
        print(f"ratio: {ratio:.1f}x (goal >= 10x) {'MET' if ratio >= 10 else 'MISSED'}")
        return 1 if args.strict and ratio < 10 else 0
    finally:
        if server:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
