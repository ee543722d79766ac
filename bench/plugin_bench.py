"""Per-test cost of the `sse_cassette` fixture: a replay server started and stopped per test.

Why this shape: the plugin promises that a replayed test costs little more than a plain one
(target: under 50 ms of fixture overhead per test), so it runs a real inner pytest with N
tests using the fixture and N identical tests without it, interleaved so drift on a noisy
box hits both alike, and times each test's whole run protocol (setup, call, teardown and
pytest's own reporting). The overhead is the difference of the medians. The first fixture
test also pays the lazy imports and the background loop's start; it is reported apart.
A third series replays one streamed chat completion per test, for scale.

Usage: `python bench/plugin_bench.py [--quick] [--strict]` (--quick: 10 tests per series;
--strict: exit 1 if the target is missed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CASSETTE = ROOT / "examples/cassettes/test_vendor_streams/test_openai_chat_stream.sqlite"
TARGET_MS = 50.0

CONFTEST = '''
import json, os, time
import pytest

TIMES = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    started = time.perf_counter()
    try:
        return (yield)
    finally:
        TIMES[item.nodeid] = (time.perf_counter() - started) * 1000


def pytest_collection_modifyitems(items):
    """Interleave the series: fixture n, baseline n, request n, fixture n+1, ..."""
    def key(item):
        return (item.callspec.params["n"], item.originalname)
    items.sort(key=key)


def pytest_sessionfinish(session):
    with open(os.environ["PLUGIN_BENCH_OUT"], "w") as out:
        json.dump(TIMES, out)
'''

TESTS = '''
import socket
import pytest

N = {n}
BODY = (b'{{"model": "gpt-4o-mini", "stream": true, '
        b'"messages": [{{"role": "user", "content": "Say hello"}}]}}')


@pytest.mark.parametrize("n", range(N))
@pytest.mark.sse_cassette("base")
def test_a_fixture(sse_cassette, n):
    assert sse_cassette.base_url


@pytest.mark.parametrize("n", range(N))
def test_b_baseline(n):
    assert n >= 0


@pytest.mark.parametrize("n", range(N))
@pytest.mark.sse_cassette("base")
def test_c_request(sse_cassette, n):
    host, port = sse_cassette.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\\r\\nHost: x\\r\\n"
                     b"Content-Type: application/json\\r\\nConnection: close\\r\\n"
                     b"Content-Length: %d\\r\\n\\r\\n%s" % (len(BODY), BODY))
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200") and b"[DONE]" in received
'''


def run(n: int, workdir: Path) -> dict[str, float]:
    """One inner pytest run; returns each test's protocol time in ms by node id."""
    target = workdir / "cassettes" / "test_bench" / "base.sqlite"
    target.parent.mkdir(parents=True)
    shutil.copyfile(CASSETTE, target)
    (workdir / "pytest.ini").write_text("[pytest]\n")
    (workdir / "conftest.py").write_text(CONFTEST)
    (workdir / "test_bench.py").write_text(TESTS.format(n=n))
    out = workdir / "times.json"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "test_bench.py"],
        cwd=workdir, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PLUGIN_BENCH_OUT": str(out)},
    )
    if done.returncode != 0:
        raise SystemExit(f"inner pytest failed:\n{done.stdout}\n{done.stderr}")
    return {k: float(v) for k, v in json.loads(out.read_text()).items()}


def series(times: dict[str, float], name: str) -> list[float]:
    """A series' times in run order (node ids sort by parameter)."""
    found = [(int(k.rsplit("[", 1)[1].rstrip("]")), v) for k, v in times.items()
             if f"::{name}[" in k]
    return [v for _, v in sorted(found)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 tests per series, not 50")
    parser.add_argument("--strict", action="store_true", help="exit 1 if the target is missed")
    args = parser.parse_args()
    n = 10 if args.quick else 50
    if not CASSETTE.exists():
        raise SystemExit(f"missing {CASSETTE}: the examples' committed cassette")
    with tempfile.TemporaryDirectory(prefix="plugin-bench-") as tmp:
        times = run(n, Path(tmp))
    fixture, baseline = series(times, "test_a_fixture"), series(times, "test_b_baseline")
    request = series(times, "test_c_request")
    first, fixture = fixture[0], fixture[1:]
    base_ms = statistics.median(baseline)
    fixture_ms = statistics.median(fixture)
    request_ms = statistics.median(request)
    overhead = fixture_ms - base_ms
    print(f"sse_cassette fixture, median of {n} tests per series "
          f"(Python {platform.python_version()}, pytest {pytest.__version__})")
    print(f"  baseline, no fixture             {base_ms:8.2f} ms/test")
    print(f"  sse_cassette (start + stop)      {fixture_ms:8.2f} ms/test  "
          f"(p90 {statistics.quantiles(fixture, n=10)[-1]:.2f})")
    print(f"  sse_cassette + 1 streamed reply  {request_ms:8.2f} ms/test")
    print(f"  first fixture test               {first:8.2f} ms  (imports, background loop)")
    verdict = "OK" if overhead < TARGET_MS else "MISS"
    print(f"fixture overhead per test: {overhead:.2f} ms (target < {TARGET_MS:.0f} ms): "
          f"{verdict}")
    return 1 if args.strict and verdict == "MISS" else 0


if __name__ == "__main__":
    sys.exit(main())
