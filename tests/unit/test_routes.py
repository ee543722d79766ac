"""Unit tests for `sse_recorder.routes`: route specs and include/exclude filters."""

from __future__ import annotations

import pytest

from sse_recorder.errors import ConfigError
from sse_recorder.routes import Route, RouteFilter

# --------------------------------------------------------------------------------------------
# Route.parse


@pytest.mark.parametrize(
    ("spec", "method", "pattern"),
    [
        ("api.openai.com/v1/*", "*", "api.openai.com/v1/*"),
        ("POST */v1/messages", "POST", "*/v1/messages"),
        ("post api.example.com/x", "POST", "api.example.com/x"),  # method upper-cased
        ("  GET   api.example.com/a  ", "GET", "api.example.com/a"),  # whitespace trimmed
        ("* api.example.com/a", "*", "api.example.com/a"),
        ("api.example.com", "*", "api.example.com/*"),  # host only: any path
        ("DELETE *.example.com", "DELETE", "*.example.com/*"),
    ],
)
def test_parse_forms(spec: str, method: str, pattern: str) -> None:
    assert Route.parse(spec) == Route(method, pattern)


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "   ",
        "GET api.example.com/a b",
        "FETCH api.example.com/x",  # unknown method: two words
        "api.example.com/a /b",
    ],
)
def test_bad_specs_raise_config_error(spec: str) -> None:
    with pytest.raises(ConfigError) as info:
        Route.parse(spec)
    message = str(info.value)
    assert repr(spec) in message and "\n" not in message


# --------------------------------------------------------------------------------------------
# Route.matches


def test_matching_ignores_the_query_string() -> None:
    route = Route.parse("api.example.com/v1/chat")
    assert route.matches("GET", "api.example.com", "/v1/chat?stream=true&x=/y")
    assert route.matches("GET", "api.example.com", "/v1/chat")
    assert not route.matches("GET", "api.example.com", "/v1/chat/more?x=1")


def test_glob_over_host_and_path() -> None:
    route = Route.parse("*.example.com/v1/*")
    assert route.matches("POST", "api.example.com", "/v1/messages")
    assert route.matches("GET", "a.b.example.com", "/v1/")
    assert not route.matches("GET", "example.com", "/v1/messages")  # "*." needs a subdomain
    assert not route.matches("GET", "api.example.org", "/v1/messages")
    assert not route.matches("GET", "api.example.com", "/v2/messages")


def test_host_only_route_matches_any_path_on_that_host() -> None:
    route = Route.parse("api.example.com")
    assert route.matches("GET", "api.example.com", "/")
    assert route.matches("PATCH", "api.example.com", "/deep/path?q=1")
    assert not route.matches("GET", "other.example.com", "/")


def test_method_and_host_are_case_insensitive_but_path_is_not() -> None:
    route = Route.parse("post API.Example.com/V1/Chat")
    assert route.matches("POST", "api.example.com", "/V1/Chat")
    assert route.matches("post", "API.EXAMPLE.COM", "/V1/Chat")
    assert not route.matches("POST", "api.example.com", "/v1/chat")


def test_method_restriction() -> None:
    route = Route.parse("POST */v1/messages")
    assert route.matches("POST", "anything.example", "/v1/messages")
    assert not route.matches("GET", "anything.example", "/v1/messages")
    any_method = Route.parse("*/v1/messages")
    assert any_method.matches("GET", "h", "/v1/messages")
    assert any_method.matches("OPTIONS", "h", "/v1/messages")


# --------------------------------------------------------------------------------------------
# RouteFilter


def test_empty_filter_allows_everything() -> None:
    assert RouteFilter().allows("GET", "anything", "/at/all")
    assert RouteFilter.parse().allows("POST", "h", "/")


def test_include_list_restricts_to_matching_routes() -> None:
    rf = RouteFilter.parse(include=["POST api.openai.com/v1/*", "api.anthropic.com/v1/messages"])
    assert rf.allows("POST", "api.openai.com", "/v1/chat/completions")
    assert not rf.allows("GET", "api.openai.com", "/v1/models")
    assert rf.allows("GET", "api.anthropic.com", "/v1/messages?beta=true")
    assert not rf.allows("POST", "example.com", "/v1/chat/completions")


def test_exclude_list_removes_matching_routes() -> None:
    rf = RouteFilter.parse(exclude=["*/health", "GET telemetry.example.com"])
    assert not rf.allows("GET", "api.example.com", "/health")
    assert not rf.allows("GET", "telemetry.example.com", "/v1/events")
    assert rf.allows("POST", "telemetry.example.com", "/v1/events")
    assert rf.allows("GET", "api.example.com", "/v1/stream")


def test_exclude_wins_over_include() -> None:
    rf = RouteFilter.parse(include=["api.example.com/v1/*"], exclude=["*/v1/private*"])
    assert rf.allows("GET", "api.example.com", "/v1/public")
    assert not rf.allows("GET", "api.example.com", "/v1/private/keys")
    assert not rf.allows("GET", "other.example.com", "/v1/public")


def test_filter_parse_rejects_a_bad_spec_in_either_list() -> None:
    with pytest.raises(ConfigError):
        RouteFilter.parse(include=["api.example.com/v1/*", "GET a b"])
    with pytest.raises(ConfigError):
        RouteFilter.parse(exclude=[""])


@pytest.mark.parametrize("spec", ["GET", "https://api.example.com/v1/*", "api.example.com:443/v1"])
def test_routes_that_could_never_match_are_rejected(spec: str) -> None:
    with pytest.raises(ConfigError):
        Route.parse(spec)


def test_a_bare_path_matches_any_host() -> None:
    route = Route.parse("POST /v1/messages")
    assert route.matches("POST", "api.anthropic.com", "/v1/messages")
    assert route.matches("POST", "127.0.0.1", "/v1/messages?beta=1")
    assert not route.matches("POST", "127.0.0.1", "/v1/messages/count")
