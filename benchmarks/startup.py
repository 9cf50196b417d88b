"""Start-up cost of the CLI that hooks and timers call, against its floor.

Prints, measured in this one run (best of N, wall clock):
  - `python -c "import cryptography.x509, click"`: what any ntspki command must at least import;
  - `ntspki --help` and `ntspki list --json` on an empty home;
  - the ratios ntspki / floor. The budget is 1.3 (CONTRIBUTING.md): a heavy import (acme,
    josepy, watchdog, pyOpenSSL) slipping into start-up shows here as a ratio near 2 or more.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = int(os.environ.get("RUNS", "15"))
BUDGET = 1.3


def best(argv: list[str], env: dict[str, str]) -> float:
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="ntspki-startup-") as home:
        env = dict(os.environ, NTSPKI_HOME=str(Path(home) / "home"))
        floor = best([sys.executable, "-c", "import cryptography.x509, click"], env)
        cli = [sys.executable, "-m", "ntspki"]
        helps = best([*cli, "--help"], env)
        listing = best([*cli, "list", "--json"], env)
    print(f"floor (import cryptography.x509, click): {floor * 1000:7.1f} ms")
    print(f"ntspki --help:                           {helps * 1000:7.1f} ms  ratio {helps / floor:.2f}")
    print(f"ntspki list --json (empty home):         {listing * 1000:7.1f} ms  ratio {listing / floor:.2f}")
    ok = helps / floor <= BUDGET
    print(f"budget {BUDGET}: {'met' if ok else 'EXCEEDED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
