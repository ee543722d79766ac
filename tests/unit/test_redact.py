"""Unit tests for `sse_recorder.record.redact`: headers, URLs, bodies and chunked SSE streams."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_recorder.model import Headers
from sse_recorder.record.redact import MARKER, RedactionRules, StreamRedactor
from sse_recorder.sse import Comment, Event, encode_event, parse

HYPOTHESIS = settings(
    max_examples=150,
    deadline=None,
    database=None,  # keep the working tree clean
    suppress_health_check=[HealthCheck.too_slow],
)
RULES = RedactionRules()
QUOTED_MARKER = f'"{MARKER}"'


# --------------------------------------------------------------------------------------------
# headers


def test_default_credential_headers_are_replaced_in_any_case_and_order_is_kept() -> None:
    headers: Headers = (
        ("Host", "api.example.com"),
        ("authorization", "Bearer sk-live-123"),
        ("Proxy-Authorization", "Basic dXNlcjpwYXNz"),
        ("COOKIE", "session=abc"),
        ("Set-Cookie", "id=xyz; HttpOnly"),
        ("x-API-key", "k-1"),
        ("Api-Key", "k-2"),
        ("Content-Type", "application/json"),
        ("Accept", "text/event-stream"),
    )
    assert RULES.redact_headers(headers) == (
        ("Host", "api.example.com"),
        ("authorization", MARKER),
        ("Proxy-Authorization", MARKER),
        ("COOKIE", MARKER),
        ("Set-Cookie", MARKER),
        ("x-API-key", MARKER),
        ("Api-Key", MARKER),
        ("Content-Type", "application/json"),
        ("Accept", "text/event-stream"),
    )


def test_repeated_headers_are_each_redacted() -> None:
    headers: Headers = (("Set-Cookie", "a=1"), ("X-Trace", "t"), ("set-cookie", "b=2"))
    assert RULES.redact_headers(headers) == (
        ("Set-Cookie", MARKER),
        ("X-Trace", "t"),
        ("set-cookie", MARKER),
    )


def test_headers_without_credentials_are_untouched() -> None:
    headers: Headers = (("Accept", "*/*"), ("X-Request-Id", "r-1"), ("User-Agent", "ua"))
    assert RULES.redact_headers(headers) == headers


def test_extra_header_names_match_case_insensitively() -> None:
    rules = RedactionRules.with_extra(headers=["X-Session-Secret"])
    headers: Headers = (("x-session-secret", "s"), ("Authorization", "a"), ("X-Other", "o"))
    assert rules.redact_headers(headers) == (
        ("x-session-secret", MARKER),
        ("Authorization", MARKER),  # the defaults are kept
        ("X-Other", "o"),
    )
    assert RULES.redact_headers(headers)[0] == ("x-session-secret", "s")  # defaults unchanged


# --------------------------------------------------------------------------------------------
# URLs


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://api.example.com/v1/chat?api_key=sk-123&model=gpt-4",
            f"https://api.example.com/v1/chat?api_key={MARKER}&model=gpt-4",
        ),
        (
            "https://maps.example.com/x?key=AIza999&token=t0k&q=paris",
            f"https://maps.example.com/x?key={MARKER}&token={MARKER}&q=paris",
        ),
        (
            "http://h/p?Access_Token=abc&SIG=zz&stream=true",
            f"http://h/p?Access_Token={MARKER}&SIG={MARKER}&stream=true",
        ),
        (
            "http://h/p?password=hunter2#frag",
            f"http://h/p?password={MARKER}#frag",
        ),
    ],
)
def test_secret_query_parameters_are_redacted(url: str, expected: str) -> None:
    assert RULES.redact_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://api.example.com/v1/chat",
        "https://api.example.com/v1/chat?model=gpt-4&stream=true",
        "https://api.example.com/search?q=a%20b+c&keys=1",  # 'keys' is not 'key'
    ],
)
def test_urls_without_secret_parameters_are_returned_unchanged(url: str) -> None:
    assert RULES.redact_url(url) == url


def test_extra_query_parameter_names() -> None:
    rules = RedactionRules.with_extra(query_params=["SessionId"])
    url = "https://h/p?sessionid=s1&api_key=k&page=2"
    assert rules.redact_url(url) == f"https://h/p?sessionid={MARKER}&api_key={MARKER}&page=2"
    assert RULES.redact_url(url) == f"https://h/p?sessionid=s1&api_key={MARKER}&page=2"


# --------------------------------------------------------------------------------------------
# bodies


def test_json_fields_are_redacted_at_any_depth_and_numbers_too() -> None:
    body = {
        "model": "gpt-4",
        "api_key": "sk-live-abc",
        "auth": {"password": "hun\"ter2", "user": "bob", "nested": [{"secret": 123456.5e3}]},
        "client_secret": True,
        "count": 3,
    }
    out = RULES.redact_body(json.dumps(body).encode(), "application/json")
    redacted = json.loads(out)
    assert redacted == {
        "model": "gpt-4",
        "api_key": MARKER,
        "auth": {"password": MARKER, "user": "bob", "nested": [{"secret": MARKER}]},
        "client_secret": MARKER,
        "count": 3,
    }
    assert b"sk-live-abc" not in out and b"ter2" not in out and b"123456" not in out


def test_json_keys_match_exactly() -> None:
    text = b'{"Password": "keep", "password": "drop", "my_password": "keep2"}'
    out = RULES.redact_json_text(text)
    assert json.loads(out) == {"Password": "keep", "password": MARKER, "my_password": "keep2"}


def test_extra_json_fields() -> None:
    rules = RedactionRules.with_extra(json_fields=["sessionKey"])
    text = b'{"sessionKey": "s-1", "api_key": "k", "other": "o"}'
    assert json.loads(rules.redact_json_text(text)) == {
        "sessionKey": MARKER,
        "api_key": MARKER,
        "other": "o",
    }
    assert json.loads(RULES.redact_json_text(text))["sessionKey"] == "s-1"


def test_multi_line_json_split_over_several_data_lines_is_redacted() -> None:
    # Like the seed's token-refresh event, but pretty-printed: one data: line per JSON line.
    payload = {
        "newToken": "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.demo.sig",
        "expiresIn": 3600,
        "refreshToken": "refresh_token_demo",
    }
    stream = encode_event(json.dumps(payload, indent=2), event="token-refresh", id="7")
    assert stream.count(b"data: ") == 5  # really split over several lines
    out = RULES.redact_json_text(stream)
    assert b"eyJ0eXAi" not in out and b"refresh_token_demo" not in out
    (event,) = parse(out)
    assert isinstance(event, Event)
    assert (event.type, event.id) == ("token-refresh", "7")
    assert json.loads(event.data) == {
        "newToken": MARKER,
        "expiresIn": 3600,
        "refreshToken": MARKER,
    }


def test_form_encoded_body_loses_secret_parameters() -> None:
    body = b"grant_type=password&username=bob&password=hunter2&client_secret=cs-1"
    out = RULES.redact_body(body, "application/x-www-form-urlencoded; charset=utf-8")
    assert out == (
        f"grant_type=password&username=bob&password={MARKER}&client_secret={MARKER}".encode()
    )


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "Application/X-WWW-Form-URLEncoded; charset=UTF-8"],
)
def test_form_content_type_matches_case_insensitively(content_type: str) -> None:
    out = RULES.redact_body(b"token=t0k&x=1", content_type)  # media types ignore case
    assert out == f"token={MARKER}&x=1".encode()


def test_form_body_without_secrets_is_unchanged() -> None:
    body = b"a=1&b=two+words&c=%2F"
    assert RULES.redact_body(body, "application/x-www-form-urlencoded") == body


def test_body_without_secrets_is_unchanged() -> None:
    body = b'{"messages": [{"role": "user", "content": "password: token"}]}'
    assert RULES.redact_body(body, "application/json") == body
    assert RULES.redact_body(b"\x00\xff binary", None) == b"\x00\xff binary"


# --------------------------------------------------------------------------------------------
# StreamRedactor: deterministic release rules


def test_chunk_ending_with_newline_is_released_immediately() -> None:
    redactor = StreamRedactor(RULES)
    assert redactor.feed(10, b"data: {\"a\": 1}\n") == [(10, b"data: {\"a\": 1}\n")]
    assert redactor.feed(20, b"\n") == [(20, b"\n")]
    assert redactor.feed(30, b"data: x\r") == [(30, b"data: x\r")]  # CR ends a line too
    assert redactor.flush() == []


def test_chunk_ending_mid_line_is_held_until_the_line_completes() -> None:
    redactor = StreamRedactor(RULES)
    assert redactor.feed(1, b'data: {"password": "hun') == []
    assert redactor.feed(2, b"") == []
    assert redactor.feed(3, b'ter2", "x": 1') == []
    released = redactor.feed(4, b"}\n\n")
    assert [offset for offset, _ in released] == [1, 2, 3, 4]
    joined = b"".join(data for _, data in released)
    assert joined == f'data: {{"password": {QUOTED_MARKER}, "x": 1}}\n\n'.encode()
    assert all(b"hun" not in data and b"ter2" not in data for _, data in released)
    assert released[1][1] == b""  # an empty chunk stays empty


def test_held_chunks_are_released_by_flush() -> None:
    redactor = StreamRedactor(RULES)
    assert redactor.feed(5, b"data: ok\n") == [(5, b"data: ok\n")]
    assert redactor.feed(6, b'data: {"token_count": 1, "secret": "abc') == []
    released = redactor.flush()
    assert released == [(6, f'data: {{"token_count": 1, "secret": {QUOTED_MARKER}'.encode())]
    assert redactor.flush() == []


def test_chunks_without_secrets_pass_through_unchanged() -> None:
    redactor = StreamRedactor(RULES)
    chunks = [(1, b"data: he"), (2, b"llo\n"), (3, b"\n: ping\n\n")]
    out = redactor.feed(*chunks[0]) + redactor.feed(*chunks[1]) + redactor.feed(*chunks[2])
    assert out == chunks


# --------------------------------------------------------------------------------------------
# StreamRedactor: any chunking gives the same bytes as redacting the whole stream

SECRET_KEYS = ["api_key", "access_token", "refresh_token", "newToken", "password", "secret"]
PLAIN_KEYS = ["model", "content", "role", "status"]
hex_secret = st.text("0123456789abcdef", min_size=12, max_size=24).map(lambda s: "s3cr3t" + s)
number_secret = st.integers(10**11, 10**13)
plain_value = st.text("GHIJKLMNOPQRSTUVWXYZ ", max_size=12)


@st.composite
def secret_stream(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """An SSE stream whose JSON events carry secrets; returns it and the secrets' texts."""
    secrets: list[str] = []
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    parts: list[bytes] = []
    for _ in range(draw(st.integers(1, 5))):
        obj: dict[str, object] = {}
        for key in draw(st.lists(st.sampled_from(PLAIN_KEYS), max_size=3, unique=True)):
            obj[key] = draw(plain_value)
        secret_keys = st.lists(st.sampled_from(SECRET_KEYS), min_size=1, max_size=3, unique=True)
        for key in draw(secret_keys):
            value: object = draw(st.one_of(hex_secret, number_secret))
            secrets.append(str(value))
            if draw(st.booleans()):
                nested = obj.setdefault("nested", {"kind": "inner"})
                assert isinstance(nested, dict)
                nested[key] = value
            else:
                obj[key] = value
        indent = draw(st.sampled_from([None, 2]))
        if draw(st.booleans()):
            parts.append(encode_event(comment="keep-alive", newline=newline))
        event_type = draw(st.sampled_from([None, "message", "token-refresh"]))
        text = json.dumps(obj, indent=indent)
        parts.append(encode_event(text, event=event_type, newline=newline))
    return b"".join(parts), secrets


