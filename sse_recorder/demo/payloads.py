"""Vendor error bodies, and the events big services send (the seed document's families).

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

# The seed's other event families, by event name, with its sample data (English where it
# has text): what `inject:shape=NAME` sends, and the templates signalled faults fill in
# (stream-pause / stream-resume / stream-throttle, the keep-alive and connection-status
# heartbeats).
SEED_EVENTS: dict[str, JSON] = {
    "ping": {"timestamp": "2024-01-15T10:30:00Z"},
    "heartbeat": {"status": "alive", "uptime": 3600},
    "keep-alive": {"connectionId": "abc123", "duration": 120, "nextPing": 30},
    "connection-status": {"active": True, "latency": 15, "region": "us-east-1"},
    "stream-start": {"id": "chatcmpl-123", "model": "gpt-4", "created": 1704094800},
    "stream-end": {"finish_reason": "stop", "usage": {"total_tokens": 150}},
    "stream-pause": {"reason": "buffer_full", "position": 1024},
    "stream-resume": {"position": 1024, "buffered": True},
    "stream-throttle": {"rate": 0.5, "reason": "network_congestion"},
    "status": {"state": "building", "step": 2, "total": 5},
    "state-change": {"from": "pending", "to": "running", "trigger": "manual"},
    "state-transition": {"workflow": "ci-pipeline", "previousState": "testing",
                         "currentState": "deploying", "duration": 145000, "success": True},
    "progress": {"percent": 25, "bytes": 262144, "total": 1048576},
    "complete": {"fileId": "file123", "size": 1048576, "duration": 2500},
    "step-progress": {"currentStep": "Validate data", "stepNumber": 1, "totalSteps": 4,
                      "stepProgress": 100, "overallProgress": 25},
    "system-info": {"serverId": "prod-us-east-1a", "version": "2.5.0", "uptime": 864000,
                    "connections": 1523},
    "performance-metrics": {"cpu": 45.2, "memory": 78.5, "activeStreams": 523,
                            "queueLength": 12},
    "debug": {"action": "query_executed", "duration": 123,
              "query": "SELECT * FROM users WHERE active = true", "affectedRows": 42},
    "trace": {"requestId": "req-123", "spanId": "span-456", "operation": "database_query",
              "duration": 15},
    "token-refresh": {"newToken": "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.injected.sig",
                      "expiresIn": 3600, "refreshToken": "refresh_token_injected"},
    "session-update": {"sessionId": "sess_123", "remainingTime": 1800, "autoExtended": True},
    "permission-change": {"userId": "user123", "changes": {
        "added": ["write", "delete"], "removed": ["admin"],
        "current": ["read", "write", "delete"]}},
    "access-granted": {"resource": "/api/premium-features", "level": "full",
                       "validUntil": "2024-12-31T23:59:59Z"},
}

# `inject:shape=` -> (event name, data); a None name is an unnamed (`message`) event.
SHAPES: dict[str, tuple[str | None, JSON]] = {
    **{name: (name, data) for name, data in service_events(ENGLISH).items()},
    **{name: (name, data) for name, data in SEED_EVENTS.items()},
    # Mid-stream, the vendors send the same error objects as their HTTP error bodies.
    "anthropic-overloaded": ("error", ANTHROPIC_ERRORS[529]),
    "openai-error": (None, OPENAI_ERRORS[None]),
}
