"""mitmproxy inside a test process: the pytest plugin's proxy mode without a subprocess.

Kept here so that only `sse_recorder.mitm` imports mitmproxy; the plugin imports this module
lazily, and only after `load()` said mitmproxy is installed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import threading
import warnings
from pathlib import Path
from typing import Any


def load() -> bool:
    """Import mitmproxy on the calling thread with its dependencies' deprecation warnings
    silenced (a suite running with -W error must not fail on them); False if it is absent."""
    if importlib.util.find_spec("mitmproxy") is None:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import mitmproxy.tools.dump  # noqa: F401

        from sse_recorder.mitm import replay_addon  # noqa: F401
    return True


class InProcessProxy:
    """mitmproxy on its own thread and loop, rerouting every request to a replay server.

    mitmproxy swaps its loop's task factory while it runs: hence a loop of its own, and
    no signal handlers (only the main thread may install them)."""

    def __init__(
        self, host: str, port: int, confdir: Path, start_timeout: float, stop_timeout: float
    ) -> None:
        self._stop_timeout = stop_timeout
        self._ready: concurrent.futures.Future[str] = concurrent.futures.Future()
        self._master: Any = None
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._run(host, port, confdir),),
            name="sse-recorder-proxy", daemon=True,
        )
        self._thread.start()
        try:
            self.url = self._ready.result(start_timeout)
        except BaseException:
            self.stop()
            raise

    async def _run(self, host: str, port: int, confdir: Path) -> None:
        ready = self._ready
        try:
            from sse_recorder.mitm.replay_addon import ReplayRouter
            from sse_recorder.mitm.runner import ProxySettings, run_mitmproxy

            def on_master(master: Any) -> None:
                self._master = master

            await run_mitmproxy(
                ProxySettings(confdir=confdir), [ReplayRouter(host, port)],
                lambda listening: ready.set_result(listening.url),
                handle_signals=False, on_master=on_master,
            )
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            return
        if not ready.done():
            ready.set_exception(RuntimeError("mitmproxy stopped before listening"))

    def stop(self) -> None:
        if self._master is not None:
            self._master.shutdown()
        self._thread.join(self._stop_timeout)
