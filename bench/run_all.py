"""Run every `bench/*_bench.py` in turn: `python bench/run_all.py [--quick] [--strict] [NAME...]`.

Scripts are discovered by glob so new benchmarks need no registration. Each runs in its own
interpreter (the one running this file), one at a time so they do not compete for the CPUs,
with a time bound so the whole run always ends. Exit status 1 if any script failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
TIMEOUT_S = {"quick": 120, "full": 600}  # per script; each script also bounds itself


def discover(names: list[str]) -> list[Path]:
    """`*_bench.py` in this directory, sorted; NAMEs (e.g. `record`) select a subset."""
    scripts = sorted(BENCH_DIR.glob("*_bench.py"))
    if names:
        wanted = {n.removesuffix(".py").removesuffix("_bench") for n in names}
        scripts = [s for s in scripts if s.stem.removesuffix("_bench") in wanted]
        missing = wanted - {s.stem.removesuffix("_bench") for s in scripts}
        if missing:
            raise SystemExit(f"no such benchmark: {', '.join(sorted(missing))}")
    return scripts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run of each script")
    parser.add_argument("--strict", action="store_true", help="a missed target fails the run")
    parser.add_argument("names", nargs="*", help="run only these (e.g. `record`)")
    args = parser.parse_args()
    passed = [flag for flag in ("--quick", "--strict") if getattr(args, flag[2:])]
    timeout = TIMEOUT_S["quick" if args.quick else "full"]

    results: list[tuple[str, str, float]] = []
    for script in discover(args.names):
        print(f"==> {script.name} {' '.join(passed)}".rstrip(), flush=True)
        started = time.monotonic()
        try:
            run = subprocess.run([sys.executable, str(script), *passed], timeout=timeout)
            code = run.returncode
            status = "ok" if code == 0 else f"exit {code}"
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout} s"
        results.append((script.name, status, time.monotonic() - started))
        print(flush=True)

    print("run_all:")
    for name, status, seconds in results:
        print(f"  {name:<28} {status:<24} {seconds:6.1f} s")
    if not results:
        print("  no bench/*_bench.py found")
    return 0 if results and all(status == "ok" for _, status, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
