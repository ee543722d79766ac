"""Unit tests for `sse_recorder.record.redact`: names, values, URLs, headers, bodies, SSE
regions and content codings."""

from __future__ import annotations

import base64
import gzip
import json
import zlib

import brotli
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_recorder.model import Headers, RecordedRequest
from sse_recorder.record.redact import (
    MARKER,
    RedactionRules,
    SecretOptionError,
    StreamDecoder,
    apply,
    content_codings,
    decode_body,
    secret_values,
    split_like,
    value_forms,
    without_coding,
)
from sse_recorder.sse import Comment, Event, encode_event, parse

HYPOTHESIS = settings(
    max_examples=150,
    deadline=None,
    database=None,  # keep the working tree clean
    suppress_health_check=[HealthCheck.too_slow],
)
RULES = RedactionRules()
SCRUB = RULES.scrubber()
QUOTED = f'"{MARKER}"'


# --------------------------------------------------------------------------------------------
# names: what a credential's name looks like


@pytest.mark.parametrize(
    "key",
    ["token", "Token", "newToken", "access_token", "refreshToken", "id_token", "authToken",
     "api_key", "apiKey", "API_KEY", "apikey", "x-api-key", "secret_key", "secret",
     "client_secret", "clientSecret", "password", "Password", "my_password",
     "password_confirmation", "passwd", "credentials", "authorization", "Authorization",
     "auth", "cookie", "Set-Cookie", "x-auth-token"],
)
def test_credential_shaped_json_keys_are_redacted(key: str) -> None:
    out = SCRUB.text(json.dumps({key: "S3CRET-VALUE", "n": 1}).encode())
    assert json.loads(out) == {key: MARKER, "n": 1}


@pytest.mark.parametrize(
    "key",
    ["max_tokens", "prompt_tokens", "input_tokens", "token_type", "token_count", "monkey",
     "key", "keys", "hotkey", "content", "model", "tokenizer", "oauth_provider"],
)
def test_other_keys_are_kept(key: str) -> None:
    body = json.dumps({key: "visible", "n": 1}).encode()
    assert SCRUB.text(body) == body


def test_json_values_of_any_type_become_the_marker_and_null_is_kept() -> None:
    body = {
        "password": {"value": "OBJ-SECRET", "nested": ["x", {"y": "}"}]},
        "api_key": ["ARR-SECRET", 1],
        "token": 12345678901,
        "secret": True,
        "client_secret": None,
        "after": "kept",
    }
    out = SCRUB.text(json.dumps(body).encode())
    assert json.loads(out) == {"password": MARKER, "api_key": MARKER, "token": MARKER,
                               "secret": MARKER, "client_secret": None, "after": "kept"}
    pretty = SCRUB.text(json.dumps(body, indent=2).encode())
    assert json.loads(pretty) == json.loads(out)


def test_escaped_json_inside_a_json_string_is_redacted() -> None:
    inner = json.dumps({"api_key": "ESC-SECRET", "quote": 'a"b', "n": 1})
    outer = json.dumps({"arguments": inner, "other": "x"}).encode()
    assert b'\\"api_key\\"' in outer
    out = SCRUB.text(outer)
    assert b"ESC-SECRET" not in out
    assert json.loads(json.loads(out)["arguments"]) == {"api_key": MARKER, "quote": 'a"b',
                                                        "n": 1}
    twice = json.dumps({"wrapped": outer.decode()}).encode()  # escaped twice
    assert b"ESC-SECRET" not in SCRUB.text(twice)


def test_extra_names() -> None:
    rules = RedactionRules.with_extra(headers=["X-Session"], query_params=["sid"],
                                      json_fields=["sessionKey2"])
    scrub = rules.scrubber()
    assert scrub.headers((("x-session", "v"), ("X-Other", "o"))) == (
        ("x-session", MARKER), ("X-Other", "o"))
    assert scrub.url("http://h/p?sid=1&a=2") == f"http://h/p?sid={MARKER}&a=2"
    assert json.loads(scrub.text(b'{"sessionKey2": "v", "sessionkey2": "w"}')) == {
        "sessionKey2": MARKER, "sessionkey2": "w"}  # JSON extras match exactly


# --------------------------------------------------------------------------------------------
# headers


