"""Pass-through baseline for the recorder benchmarks: `mitmdump -s bench/passthrough_addon.py`.

It streams exactly like the recorder addon does (a callable set in `responseheaders` that
returns each chunk untouched, `[]` for the end marker) but records nothing, so the
difference between the two proxies is the cost of recording alone.
"""

from __future__ import annotations

from mitmproxy import http


def _forward(data: bytes) -> bytes | list[bytes]:
    # Same contract as the recorder's callable: never b"" for a chunk (it would end a
    # chunked body early), `[]` for the final empty call.
    return data if data else []


class PassThrough:
    """Streams every response body chunk by chunk without looking at it."""

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            flow.response.stream = _forward


addons = [PassThrough()]
