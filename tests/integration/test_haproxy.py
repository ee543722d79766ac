"""The README's load-balancer recipe, run as written: a real HAProxy (Debian's package,
installed by `.ci/system-packages`) on loopback in front of two `sse-recorder replay`
replicas of one cassette.

The configuration is the README's `haproxy` block with its addresses replaced: the frontend
binds a listening socket the test made (`fd@N`), so HAProxy is reachable the moment it
starts and nothing waits for a port; the servers are the replicas' URLs. Which replica
answered is read from each replica's own log.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import httpx_sse
import pytest

from tests.helpers import REPO, SSE_RECORDER, Process, start
from tests.integration.test_workers import TICKS, cassette  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
RECIPE = re.compile(r"<!-- haproxy recipe -->\n```haproxy\n(.*?)```", re.DOTALL)


def recipe(frontend: str, replicas: list[str]) -> str:
    """The README's configuration, on these addresses."""
    found = RECIPE.search((REPO / "README.md").read_text())
    assert found, "README.md has no haproxy recipe block"
    config = found[1].replace("bind 127.0.0.1:8080", f"bind {frontend}")
    for number, address in enumerate(replicas, 1):
        config = config.replace(f"127.0.0.1:{8080 + number}", address)
    return config


@pytest.fixture
def balanced(cassette: Path, tmp_path: Path) -> Iterator[tuple[str, list[Process]]]:  # noqa: F811
    """HAProxy's URL and the two replicas behind it."""
    if not Path(HAPROXY).exists():
        pytest.fail("haproxy is not installed: run .ci/system-packages (make test does)")
    replicas = [start([SSE_RECORDER, "replay", str(cassette), "--listen-port", "0"],
                      tmp_path / f"replica{n}.txt") for n in (1, 2)]
    front = socket.create_server(("127.0.0.1", 0))
    config = tmp_path / "haproxy.cfg"
    config.write_text(recipe(f"fd@{front.fileno()}",
                             [r.url.removeprefix("http://") for r in replicas]))
    with open(tmp_path / "haproxy.txt", "wb") as log:
        haproxy = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], pass_fds=[front.fileno()],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        yield f"http://127.0.0.1:{front.getsockname()[1]}", replicas
    finally:
        haproxy.terminate()
        haproxy.wait(10)
        front.close()
        for replica in replicas:
            assert replica.stop() == 0


def test_readme_recipe_is_valid_haproxy(tmp_path: Path) -> None:
    if not Path(HAPROXY).exists():
        pytest.fail("haproxy is not installed: run .ci/system-packages (make test does)")
    config = tmp_path / "haproxy.cfg"
    config.write_text(recipe("127.0.0.1:8080", ["127.0.0.1:8081", "127.0.0.1:8082"]))
    check = subprocess.run([HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


def served(replicas: list[Process], count: int, timeout: float = 10) -> list[list[str]]:
    """Each replica's `GET /ticks` log lines, once there are `count` in all (a line is
    written as a response ends)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [[line for line in r.stderr().splitlines() if line.startswith("GET /ticks")]
                 for r in replicas]
        if sum(map(len, lines)) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def test_resume_lands_on_the_other_replica(balanced: tuple[str, list[Process]]) -> None:
    url, replicas = balanced
    with httpx.Client(base_url=url, timeout=10) as client:
        with httpx_sse.connect_sse(client, "GET", "/ticks") as source:
            seen = []
            for event in source.iter_sse():
                seen.append(event.id)
                if event.id == "3":
                    break  # the connection is lost here
        resumed = [event.id for event in httpx_sse.EventSource(
            client.get("/ticks", headers={"Last-Event-ID": "3"})).iter_sse()]
    assert seen == ["0", "1", "2", "3"]
    assert resumed == [str(i) for i in range(4, TICKS)]  # exactly the rest
    # one request each: the resume was answered by the replica that had not seen the stream
    assert [len(lines) for lines in served(replicas, 2)] == [1, 1], [
        r.stderr() for r in replicas]


def test_a_replica_that_stops_is_passed_over(balanced: tuple[str, list[Process]]) -> None:
    """Found by a stranger's audit: with the recipe as it was (no retries, no health check),
    every other request waited 3 s for a 503 once a replica had stopped."""
    url, replicas = balanced
    assert replicas[0].stop() == 0
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(6):
            started = time.monotonic()
            response = client.get("/ticks", headers={"Last-Event-ID": str(TICKS - 3)})
            ids = [event.id for event in httpx_sse.EventSource(response).iter_sse()]
            assert response.status_code == 200
            assert ids == [str(TICKS - 2), str(TICKS - 1)]  # the rest, from the live replica
            assert time.monotonic() - started < 2.5  # not HAProxy's 1 s turn-around, thrice
