"""The server's own answers (no recording matches, a cassette it cannot read, an internal
error) in the shape the client can show.

An SDK shows an error's text only when it comes in its vendor's error JSON: the openai SDK
reads `error.message`, the anthropic SDK prints the body (`{"type": "error", "error":
{...}}`). So a request that looks like a call to a vendor's API (a marker header, or a path
of that API, as `SHAPES` lists them; the first row that fits wins) gets its explanation in
that vendor's shape; any other request gets plain text. Every answer also says
`x-should-retry: false`, which both SDKs honour: retrying would not change the answer, and
a retry would use up recordings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sse_recorder.model import Headers
from sse_recorder.wire import responses

JSON = "application/json"

# The vendors' error `type` by status (their documented names); others: the fallback.
OPENAI_TYPES = {404: "invalid_request_error", 409: "invalid_request_error",
                500: "server_error"}
ANTHROPIC_TYPES = {404: "not_found_error", 409: "invalid_request_error", 500: "api_error"}


def _openai(status: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": OPENAI_TYPES.get(status, "server_error"),
                      "param": None, "code": "sse_recorder"}}


def _anthropic(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": ANTHROPIC_TYPES.get(status, "api_error"),
                                       "message": message}}


@dataclass(frozen=True)
class Shape:
    """One vendor: what marks a request as a call to its API, and its error body."""

    vendor: str
    headers: frozenset[str]  # any of these request headers (lower-case) marks the vendor
    paths: re.Pattern[str]  # or a path this finds (a base URL may add a prefix)
    body: Callable[[int, str], dict[str, Any]]


SHAPES: tuple[Shape, ...] = (
    Shape("anthropic", frozenset({"anthropic-version"}),
          re.compile(r"/v1/(messages|complete)(/|$)"), _anthropic),
    Shape("openai", frozenset({"openai-organization", "openai-project"}),
          re.compile(r"/(chat/completions|completions|responses|embeddings|moderations)(/|$)"),
          _openai),
)


def shape_for(path: str, headers: Headers) -> Shape | None:
    """The vendor whose API the request looks like a call to, if any."""
    names = {name.lower() for name, _ in headers}
    return next((s for s in SHAPES if names & s.headers or s.paths.search(path)), None)


def explanation(
    status: int, message: str, path: str, headers: Headers, extra: tuple[tuple[str, str], ...]
) -> tuple[list[tuple[str, str]], bytes]:
    """The headers and body of an answer carrying `message`: the vendor's error JSON for a
    vendor call, else the text."""
    shape = shape_for(path, headers)
    if shape is None:
        content_type, body = responses.TEXT, message.encode()
    else:
        content_type = JSON
        body = json.dumps(shape.body(status, message.rstrip("\n")), ensure_ascii=False).encode()
    return [("Content-Type", content_type), ("x-should-retry", "false"), *extra], body
