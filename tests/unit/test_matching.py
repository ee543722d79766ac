"""Matching incoming requests to recorded interactions: pure, no I/O."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sse_recorder.errors import ConfigError
from sse_recorder.model import Headers, Interaction, Outcome, RecordedRequest, ResponseHead
from sse_recorder.record.redact import MARKER
from sse_recorder.replay.matching import (
    DEFAULT_CRITERIA,
    IncomingRequest,
    MatchConfig,
    Matcher,
    Miss,
    WhenExhausted,
    differences,
    split_url,
)

UP = "http://upstream.test:8080"
CHAT = {"model": "gpt-4o-mini", "stream": True,
        "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}


def recorded(
    id: int,
    method: str = "GET",
    target: str = "/ticks?n=3",
    body: bytes | dict[str, object] = b"",
    headers: Headers = (),
    base: str = UP,
    response: bool = True,
) -> Interaction:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    return Interaction(
        id=id,
        started_at=0.0,
        request=RecordedRequest(method, base + target, headers, raw),
        response=ResponseHead(200, "OK", (("content-type", "text/event-stream"),))
        if response else None,
        head_offset_ns=1000,
        is_sse=True,
        complete=True,
        outcome=Outcome.CLEAN,
        end_offset_ns=2000,
        error=None,
    )


def incoming(
    method: str = "GET",
    target: str = "/ticks?n=3",
    body: bytes | dict[str, object] = b"",
    headers: Headers = (),
    host: str = "",
    scheme: str = "http",
) -> IncomingRequest:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    return IncomingRequest(method, target, headers, raw, scheme, host)


def diff(rec: Interaction, req: IncomingRequest, config: MatchConfig | None = None) -> list[str]:
    return differences(rec.request, req, config or MatchConfig())


# -- MatchConfig.parse ---------------------------------------------------------------------


def test_parse_defaults() -> None:
    config = MatchConfig.parse()
    assert config == MatchConfig()
    assert config.criteria == DEFAULT_CRITERIA == {"method", "path", "query", "body"}
    assert config.when_exhausted is WhenExhausted.REPEAT_LAST


def test_parse_lists_criteria_and_headers() -> None:
    config = MatchConfig.parse(" method , path,header:X-Tenant ,header: Accept ")
    assert config.criteria == {"method", "path", "headers"}
    assert config.match_headers == {"x-tenant", "accept"}
    assert MatchConfig.parse("method,scheme,host,path,query,body,headers").criteria == {
        "method", "scheme", "host", "path", "query", "body", "headers"}


def test_parse_ignored_names_and_policy() -> None:
    config = MatchConfig.parse(None, ["model", "User_Id"], ["Ts", "nonce"], ["X-Request-Id"],
                               "error")
    assert config.ignore_json == {"model", "User_Id"}  # JSON keys are case-sensitive
    assert config.ignore_query == {"ts", "nonce"}
    assert config.ignore_headers == {"x-request-id"}
    assert config.when_exhausted is WhenExhausted.ERROR


@pytest.mark.parametrize("match", ["method,verb", "paths", "header", "Method"])
def test_parse_rejects_unknown_criteria(match: str) -> None:
    with pytest.raises(ConfigError, match="bad --match part"):
        MatchConfig.parse(match)


def test_parse_rejects_unknown_policy() -> None:
    with pytest.raises(ConfigError, match="repeat-last or error"):
        MatchConfig.parse(when_exhausted="cycle")


# -- each criterion ------------------------------------------------------------------------


def test_identical_request_matches() -> None:
    assert diff(recorded(1, "POST", "/v1/chat", CHAT), incoming("POST", "/v1/chat", CHAT)) == []


def test_method() -> None:
    assert diff(recorded(1), incoming("POST")) == ["method: recorded GET, got POST"]
    assert diff(recorded(1), incoming("get")) == []  # case-insensitive
    assert diff(recorded(1), incoming("POST"), MatchConfig.parse("path,query")) == []


def test_path() -> None:
    assert diff(recorded(1), incoming(target="/tickz?n=3")) == [
        "path: recorded /ticks, got /tickz"]
    assert diff(recorded(1), incoming(target="/tickz?n=3"), MatchConfig.parse("method")) == []


def test_query_ignores_parameter_order_but_not_values() -> None:
    rec = recorded(1, target="/ticks?n=3&interval_ms=5")
    assert diff(rec, incoming(target="/ticks?interval_ms=5&n=3")) == []
    assert diff(rec, incoming(target="/ticks?n=4&interval_ms=5")) == [
        "query: recorded interval_ms=5&n=3, got interval_ms=5&n=4"]
    assert diff(rec, incoming(target="/ticks")) == ["query: recorded interval_ms=5&n=3, got (none)"]
    assert diff(rec, incoming(target="/ticks"), MatchConfig.parse("method,path")) == []


def test_ignored_query_parameters() -> None:
    rec = recorded(1, target="/ticks?n=3&ts=111")
    config = MatchConfig.parse(ignore_query=["TS"])
    assert diff(rec, incoming(target="/ticks?n=3&ts=999"), config) == []
    assert diff(rec, incoming(target="/ticks?n=3"), config) == []
    assert diff(rec, incoming(target="/ticks?n=3&ts=999")) != []


def test_scheme_and_host_only_when_asked() -> None:
    rec = recorded(1)
    other = incoming(host="elsewhere.test", scheme="https")
    assert diff(rec, other) == []
    config = MatchConfig.parse("method,scheme,host,path")
    assert diff(rec, other, config) == ["scheme: recorded http, got https",
                                        "host: recorded upstream.test, got elsewhere.test"]
    assert diff(rec, incoming(host="UPSTREAM.test"), config) == []


def test_body_bytes_when_not_json() -> None:
    rec = recorded(1, "POST", "/upload", b"line one\n")
    assert diff(rec, incoming("POST", "/upload", b"line one\n")) == []
    assert diff(rec, incoming("POST", "/upload", b"line two\n")) == [
        "body: recorded 9 bytes, got 9 bytes that differ"]
    assert diff(rec, incoming("POST", "/upload", b"x"), MatchConfig.parse("method,path")) == []


def test_json_body_key_order_and_whitespace_do_not_matter() -> None:
    rec = recorded(1, "POST", "/v1/chat", CHAT)
    reordered = b'{ "temperature": 0.5, "messages": [{"content": "hi", "role": "user"}],\n' \
                b'  "stream": true, "model": "gpt-4o-mini" }'
    assert diff(rec, incoming("POST", "/v1/chat", reordered)) == []


def test_json_body_differences_name_the_field() -> None:
    rec = recorded(1, "POST", "/v1/chat", CHAT)
    changed = {**CHAT, "messages": [{"role": "user", "content": "bye"}], "temperature": 1}
    assert diff(rec, incoming("POST", "/v1/chat", changed)) == [
        'body field messages[0].content: recorded "hi", got "bye"',
        "body field temperature: recorded 0.5, got 1",
    ]
    extra = {**CHAT, "seed": 7}
    assert diff(rec, incoming("POST", "/v1/chat", extra)) == [
        "body field seed: not in the recording"]
    missing = {k: v for k, v in CHAT.items() if k != "stream"}
    assert diff(rec, incoming("POST", "/v1/chat", missing)) == [
        "body field stream: missing from the request"]


def test_json_lists_compare_in_order() -> None:
    rec = recorded(1, "POST", "/x", {"a": [1, 2]})
    assert diff(rec, incoming("POST", "/x", {"a": [2, 1]})) == [
        "body field a[0]: recorded 1, got 2", "body field a[1]: recorded 2, got 1"]
    assert diff(rec, incoming("POST", "/x", {"a": [1, 2, 3]})) == [
        "body field a: recorded [1, 2], got [1, 2, 3]"]


def test_ignored_json_fields_at_any_depth() -> None:
    rec = recorded(1, "POST", "/v1/chat", {**CHAT, "metadata": {"user_id": "u1", "trace": 1}})
    req = incoming("POST", "/v1/chat", {**CHAT, "model": "gpt-5",
                                        "metadata": {"user_id": "u2", "trace": 1}})
    assert len(diff(rec, req)) == 2
    assert diff(rec, req, MatchConfig.parse(ignore_json=["model", "user_id"])) == []
    # an ignored field may also be absent on either side
    absent = incoming("POST", "/v1/chat", {**CHAT, "metadata": {"trace": 1}})
    assert diff(rec, absent, MatchConfig.parse(ignore_json=["user_id"])) == []


def test_redacted_values_match_anything() -> None:
    rec = recorded(1, "POST", "/v1/chat?api_key=%5BREDACTED%5D",
                   {**CHAT, "api_key": MARKER, "auth": {"password": MARKER}},
                   headers=(("X-Api-Key", MARKER), ("X-Tenant", "acme")))
    req = incoming("POST", "/v1/chat?api_key=sk-live-123",
                   {**CHAT, "api_key": "sk-live-456", "auth": {"password": {"nested": True}}},
                   headers=(("x-api-key", "sk-live-789"), ("X-Tenant", "acme")))
    config = MatchConfig.parse("method,path,query,body,header:x-api-key,header:x-tenant")
    assert diff(rec, req, config) == []
    # ...but a redacted value is not a wildcard for a missing field or another field
    tenant = (("X-Tenant", "acme"),)
    assert diff(rec, incoming("POST", "/v1/chat?api_key=x", CHAT, tenant), config) == [
        "body field api_key: missing from the request",
        "body field auth: missing from the request",
    ]
    assert diff(rec, incoming("POST", "/v1/chat", {**CHAT, "api_key": "x", "auth": {}}),
                MatchConfig()) == ["query: recorded api_key=[REDACTED], got (none)",
                                   "body field auth.password: missing from the request"]


def test_named_headers_only() -> None:
    rec = recorded(1, headers=(("X-Tenant", "acme"), ("User-Agent", "curl/8")))
    config = MatchConfig.parse("method,path,header:X-Tenant")
    assert diff(rec, incoming(headers=(("x-tenant", "acme"), ("User-Agent", "httpx"))),
                config) == []
    assert diff(rec, incoming(headers=(("X-Tenant", "other"),)), config) == [
        "header x-tenant: recorded 'acme', got 'other'"]
    assert diff(rec, incoming(), config) == ["header x-tenant: recorded 'acme', got '(absent)'"]
    assert diff(rec, incoming(headers=(("X-Tenant", "other"),))) == []  # not a default criterion


def test_bare_headers_criterion_compares_all_but_ignored_and_transport_headers() -> None:
    rec = recorded(1, headers=(("Host", "upstream.test:8080"), ("Content-Length", "0"),
                               ("X-Tenant", "acme"), ("User-Agent", "curl/8")))
    same = incoming(headers=(("Host", "127.0.0.1:5555"), ("X-Tenant", "acme"),
                             ("User-Agent", "curl/8"), ("Last-Event-ID", "4")))
    config = MatchConfig.parse("method,path,headers")
    assert diff(rec, same, config) == []
    other = incoming(headers=(("X-Tenant", "acme"), ("User-Agent", "httpx")))
    assert diff(rec, other, config) == ["header user-agent: recorded 'curl/8', got 'httpx'"]
    ignoring = MatchConfig.parse("method,path,headers", ignore_headers=["User-Agent"])
    assert diff(rec, other, ignoring) == []


def test_ignored_header_wins_over_a_named_one() -> None:
    rec = recorded(1, headers=(("X-Tenant", "acme"),))
    config = MatchConfig.parse("path,header:x-tenant", ignore_headers=["X-Tenant"])
    assert diff(rec, incoming(headers=(("X-Tenant", "other"),)), config) == []


# -- the matcher: order, exhaustion, misses ------------------------------------------------


def test_first_matching_recording_wins_and_others_are_skipped() -> None:
    matcher = Matcher([recorded(1, target="/a"), recorded(2, target="/b"),
                       recorded(3, target="/b?x=1")])
    found = matcher.match(incoming(target="/b"))
    assert isinstance(found, Interaction) and found.id == 2


def test_identical_requests_follow_recorded_order_then_repeat_the_last() -> None:
    matcher = Matcher([recorded(1), recorded(2, target="/other"), recorded(3), recorded(4)])
    ids = [getattr(matcher.match(incoming()), "id", None) for _ in range(5)]
    assert ids == [1, 3, 4, 4, 4]
    assert getattr(matcher.match(incoming(target="/other")), "id", None) == 2


def test_exhausted_with_error_policy_is_a_miss() -> None:
    matcher = Matcher([recorded(1), recorded(2)], MatchConfig.parse(when_exhausted="error"))
    assert [getattr(matcher.match(incoming()), "id", None) for _ in range(2)] == [1, 2]
    miss = matcher.match(incoming())
    assert isinstance(miss, Miss) and miss.exhausted and miss.nearest is not None
    assert miss.nearest.id == 2
    assert miss.explain(incoming()) == (
        "sse-recorder: every recorded response to GET /ticks?n=3 was already served "
        "(policy: error)\n")
    assert isinstance(matcher.match(incoming()), Miss)  # and stays exhausted


def test_ignored_fields_let_different_requests_share_the_recorded_order() -> None:
    first = recorded(1, "POST", "/v1/chat", {**CHAT, "model": "one"})
    second = recorded(2, "POST", "/v1/chat", {**CHAT, "model": "two"})
    matcher = Matcher([first, second], MatchConfig.parse(ignore_json=["model"]))
    req = incoming("POST", "/v1/chat", {**CHAT, "model": "three"})
    assert [getattr(matcher.match(req), "id", None) for _ in range(3)] == [1, 2, 2]
    strict = Matcher([first, second])
    assert isinstance(strict.match(req), Miss)


def test_recordings_without_a_response_are_never_served() -> None:
    matcher = Matcher([recorded(1, response=False), recorded(2)])
    assert getattr(matcher.match(incoming()), "id", None) == 2
    only_failed = Matcher([recorded(1, response=False)])
    miss = only_failed.match(incoming())
    assert isinstance(miss, Miss) and not miss.exhausted
    assert miss.differences == ("(a recording without a response)",)


def test_miss_names_the_nearest_recording_and_the_differing_path() -> None:
    matcher = Matcher([recorded(1, target="/ci/logs"), recorded(2, target="/ticks?n=3"),
                       recorded(3, "POST", "/ticks?n=3", CHAT)])
    req = incoming(target="/tickz?n=3")
    miss = matcher.match(req)
    assert isinstance(miss, Miss) and not miss.exhausted
    assert miss.nearest is not None and miss.nearest.id == 2
    assert miss.explain(req) == (
        "sse-recorder: no recorded interaction matches GET /tickz?n=3\n"
        f"nearest recording: #2 GET {UP}/ticks?n=3\n"
        "  differs in path: recorded /ticks, got /tickz\n")


def test_miss_names_the_differing_json_field() -> None:
    matcher = Matcher([recorded(1, "POST", "/v1/messages", CHAT),
                       recorded(2, "POST", "/v1/chat", CHAT), recorded(3)])
    req = incoming("POST", "/v1/chat", {**CHAT, "messages": [{"role": "user", "content": "yo"}]})
    miss = matcher.match(req)
    assert isinstance(miss, Miss) and miss.nearest is not None and miss.nearest.id == 2
    text = miss.explain(req)
    assert f"nearest recording: #2 POST {UP}/v1/chat\n" in text
    assert '  differs in body field messages[0].content: recorded "hi", got "yo"\n' in text


def test_method_and_path_weigh_more_than_body_fields() -> None:
    # #1 differs in the method only; #2 in two body fields: #2 is nearer.
    body = {"a": 1, "b": 2, "c": 3}
    matcher = Matcher([recorded(1, "PUT", "/x", body),
                       recorded(2, "POST", "/x", {"a": 1, "b": 0, "c": 0})])
    miss = matcher.match(incoming("POST", "/x", body))
    assert isinstance(miss, Miss) and miss.nearest is not None and miss.nearest.id == 2
    assert len(miss.differences) == 2


def test_miss_on_an_empty_cassette() -> None:
    miss = Matcher([]).match(incoming())
    assert isinstance(miss, Miss) and miss.nearest is None
    assert miss.explain(incoming()) == (
        "sse-recorder: no recorded interaction matches GET /ticks?n=3\n"
        "the cassette has no interactions\n")


def test_long_json_values_are_shortened_in_explanations() -> None:
    rec = recorded(1, "POST", "/x", {"prompt": "a" * 200})
    (line,) = diff(rec, incoming("POST", "/x", {"prompt": "b" * 200}))
    assert line.startswith('body field prompt: recorded "aaa') and "..." in line
    assert len(line) < 160


# -- hostile requests: whatever a client sends, matching answers --------------------------


@pytest.mark.parametrize(("url", "parts"), [
    ("//[", ("", "", "//[", "")),  # origin-form: a path, even when it starts with //
    ("/a?b=1#frag", ("", "", "/a", "b=1")),
    ("http://[::1/x", ("http", "::1", "/x", "")),  # unpaired bracket: urlsplit raises
    ("http://a]b/", ("http", "a]b", "/", "")),
    ("HTTP://User@Host.Test:8080/p?q", ("http", "host.test", "/p", "q")),
    ("http://[::1]:8080/v1?x=[", ("http", "::1", "/v1", "x=[")),
    ("http://host", ("http", "host", "/", "")),
    ("*", ("", "", "*", "")),
])
def test_split_url_takes_anything(url: str, parts: tuple[str, str, str, str]) -> None:
    assert split_url(url) == parts


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60)
       | st.from_regex(r"[a-z]+://[\[\]:@a-z0-9./?#%]*", fullmatch=True))
def test_split_url_never_raises(url: str) -> None:
    scheme, host, path, query = split_url(url)
    assert path and "?" not in path and "#" not in path + query


@pytest.mark.parametrize("target", ["//[", "http://[::1/x", "http://a]b/", "/%zz?a=%%&[=]"])
def test_hostile_targets_are_a_miss_not_an_error(target: str) -> None:
    matcher = Matcher([recorded(1), recorded(2, "POST", "/v1/chat", CHAT)])
    miss = matcher.match(incoming(target=target, host="[::1"))
    assert isinstance(miss, Miss) and miss.nearest is not None
    assert "no recorded interaction matches" in miss.explain(incoming(target=target))


def test_json_nested_deeper_than_the_parser_goes_is_compared_as_bytes() -> None:
    """5,000 `[`: json.loads raises RecursionError, which used to escape."""
    matcher = Matcher([recorded(1, "POST", "/v1/chat", CHAT)])
    miss = matcher.match(incoming("POST", "/v1/chat", b"[" * 5000))
    assert isinstance(miss, Miss)
    size = len(json.dumps(CHAT))
    assert miss.differences == (f"body: recorded {size} bytes, got 5000 bytes that differ",)


def test_deep_json_is_compared_without_recursion() -> None:
    """Nesting the parser accepts is compared all the way down, whatever the stack holds."""
    depth = 900
    a, b = ("[" * depth + v + "]" * depth for v in ("1", "2"))
    found = diff(recorded(1, "POST", "/x", a.encode()), incoming("POST", "/x", b.encode()))
    assert found == [f"body field {'[0]' * depth}: recorded 1, got 2"]
    # a deep value is shown short, or said to be too deep, never raised
    found = diff(recorded(1, "POST", "/x", b'{"k": 1}'), incoming("POST", "/x", a.encode()))
    assert len(found) == 1 and found[0].startswith("body field (root): recorded {\"k\": 1}, got ")


def test_ignored_json_fields_are_skipped_at_any_depth() -> None:
    rec = recorded(1, "POST", "/x", {"a": {"seed": 1, "b": [{"seed": 2, "c": 3}]}})
    req = incoming("POST", "/x", {"a": {"seed": 9, "b": [{"seed": 8, "c": 4}]}})
    config = MatchConfig(ignore_json=frozenset({"seed"}))
    assert diff(rec, req, config) == ["body field a.b[0].c: recorded 3, got 4"]


# -- redacted path segments and parameters ----------------------------------------------------


@given(st.text(alphabet=st.characters(blacklist_characters="/;?#", blacklist_categories=("Cs",)),
               min_size=1, max_size=20))
def test_a_redacted_path_segment_matches_any_value(secret: str) -> None:
    rec = recorded(1, target="/v1/token/[REDACTED]/stream;api_key=[REDACTED]")
    matcher = Matcher([rec])
    assert matcher.match(incoming(target=f"/v1/token/{secret}/stream;api_key={secret}")) is rec
    assert diff(rec, incoming(target=f"/v1/token/{secret}/stream;api_key={secret}")) == []


def test_a_redacted_segment_stands_for_one_segment_only() -> None:
    rec = recorded(1, target="/v1/token/[REDACTED]/stream")
    assert diff(rec, incoming(target="/v1/token/a/b/stream")) == [
        "path: recorded /v1/token/[REDACTED]/stream, got /v1/token/a/b/stream"]
    assert diff(rec, incoming(target="/v1/token/abc/other")) != []
    assert isinstance(Matcher([rec]).match(incoming(target="/v2/token/abc/stream")), Miss)


def test_redacted_and_plain_recordings_keep_their_recorded_order() -> None:
    first = recorded(1, target="/v1/token/[REDACTED]/stream")
    second = recorded(2, target="/v1/token/abc/stream")
    matcher = Matcher([first, second])
    assert [matcher.match(incoming(target="/v1/token/abc/stream")) for _ in range(3)] == [
        first, second, second]


# -- remembered matches ---------------------------------------------------------------------

RECORDINGS = st.lists(st.builds(
    lambda method, target, body, header: (method, target, body, header),
    st.sampled_from(["GET", "POST"]), st.sampled_from(["/a", "/a?x=1", "/b", "/a?x=2&y=3"]),
    st.sampled_from([b"", b'{"k": 1}', b'{"k": 2}', b"x" * 5000]),
    st.sampled_from([(), (("x-team", "red"),), (("x-team", "blue"),)])), max_size=8)


@given(RECORDINGS, st.lists(st.integers(0, 32), max_size=30),
       st.sampled_from([None, "method,path", "method,path,query,body,header:x-team"]),
       st.sampled_from(list(WhenExhausted)))
def test_a_remembered_match_is_the_match_made_afresh(
    recordings: list[tuple[str, str, bytes, Headers]], sent: list[int], match: str | None,
    exhausted: WhenExhausted,
) -> None:
    """The Matcher remembers which recordings a request matches; a sequence of requests
    (the same ones again and again, bodies over and under the remembered size) gets the
    same answers, in the same recorded order, as a Matcher that works each out afresh."""
    interactions = [recorded(i + 1, method, target, body, headers)
                    for i, (method, target, body, headers) in enumerate(recordings)]
    sendable = [r[:3] for r in recordings] + [("GET", "/a", b""), ("GET", "/c", b""),
                                              ("POST", "/a", b'{"k": 3}')]
    pool = [incoming(method, target, body, headers) for method, target, body in sendable
            for headers in [(), (("x-team", "red"),), (("x-team", "blue"),)]]
    config = MatchConfig.parse(match, when_exhausted=exhausted.value)
    remembering, afresh = Matcher(interactions, config), Matcher(interactions, config)

    def answer(found: Interaction | Miss) -> object:
        return found.id if isinstance(found, Interaction) else (found.nearest, found.exhausted)

    for index in sent:
        request = pool[index % len(pool)]
        afresh._candidates.clear()
        assert answer(remembering.match(request)) == answer(afresh.match(request))
