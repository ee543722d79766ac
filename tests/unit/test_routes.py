"""Unit tests for `sse_recorder.routes`: route specs and include/exclude filters."""

from __future__ import annotations

import re

import pytest

from sse_recorder.errors import ConfigError
from sse_recorder.routes import Route, RouteFilter, host_and_path

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


Request = tuple[str, str, str]  # method, host, path with its query


@pytest.mark.parametrize(
    ("spec", "matching", "not_matching"),
    [
        pytest.param(
            "api.example.com/v1/chat",
            [("GET", "api.example.com", "/v1/chat?stream=true&x=/y"),
             ("GET", "api.example.com", "/v1/chat")],
            [("GET", "api.example.com", "/v1/chat/more?x=1")],
            id="ignores-the-query-string",
        ),
        pytest.param(
            "*.example.com/v1/*",
            [("POST", "api.example.com", "/v1/messages"),
             ("GET", "a.b.example.com", "/v1/")],
            [("GET", "example.com", "/v1/messages"),  # "*." needs a subdomain
             ("GET", "api.example.org", "/v1/messages"),
             ("GET", "api.example.com", "/v2/messages")],
            id="glob-over-host-and-path",
        ),
        pytest.param(
            "api.example.com",
            [("GET", "api.example.com", "/"),
             ("PATCH", "api.example.com", "/deep/path?q=1")],
            [("GET", "other.example.com", "/")],
            id="host-only-matches-any-path-on-that-host",
        ),
        pytest.param(
            "post API.Example.com/V1/Chat",
            [("POST", "api.example.com", "/V1/Chat"),
             ("post", "API.EXAMPLE.COM", "/V1/Chat")],
            [("POST", "api.example.com", "/v1/chat")],
            id="method-and-host-case-insensitive-path-not",
        ),
        pytest.param(
            "POST */v1/messages",
            [("POST", "anything.example", "/v1/messages")],
            [("GET", "anything.example", "/v1/messages")],
            id="method-restriction",
        ),
        pytest.param(
            "*/v1/messages",
            [("GET", "h", "/v1/messages"),
             ("OPTIONS", "h", "/v1/messages")],
            [],
            id="any-method",
        ),
        pytest.param(
            "POST /v1/messages",
            [("POST", "api.anthropic.com", "/v1/messages"),
             ("POST", "127.0.0.1", "/v1/messages?beta=1")],
            [("POST", "127.0.0.1", "/v1/messages/count")],
            id="bare-path-matches-any-host",
        ),
    ],
)
def test_route_matches(spec: str, matching: list[Request], not_matching: list[Request]) -> None:
    route = Route.parse(spec)
    for request in matching:
        assert route.matches(*request), request
    for request in not_matching:
        assert not route.matches(*request), request


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


# --------------------------------------------------------------------------------------------
# Specs that read as something else: refused, with the spec they probably meant


@pytest.mark.parametrize(("spec", "meant", "why"), [
    # Without the space, "POST" was read as a host and the route never matched.
    ("POST/v1/chat/completions", "POST /v1/chat/completions", "POST is a method, not a host"),
    ("post/v1/messages", "POST /v1/messages", "post is a method, not a host"),
    ("GET/ci/*", "GET /ci/*", "GET is a method, not a host"),
    ("GET POST/x", "POST /x", "POST is a method, not a host"),
    ("localhost:8080/ids", "localhost/ids", "routes match the host name without a port"),
    ("POST api.example.com:443/v1", "POST api.example.com/v1",
     "routes match the host name without a port"),
    ("https://api.openai.com/v1/*", "api.openai.com/v1/*",
     "routes have no scheme, use host/path"),
    ("POST http://localhost/ids", "POST localhost/ids", "routes have no scheme, use host/path"),
])
def test_misread_specs_suggest_what_was_meant(spec: str, meant: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        Route.parse(spec)
    assert str(info.value) == f"bad route {spec!r}: {why} (did you mean {meant!r}?)"
    Route.parse(meant)  # the suggestion is a good route


@pytest.mark.parametrize("spec", ["[::1]/x", "::1/x", "GET [::1]/x", "[::1]/*", "[::*]/x"])
def test_an_ipv6_host_is_written_as_in_a_url(spec: str) -> None:
    """A recording of http://[::1]:8080/x: its route was refused (an audit found it)."""
    route = Route.parse(spec)
    assert route.matches("GET", *host_and_path("http://[::1]:8080/x"))
    assert not route.matches("GET", *host_and_path("http://127.0.0.1:8080/x"))
    assert str(Route.parse(str(route))) == str(route)  # printed as it parses back
    assert str(route).removeprefix("GET ").startswith("[")


@pytest.mark.parametrize(("spec", "message"), [
    ("[::1]:8080/x", "without a port (did you mean '[::1]/x'?)"),
    ("[::1/x", "an IPv6 host is written [address]"),
    ("[]/x", "an IPv6 host is written [address]"),
    ("[::1]x/y", "an IPv6 host is written [address]"),
])
def test_a_misspelled_ipv6_route_says_how_to_write_it(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Route.parse(spec)


def test_a_host_merely_starting_like_a_method_is_a_host() -> None:
    assert Route.parse("postgres.internal/x") == Route("*", "postgres.internal/x")
    assert Route.parse("get.example.com") == Route("*", "get.example.com/*")


@pytest.mark.parametrize(("url", "host", "path"), [
    ("http://localhost:8123/ids?x=1", "localhost", "/ids"),
    ("https://API.OpenAI.com/v1/chat/completions", "api.openai.com", "/v1/chat/completions"),
    ("http://127.0.0.1:9", "127.0.0.1", "/"),
    ("http://[::1]:8080/x", "::1", "/x"),
    ("http://[::1/x", "", "/"),  # brackets that do not pair: never a traceback
])
def test_host_and_path_of_a_recorded_url_are_what_routes_match(
    url: str, host: str, path: str
) -> None:
    assert host_and_path(url) == (host, path)
    if host and not host.startswith(":"):
        assert Route.parse(f"{host}{path}").matches("GET", *host_and_path(url))


@pytest.mark.parametrize("spec", ["POST */v1/chat/*", "api.example.com/v1/*", "/ci/*"])
def test_a_route_prints_as_a_spec_that_parses_back(spec: str) -> None:
    route = Route.parse(spec)
    assert Route.parse(str(route)) == route
