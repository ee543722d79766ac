"""The core (replay, ls/show, the pytest plugin) must work where mitmproxy is not installed:
it goes into users' test environments, while the recorder is an isolated tool."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

# Make `import mitmproxy` fail the way it does where the package is absent.
BLOCK = textwrap.dedent("""
    import importlib.abc, sys
    class NoMitmproxy(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "mitmproxy" or name.startswith("mitmproxy."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, NoMitmproxy())
""")


def run_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)


def test_core_modules_import_without_mitmproxy(tmp_path: Path) -> None:
    done = run_python("""
        import sse_recorder.cli, sse_recorder.replay.server, sse_recorder.testing.plugin
        import sse_recorder.mitm.inprocess, sse_recorder.demo.walkthrough
        import sse_recorder.faults.run, sse_recorder.store.cassette, sse_recorder.record.session
        assert not any(m == "mitmproxy" or m.startswith("mitmproxy.") for m in sys.modules)
        print("ok")
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_record_without_mitmproxy_says_how_to_install_it(tmp_path: Path) -> None:
    done = run_python("""
        import sys
        from sse_recorder.cli import main
        sys.argv = ["sse-recorder", "record", "--cassette", "x.sqlite"]
        main()
    """, tmp_path)
    assert done.returncode == 2
    assert "sse-recorder[record]" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.sqlite").exists()


def test_replay_and_ls_work_without_mitmproxy(tmp_path: Path) -> None:
    done = run_python("""
        import asyncio, time
        from sse_recorder.store.cassette import Cassette, InteractionStart, HeadUpdate, WriteBatch
        from sse_recorder.store.cassette import EndUpdate
        from sse_recorder.model import Outcome, RecordedRequest, ResponseHead
        from sse_recorder.wire.probe import probe
        from sse_recorder.replay.server import ReplayServer

        async def main():
            cassette = await Cassette.open_for_recording("c.sqlite")
            iid = cassette.allocate_id()
            head = ResponseHead(200, "OK", (("Content-Type", "text/event-stream"),
                                            ("Transfer-Encoding", "chunked")))
            request = RecordedRequest("GET", "http://h/s", ())
            await cassette.write(WriteBatch(
                starts=[InteractionStart(iid, time.time(), request)],
                heads=[HeadUpdate(iid, head, 1000, True)],
                chunks=[(iid, 0, 2000, b"data: one\\n\\n"), (iid, 1, 3000, b"data: two\\n\\n")],
                ends=[EndUpdate(iid, True, Outcome.CLEAN, 4000, None)]))
            await cassette.finish_recording()
            await cassette.close()
            async with await ReplayServer.open("c.sqlite") as server:
                await server.start()
                result = await probe(server.base_url + "/s")
            assert [d for _, d in result.chunks] == [b"data: one\\n\\n", b"data: two\\n\\n"]
            print("replayed")

        asyncio.run(main())
        from sse_recorder.cli import main as cli
        sys.argv = ["sse-recorder", "ls", "c.sqlite"]
        cli()
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "replayed"
    assert "text/event-stream" in lines[2] and lines[2].rstrip().endswith("clean")


def test_the_process_helper_needs_no_pytest(tmp_path: Path) -> None:
    """The demo starts its processes with it, where pytest need not be installed."""
    done = run_python("""
        class NoPytest(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name in ("pytest", "_pytest") or name.startswith("_pytest."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None
        sys.meta_path.insert(0, NoPytest())
        import sse_recorder.testing.processes, sse_recorder.demo.walkthrough
        print("ok")
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