def test_credential_headers_and_url_valued_headers() -> None:
    headers: Headers = (
        ("Host", "api.example.com"),
        ("authorization", "Bearer sk-live-123"),
        ("Proxy-Authorization", "Basic dXNlcjpwYXNz"),
        ("COOKIE", "session=abc"),
        ("Set-Cookie", "id=xyz; HttpOnly"),
        ("x-API-key", "k-1"),
        ("X-Custom-Auth", "custom-1"),
        ("X-Amz-Security-Token", "amz-1"),
        ("Referer", "https://app.example.com/page?api_key=REF-1&tab=2"),
        ("Location", "https://example.com/cb;token=LOC-1"),
        ("Accept", "text/event-stream"),
    )
    assert SCRUB.headers(headers) == (
        ("Host", "api.example.com"),
        ("authorization", MARKER),
        ("Proxy-Authorization", MARKER),
        ("COOKIE", MARKER),
        ("Set-Cookie", MARKER),
        ("x-API-key", MARKER),
        ("X-Custom-Auth", MARKER),
        ("X-Amz-Security-Token", MARKER),
        ("Referer", f"https://app.example.com/page?api_key={MARKER}&tab=2"),
        ("Location", f"https://example.com/cb;token={MARKER}"),
        ("Accept", "text/event-stream"),
    )


def test_headers_without_credentials_are_untouched() -> None:
    headers: Headers = (("Accept", "*/*"), ("X-Request-Id", "r-1"), ("Keep-Alive", "5"),
                        ("Content-Type", "text/plain; charset=utf-8"))
    assert SCRUB.headers(headers) == headers


# --------------------------------------------------------------------------------------------
# URLs


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://h/v1/chat?api_key=sk-123&model=gpt-4",
         "https://h/v1/chat?api_key=R&model=gpt-4"),
        ("https://h/x?key=AIza999&token=t0k&q=paris", "https://h/x?key=R&token=R&q=paris"),
        ("http://h/p?Access_Token=abc&SIG=zz&stream=true",
         "http://h/p?Access_Token=R&SIG=R&stream=true"),
        ("http://h/p?a=1;api_key=SEMI;b=2", "http://h/p?a=1;api_key=R;b=2"),  # ; separators
        ("http://h/p;jsessionid=x;api_key=MATRIX/y", "http://h/p;jsessionid=x;api_key=R/y"),
        ("http://h/v1/api_key/PATH-SECRET/stream", "http://h/v1/api_key/R/stream"),
        ("http://h/token/PATH-2?x=1", "http://h/token/R?x=1"),
        ("http://user:PW-1@h/p", "http://user:R@h/p"),
        ("http://h/cb#access_token=FRAG-1&state=s", "http://h/cb#access_token=R&state=s"),
        ("http://h/p?password=hunter2#frag", "http://h/p?password=R#frag"),
    ],
)
def test_secret_parts_of_urls_are_redacted(url: str, expected: str) -> None:
    assert SCRUB.url(url) == expected.replace("=R", f"={MARKER}").replace(
        "/R", f"/{MARKER}").replace(":R@", f":{MARKER}@")


@pytest.mark.parametrize(
    "url",
    ["https://api.example.com/v1/chat",
     "https://api.example.com/v1/chat?model=gpt-4&stream=true",
     "https://api.example.com/search?q=a%20b+c&keys=1",  # 'keys' is not 'key', kept as sent
     "https://h/v1/tokens/count?max_tokens=5"],
)
def test_urls_without_secrets_are_returned_unchanged(url: str) -> None:
    assert SCRUB.url(url) == url


# --------------------------------------------------------------------------------------------
# values: --redact-value, --redact-env and what a request taught


def test_value_forms_cover_encodings() -> None:
    secret = "sk-proj-ABCDEF123456/+="
    text = b" | ".join([
        secret.encode(),
        b"prefix" + secret.encode() + b"suffix",
        b"%s" % json.dumps({"v": secret}).encode(),
        b"q=" + secret.replace("/", "%2F").replace("+", "%2B").replace("=", "%3D").encode(),
        *(base64.b64encode(b"x" * k + secret.encode() + b"tail") for k in range(3)),
        *(base64.urlsafe_b64encode(b"Bearer " * k + secret.encode()) for k in range(3)),
    ])
    scrub = RedactionRules.with_extra(values=[secret]).scrubber()
    out = scrub.text(text)
    assert secret.encode() not in out
    assert b"ABCDEF123456" not in out
    for form in value_forms(secret):
        assert form not in out
    assert out.count(MARKER.encode()) == 10  # each form, each alignment, once


