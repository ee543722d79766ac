"""The CORS policy as tables: origins parsed, preflights answered, heads rewritten, notes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sse_recorder.errors import ConfigError
from sse_recorder.model import Headers, header_value
from sse_recorder.replay.cors import WILDCARD_WARNING, Cors, is_preflight, normalise_origin

PAGE = "http://localhost:3000"
OTHER = "https://evil.example"


@pytest.mark.parametrize(("given_text", "origin"), [
    ("http://localhost:3000", "http://localhost:3000"),
    ("HTTP://LocalHost:3000/", "http://localhost:3000"),
    ("https://app.example:443", "https://app.example"),
    ("http://app.example:80", "http://app.example"),
    ("http://app.example:8443", "http://app.example:8443"),
    ("http://[::1]:5173", "http://[::1]:5173"),
    ("*", "*"),
    ("null", "null"),
])
def test_origins_are_normalised_as_browsers_send_them(given_text: str, origin: str) -> None:
    assert normalise_origin(given_text) == origin


@pytest.mark.parametrize("bad", [
    "localhost:3000", "http://localhost:3000/app", "http://h/?q", "http://u:p@h", "http://h:99999",
    "", "http://",
])
def test_what_is_not_an_origin_is_refused_in_one_line(bad: str) -> None:
    with pytest.raises(ConfigError) as exc:
        Cors.parse([bad])
    assert "--cors" in str(exc.value) and "\n" not in str(exc.value)


def test_off_by_default_everything_passes_as_recorded() -> None:
    cors = Cors()
    recorded = (("Content-Type", "text/event-stream"), ("Access-Control-Allow-Origin", OTHER))
    request = (("Origin", PAGE), ("Access-Control-Request-Method", "POST"))
    assert not cors.enabled and cors.warnings == []
    assert cors.preflight("OPTIONS", request) is None  # matched against recordings as before
    assert cors.response_headers(request, recorded) == recorded


def test_wildcard_warns() -> None:
    assert Cors.parse(["*"]).warnings == [WILDCARD_WARNING]
    assert Cors.parse([PAGE]).warnings == []


PREFLIGHT = (("Host", "127.0.0.1:8766"), ("Origin", PAGE),
             ("Access-Control-Request-Method", "POST"),
             ("Access-Control-Request-Headers", "authorization,content-type"))


@pytest.mark.parametrize(("method", "headers", "expected"), [
    ("OPTIONS", PREFLIGHT, True),
    ("OPTIONS", PREFLIGHT[:2], False),  # a plain OPTIONS: for the recordings
    ("OPTIONS", (("Access-Control-Request-Method", "POST"),), False),  # no Origin
    ("POST", PREFLIGHT, False),
])
def test_what_a_preflight_is(method: str, headers: Headers, expected: bool) -> None:
    assert is_preflight(method, headers) is expected


# policy, request extra headers -> status, expected fields (None: absent)
PREFLIGHT_TABLE = [
    ([PAGE], (), 204, {"access-control-allow-origin": PAGE,
                       "access-control-allow-credentials": "true", "vary": "Origin",
                       "access-control-allow-methods": "POST",
                       "access-control-allow-headers": "authorization,content-type",
                       "access-control-max-age": "600",
                       "access-control-allow-private-network": None}),
    (["*"], (), 204, {"access-control-allow-origin": "*",
                      "access-control-allow-credentials": None, "vary": None}),
    ([PAGE], (("Access-Control-Request-Private-Network", "true"),), 204,
     {"access-control-allow-private-network": "true"}),
    ([OTHER], (), 403, {"access-control-allow-origin": None,
                        "access-control-allow-methods": None}),
]


@pytest.mark.parametrize(("origins", "extra", "status", "fields"), PREFLIGHT_TABLE)
def test_preflights_are_answered_by_the_policy(
    origins: list[str], extra: Headers, status: int, fields: dict[str, str | None]
) -> None:
    answer = Cors.parse(origins).preflight("OPTIONS", PREFLIGHT + extra)
    assert answer is not None and answer.status == status
    for name, value in fields.items():
        assert header_value(answer.headers, name) == value, name
    if status == 403:
        assert f"add --cors {PAGE}" in answer.explanation
        assert answer.body.decode() == (f"sse-recorder: CORS preflight for POST from Origin "
                                        f"{PAGE} refused\n--cors allows {OTHER}; add --cors "
                                        f"{PAGE}\n")
    else:
        assert answer.body == b""


RECORDED: Headers = (
    ("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"),
    ("Access-Control-Allow-Origin", "https://chat.example"),
    ("access-control-allow-credentials", "true"), ("Retry-After", "2"),
    ("x-ratelimit-remaining-requests", "99"), ("Set-Cookie", "a=b"), ("Connection", "close"),
)


@pytest.mark.parametrize(("origins", "origin", "expected"), [
    # an allowed named origin: echoed, with credentials; the recorded fields gone
    ([PAGE], PAGE, {"access-control-allow-origin": [PAGE],
                    "access-control-allow-credentials": ["true"], "vary": ["Origin"],
                    "access-control-expose-headers":
                        ["Retry-After, x-ratelimit-remaining-requests"]}),
    (["*"], PAGE, {"access-control-allow-origin": ["*"], "access-control-allow-credentials": [],
                   "vary": []}),
    ([OTHER, "*"], OTHER, {"access-control-allow-origin": [OTHER]}),
    # not allowed, or no Origin at all: no CORS fields, the recorded ones gone too
    ([OTHER], PAGE, {"access-control-allow-origin": [], "access-control-allow-credentials": [],
                     "access-control-expose-headers": []}),
    ([PAGE], None, {"access-control-allow-origin": [], "access-control-expose-headers": []}),
])
def test_heads_carry_the_policy_not_the_recording(
    origins: list[str], origin: str | None, expected: dict[str, list[str]]
) -> None:
    request: Headers = (("Origin", origin),) if origin else ()
    head = Cors.parse(origins).response_headers(request, RECORDED)
    for name, values in expected.items():
        assert [v for k, v in head if k.lower() == name] == values, name
    kept = [(k, v) for k, v in RECORDED if not k.lower().startswith("access-control-")]
    assert [f for f in head if f in kept] == kept  # everything else as recorded, in order


def test_a_recorded_vary_origin_is_not_doubled() -> None:
    head = Cors.parse([PAGE]).response_headers((("Origin", PAGE),), (("Vary", "Origin"),))
    assert [v for k, v in head if k.lower() == "vary"] == ["Origin"]


# policy, request headers, recorded ACAO -> note fragment ("" for none)
NOTES = [
    ([], ((("Origin", PAGE), ("Host", "127.0.0.1:8766"))), None,
     f"cannot read this (CORS is off): replay with --cors {PAGE}"),
    ([], ((("Origin", PAGE), ("Host", "127.0.0.1:8766"))), PAGE, ""),  # as recorded
    ([], ((("Origin", PAGE), ("Host", "127.0.0.1:8766"))), "*", ""),
    ([], ((("Origin", "http://127.0.0.1:8766"), ("Host", "127.0.0.1:8766"))), None, ""),
    ([], ((("Origin", "http://api.example"), ("Host", "api.example"))), None, ""),
    ([], ((("Origin", "https://api.example"), ("Host", "api.example:443"))), None, ""),
    ([], ((("Host", "127.0.0.1:8766"),)), None, ""),  # not from a page
    ([], PREFLIGHT, None, f"cannot answer this CORS preflight (CORS is off): replay with "
                          f"--cors {PAGE}"),
    ([OTHER], ((("Origin", PAGE), ("Host", "127.0.0.1:8766"))), None,
     f"cannot read this: --cors allows {OTHER}; add --cors {PAGE}"),
    ([PAGE], ((("Origin", PAGE), ("Host", "127.0.0.1:8766"))), None, ""),
]


@pytest.mark.parametrize(("origins", "request_headers", "recorded", "fragment"), NOTES)
def test_the_note_names_the_cors_option_that_would_help(
    origins: list[str], request_headers: Headers, recorded: str | None, fragment: str
) -> None:
    response: Headers = (("Access-Control-Allow-Origin", recorded),) if recorded else ()
    method = "OPTIONS" if request_headers is PREFLIGHT else "GET"
    note = Cors.parse(origins).note(method, request_headers, response)
    assert (fragment in note and note) if fragment else note == ""


header_names = st.sampled_from(["Content-Type", "Access-Control-Allow-Origin", "Vary",
                                "access-control-expose-headers", "Retry-After", "X-Thing",
                                "Set-Cookie", "Cache-Control"])


@given(st.lists(st.tuples(header_names, st.sampled_from(["a", "Origin", "*", PAGE]))),
       st.sampled_from([[PAGE], ["*"], [OTHER], [PAGE, "*"]]),
       st.sampled_from([PAGE, OTHER, None]))
def test_one_allow_origin_at_most_and_only_for_allowed_pages(
    recorded: list[tuple[str, str]], origins: list[str], origin: str | None
) -> None:
    cors = Cors.parse(origins)
    head = cors.response_headers((("Origin", origin),) if origin else (), recorded)
    allow = [v for k, v in head if k.lower() == "access-control-allow-origin"]
    readable = origin is not None and cors.allows(origin)
    assert len(allow) == (1 if readable else 0)
    if readable:
        assert allow[0] in (origin, "*")
        exposed = {n.strip().lower() for k, v in head
                   if k == "Access-Control-Expose-Headers" for n in v.split(",")}
        assert exposed.isdisjoint({"set-cookie", "content-type", "cache-control", "vary"})
        assert {k.lower() for k, _ in recorded} & {"retry-after", "x-thing"} <= exposed
