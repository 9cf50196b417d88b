"""Benchmark: how long a renewed certificate waits before chronyd serves it, with `ntspki watch`.

20 renewals (new ntspki versions of a lineage) while the real `ntspki watch` runs against a real
chronyd (as `_chrony`, restarted from outside like `systemctl restart chrony`). For each renewal,
measured from the moment the new version is complete in live/:

    deployed  the new certificate is at the destination chronyd reads
    served    chronyd serves it on its NTS-KE port (TLS 1.3, ALPN ntske/1)

Goals (issue 4): median time to deployed < 0.5 s; served within restart time + 1 s.
Compared, in the same run, with waiting for certbot's stock timer (Debian's certbot.timer:
OnCalendar=00,12:00 with RandomizedDelaySec=12h) to pick a change up: simulated over a year of
runs on that schedule, for changes at random moments.

    python benchmarks/watch_latency.py [--renewals 20] [--debounce 0.2] [--strict]

--strict exits 1 when a goal is missed. Must run as root (chronyd starts as root).
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ntspki.nts import probe  # noqa: E402
from ntspki.nts.ntske import ProtocolError  # noqa: E402
from tests.conftest import NTSPKI  # noqa: E402
from tests.deploy_env import DeployLab  # noqa: E402


def certbot_timer_waits(samples: int = 100_000, seed: int = 1) -> list[float]:
    """Seconds from a change at a random moment to the next run of Debian's certbot.timer."""
    rng = random.Random(seed)
    day, half = 86400.0, 43200.0
    runs = sorted(d * day + slot + rng.uniform(0, half) for d in range(366) for slot in (0.0, half))
    waits = []
    for _ in range(samples):
        t = rng.uniform(day, 365 * day)
        waits.append(next(r for r in runs if r >= t) - t)
    return waits


def restart_seconds(dl: DeployLab, n: int = 3) -> float:
    times = []
    for _ in range(n):
        t0 = time.monotonic()
        subprocess.run(dl.server.restart_command(), check=True, capture_output=True)
        times.append(time.monotonic() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--renewals", type=int, default=20)
    ap.add_argument("--debounce", type=float, default=0.2)
    ap.add_argument("--strict", action="store_true")
    args = ap.parse_args()

    dl = DeployLab()
    watcher = None
    try:
        dl.write_config({"ntpserver": dl.settings(restart_command=dl.server.restart_command())})
        restart = restart_seconds(dl)
        log = open(dl.root / "watch.log", "w")
        watcher = subprocess.Popen(
            [*NTSPKI, "--home", str(dl.home.path), "watch", "--debounce", str(args.debounce)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        while "watching" not in (dl.root / "watch.log").read_text():
            time.sleep(0.05)
        time.sleep(1.0)  # let the start-up catch-up finish
        deployed, served = [], []
        for i in range(args.renewals):
            want = dl.new_version()
            t0 = time.monotonic()  # the new version is complete in live/
            while (pair := dl.deployed()) is None or pair.fingerprint != want:
                time.sleep(0.001)
            deployed.append(time.monotonic() - t0)
            while True:
                try:
                    if probe.served_fingerprint("127.0.0.1", dl.server.nts_port, "ntpserver", 1.0) == want:
                        break
                except ProtocolError:  # chronyd is restarting
                    pass
                time.sleep(0.01)
            served.append(time.monotonic() - t0)
            # The watcher reports each run when its probe is done: wait for it before the next one.
            while (dl.root / "watch.log").read_text().count("deployed: deployed and served") < i + 1:
                time.sleep(0.01)
            print(
                f"renewal {i + 1:2d}: deployed after {deployed[-1]:.3f} s, served after {served[-1]:.3f} s",
                file=sys.stderr,
            )
    finally:
        if watcher is not None:
            watcher.terminate()
            watcher.wait(timeout=10)
        dl.stop()

    waits = certbot_timer_waits()
    med_d, max_d = statistics.median(deployed), max(deployed)
    med_s, max_s = statistics.median(served), max(served)
    med_t, max_t = statistics.median(waits), max(waits)
    print(f"ntspki watch, {len(deployed)} renewals against chronyd as _chrony (debounce {args.debounce} s):")
    print(f"  to deployed: median {med_d:.3f} s, max {max_d:.3f} s   (goal: median < 0.5 s)")
    print(
        f"  to served:   median {med_s:.3f} s, max {max_s:.3f} s   (goal: < restart {restart:.3f} s + 1 s "
        f"= {restart + 1:.3f} s)"
    )
    print("certbot.timer (twice a day, RandomizedDelaySec=12h), simulated, change at a random moment:")
    print(f"  until the next run: median {med_t / 3600:.1f} h, max {max_t / 3600:.1f} h")
    print(f"ratio (certbot.timer median / ntspki watch median to served): {med_t / med_s:,.0f}x")
    ok = med_d < 0.5 and max_s < restart + 1.0
    print("goals: " + ("met" if ok else "MISSED"))
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