@pytest.mark.parametrize(("secret", "spelled"), [
    ("a/b-secret", rb'{"m":"a\/b-secret"}'),  # PHP's json_encode escapes `/`
    ("x<y&z-secret", rb'{"m":"x\u003cy\u0026z-secret"}'),  # Go's encoding/json
    ("h\u00e9llo-secret", rb'{"m":"h\u00E9llo-secret"}'),  # upper-case hex
    ("h\u00e9llo-secret", rb'{"m":"h\u00e9llo-secret"}'),
    ("a/b c@secret", b"v=a%2fb%20c%40secret"),  # lower-case percent escapes (RFC 3986)
    ("a/b c@secret", b"v=a%2Fb+c%40secret"),  # a form's `+` for a space
    ("emoji-\U0001F600-secret", rb'"emoji-\ud83d\ude00-secret"'),  # a surrogate pair
    ("plain-secret", rb'"\u0070lain-secret"'),  # any character may be escaped
    ("a b c-secret", b"q=a+b c-secret"),  # no % nor backslash: + alone picks the spelled scan
])
def test_values_are_found_in_every_spelling(secret: str, spelled: bytes) -> None:
    """What encoders agree on is the characters, not the form: each of these left the
    value in the cassette before (an audit found the first five)."""
    out = RedactionRules.with_extra(values=[secret]).scrubber().text(b"before " + spelled)
    assert out.startswith(b"before ") and MARKER.encode() in out
    assert b"secret" not in out, out


def test_secret_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSE_TEST_KEY", "env-secret-1")
    monkeypatch.delenv("SSE_TEST_MISSING", raising=False)
    assert secret_values(["given"], ["SSE_TEST_KEY"]) == ["given", "env-secret-1"]
    with pytest.raises(SecretOptionError, match="SSE_TEST_MISSING is not set") as missing:
        secret_values([], ["SSE_TEST_MISSING"])
    assert missing.value.option == "env"
    with pytest.raises(SecretOptionError, match="an empty value cannot be redacted") as empty:
        secret_values([""], ["SSE_TEST_KEY"])
    assert empty.value.option == "values"


def test_values_a_request_gave_away_are_scrubbed_from_its_echo() -> None:
    request = RecordedRequest(
        "POST", "https://h/users/BEARER-TOKEN-1/stream?api_key=QUERY-KEY-2",
        (("Authorization", "Bearer BEARER-TOKEN-1"), ("X-Custom-Auth", "CUSTOM-3"),
         ("Content-Type", "application/json")),
        b'{"password": "BODY-PW-4", "n": 1}',
    )
    stored, scrub = SCRUB.request(request)
    assert stored.url == f"https://h/users/{MARKER}/stream?api_key={MARKER}"
    assert dict(stored.headers)["Authorization"] == MARKER
    assert json.loads(stored.body) == {"password": MARKER, "n": 1}
    echo = json.dumps({"headers": dict(request.headers), "url": request.url,
                       "body": request.body.decode(), "bare": "BODY-PW-4 CUSTOM-3"}).encode()
    out = scrub.text(echo)
    for secret in (b"BEARER-TOKEN-1", b"QUERY-KEY-2", b"CUSTOM-3", b"BODY-PW-4"):
        assert secret not in out
    assert SCRUB.text(b"BODY-PW-4") == b"BODY-PW-4"  # learned for that interaction only


def test_short_values_are_not_learned() -> None:
    _, scrub = SCRUB.request(RecordedRequest("GET", "http://h/?token=1", ()))
    assert scrub.text(b'{"n": 1}') == b'{"n": 1}'


def test_form_bodies_lose_secret_parameters() -> None:
    body = b"grant_type=password&username=bob&password=hunter2&client_secret=cs-1"
    assert SCRUB.text(body) == (
        f"grant_type=password&username=bob&password={MARKER}&client_secret={MARKER}".encode()
    )
    assert SCRUB.text(b"a=1&b=two+words&c=%2F") == b"a=1&b=two+words&c=%2F"


def test_bodies_without_secrets_are_unchanged() -> None:
    body = b'{"messages": [{"role": "user", "content": "password: token"}]}'
    assert SCRUB.text(body) == body
    assert SCRUB.text(b"\x00\xff binary") == b"\x00\xff binary"


# --------------------------------------------------------------------------------------------
# SSE regions: each event's data as the client sees it


def test_a_value_wrapped_over_two_data_lines_is_redacted_and_lines_are_kept() -> None:
    region = (b'data: {"newToken": "WRAP\ndata: PED-1", "n": 1}\n\n'
              b'data: {"password":\ndata:   {"v": "OBJ-2"}}\n\n'
              b': {"token": "COMMENT-3"}\n'
              b'id: 7\nevent: x\ndata: {"a": 1}\n\n')
    out = apply(region, SCRUB.stream_spans(region))
    for secret in (b"WRAP", b"PED-1", b"OBJ-2", b"COMMENT-3"):
        assert secret not in out
    items = parse(out)
    assert [type(i) for i in items] == [Event, Event, Comment, Event]
    assert isinstance(items[0], Event) and isinstance(items[1], Event)
    assert json.loads(items[0].data) == {"newToken": MARKER, "n": 1}
    assert json.loads(items[1].data) == {"password": MARKER}
    assert out.count(b"\n") == region.count(b"\n")