def _cut(stream: bytes, points: list[int]) -> list[bytes]:
    bounds = [0, *sorted(points), len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@HYPOTHESIS
@given(data=st.data(), sample=secret_stream())
def test_any_chunking_redacts_like_the_whole_stream(
    data: st.DataObject, sample: tuple[bytes, list[str]]
) -> None:
    stream, secrets = sample
    points = data.draw(st.lists(st.integers(0, len(stream)), max_size=30), label="cuts")
    chunks = _cut(stream, points)
    offsets = [1000 * i + 7 for i in range(len(chunks))]

    redactor = StreamRedactor(RULES)
    released: list[tuple[int, bytes]] = []
    last_complete = -1  # index of the last chunk that ended a line
    for i, (offset, chunk) in enumerate(zip(offsets, chunks, strict=True)):
        released += redactor.feed(offset, chunk)
        if chunk.endswith((b"\n", b"\r")):
            last_complete = i
        # released as soon as (and only when) every line the chunks touch is complete
        assert len(released) == last_complete + 1
    released += redactor.flush()

    assert [offset for offset, _ in released] == offsets
    output = b"".join(data for _, data in released)
    assert output == RULES.redact_json_text(stream)
    for secret in secrets:
        needle = secret.encode()
        assert needle in stream
        assert needle not in output
        for _, piece in released:
            # no piece of the secret either (the marker is split across chunks instead)
            assert not any(needle[k : k + 8] in piece for k in range(len(needle) - 7))
    # the stream still parses to the same events, with the secrets replaced
    items = parse(output)
    assert len(items) == len(parse(stream))
    for item in items:
        if isinstance(item, Event):
            assert MARKER in item.data
        else:
            assert isinstance(item, Comment) and item.text == "keep-alive"
