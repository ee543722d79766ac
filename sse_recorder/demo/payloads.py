"""Vendor error bodies, and the error / warning / retry-hint / backoff events big services send.

One source for fault injection (`inject:shape=`, `http:shape=`) and the demo upstream
(`/patterns`). The four service events are one structure in two languages: English where a
fault injects them, Korean where the demo upstream plays its pattern stream; the structure
is shared, the texts are not, so the demo's bytes stay as they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]


@dataclass(frozen=True)
class EventTexts:
    """The human-readable strings of the error and warning events."""

    rate_limited: str
    slow_network: str
    check_connection: str


ENGLISH = EventTexts("API rate limit exceeded", "Network is slow", "Check the connection")
KOREAN = EventTexts("API 호출 한도 초과", "네트워크 속도가 느립니다", "연결 상태를 확인하세요")


def service_events(texts: EventTexts) -> dict[str, JSON]:
    """Event name -> data of the error, warning, retry-hint and backoff events."""
    return {
        "error": {"code": "RATE_LIMIT_EXCEEDED", "message": texts.rate_limited,
                  "details": {"limit": 100, "used": 100, "resetAt": "2024-01-15T11:00:00Z"},
                  "recoverable": True},
        "warning": {"code": "SLOW_NETWORK", "message": texts.slow_network,
                    "suggestion": texts.check_connection},
        "retry-hint": {"suggested": 5000, "reason": "server_busy"},
        "backoff": {"attempt": 3, "nextRetry": 8000, "maxAttempts": 5},
    }


# HTTP error bodies by status; None is the body for any other status.
OPENAI_ERRORS: dict[int | None, JSON] = {
    429: {"error": {"message": "Rate limit reached. Please try again later.",
                    "type": "requests", "param": None, "code": "rate_limit_exceeded"}},
    401: {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                    "param": None, "code": "invalid_api_key"}},
    None: {"error": {"message": "The server had an error while processing your request.",
                     "type": "server_error", "param": None, "code": None}},
}
ANTHROPIC_ERRORS: dict[int | None, JSON] = {
    429: {"type": "error", "error": {
        "type": "rate_limit_error",
        "message": "Number of requests has exceeded your rate limit."}},
    401: {"type": "error", "error": {"type": "authentication_error",
                                     "message": "invalid x-api-key"}},
    529: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    None: {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}},
}
HTTP_BODIES: dict[str, dict[int | None, JSON]] = {
    "openai": OPENAI_ERRORS, "anthropic": ANTHROPIC_ERRORS,
}

# `inject:shape=` -> (event name, data); a None name is an unnamed (`message`) event.
SHAPES: dict[str, tuple[str | None, JSON]] = {
    **{name: (name, data) for name, data in service_events(ENGLISH).items()},
    # Mid-stream, the vendors send the same error objects as their HTTP error bodies.
    "anthropic-overloaded": ("error", ANTHROPIC_ERRORS[529]),
    "openai-error": (None, OPENAI_ERRORS[None]),
}