def test_split_like_keeps_chunk_count_and_timing() -> None:
    chunks = [b'data: {"password": "hun', b"", b'ter2", "x": 1', b"}\n\n"]
    out = split_like(chunks, SCRUB.stream_spans(b"".join(chunks)))
    assert len(out) == 4  # one piece per chunk: each keeps its own time
    assert b"".join(out) == f'data: {{"password": {QUOTED}, "x": 1}}\n\n'.encode()
    assert all(b"hun" not in d and b"ter2" not in d for d in out)
    assert out[1] == b""


SECRET_KEYS = ["api_key", "access_token", "refresh_token", "newToken", "password", "secret"]
PLAIN_KEYS = ["model", "content", "role", "status"]
hex_secret = st.text("0123456789abcdef", min_size=12, max_size=24).map(lambda s: "s3cr3t" + s)
plain_value = st.text("GHIJKLMNOPQRSTUVWXYZ ", max_size=12)


@st.composite
def secret_stream(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """An SSE stream whose JSON events carry secrets, some wrapped over data: lines."""
    secrets: list[str] = []
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    parts: list[bytes] = []
    for _ in range(draw(st.integers(1, 4))):
        obj: dict[str, object] = {k: draw(plain_value) for k in
                                  draw(st.lists(st.sampled_from(PLAIN_KEYS), max_size=2,
                                                unique=True))}
        for key in draw(st.lists(st.sampled_from(SECRET_KEYS), min_size=1, max_size=2,
                                 unique=True)):
            value = draw(hex_secret)
            secrets.append(value)
            obj[key] = {"inner": value} if draw(st.booleans()) else value
        text = json.dumps(obj, indent=draw(st.sampled_from([None, 2])))
        if draw(st.booleans()):  # wrap one line in the middle of a value
            at = text.find(secrets[-1]) + draw(st.integers(1, 10))
            text = text[:at] + "\n" + text[at:]
        parts.append(encode_event(text, event=draw(st.sampled_from([None, "refresh"])),
                                  newline=newline))
    return b"".join(parts), secrets


@HYPOTHESIS
@given(sample=secret_stream())
def test_stream_regions_lose_every_secret_and_keep_their_events(
    sample: tuple[bytes, list[str]],
) -> None:
    stream, secrets = sample
    out = apply(stream, SCRUB.stream_spans(stream))
    for secret in secrets:
        assert secret[:12].encode() not in out and secret[-10:].encode() not in out
    before, after = parse(stream), parse(out)
    assert len(after) == len(before)
    assert all(isinstance(item, Event) and MARKER in item.data for item in after)


# --------------------------------------------------------------------------------------------
# content codings


def _deflate_raw(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("coding", "encode"),
    [("gzip", gzip.compress), ("x-gzip", gzip.compress), ("deflate", zlib.compress),
     ("deflate", _deflate_raw), ("br", brotli.compress),
     ("gzip", lambda d: gzip.compress(d[:10]) + gzip.compress(d[10:]))],  # two members
)
def test_bodies_are_decoded_whole_and_by_chunk(coding: str, encode: object) -> None:
    body = b'{"access_token": "ZIP-SECRET", "pad": "' + b"x" * 5000 + b'"}'
    assert callable(encode)
    raw = encode(body)
    headers = (("Content-Encoding", coding.upper()),)
    codings = content_codings(headers)
    assert codings == [coding]
    assert decode_body(raw, codings) == body
    decoder = StreamDecoder(codings)
    assert b"".join(decoder.decode(raw[i:i + 7]) for i in range(0, len(raw), 7)) == body


def test_coding_lists_unknown_codings_and_damage() -> None:
    assert content_codings((("content-encoding", "gzip, br"),)) == ["gzip", "br"]
    assert content_codings((("content-encoding", "identity"),)) == []
    assert content_codings((("content-encoding", "compress"),)) is None
    assert decode_body(b"not gzip at all", ["gzip"]) is None
    layered = brotli.compress(gzip.compress(b"both"))
    assert decode_body(layered, ["gzip", "br"]) == b"both"


def test_a_decompression_bomb_is_not_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    import sse_recorder.record.redact as redact

    monkeypatch.setattr(redact, "MAX_DECODED", 1000)
    assert decode_body(gzip.compress(b"0" * 100_000), ["gzip"]) is None
    assert decode_body(gzip.compress(b"0" * 500), ["gzip"]) == b"0" * 500


def test_without_coding() -> None:
    headers = (("Content-Type", "a/b"), ("Content-Encoding", "gzip"), ("Content-Length", "9"))
    assert without_coding(headers, 42) == (("Content-Type", "a/b"), ("Content-Length", "42"))
    assert without_coding(headers, None) == (("Content-Type", "a/b"),)
