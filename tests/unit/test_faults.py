"""Unit tests for the fault spec language and the pure stream transformer (`faults/`).

Everything here is in-process and synchronous: specs are parsed, plans are loaded from TOML
written to a temporary directory, and `FaultRun.transform` is applied to small synthetic
streams whose bytes and timings are known exactly.
"""

from __future__ import annotations

import bisect
import itertools
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_recorder.errors import ConfigError
from sse_recorder.faults import (
    HTTP_BODIES,
    SHAPES,
    Ending,
    FaultPlan,
    FaultRun,
    Piece,
    describe_types,
    parse_duration,
    parse_size,
    parse_spec,
    split_at_events,
    split_at_frames,
)
from sse_recorder.faults.registry import REGISTRY, Drop, Http
from sse_recorder.faults.spec import parse_table
from sse_recorder.model import Interaction, Outcome, RecordedRequest, ResponseHead
from sse_recorder.sse import Comment, Event, SSEParser, encode_event, parse

HYPOTHESIS = settings(
    max_examples=200,
    deadline=None,
    database=None,  # keep the working tree clean
    suppress_health_check=[HealthCheck.too_slow],
)

Action = Piece | Ending


# -- helpers ---------------------------------------------------------------------------------


def tick(i: int) -> bytes:
    return encode_event(json.dumps({"i": i}), id=str(i))


def ticks(n: int = 5, gap: float = 0.1) -> list[tuple[float, bytes]]:
    """n one-event chunks, `gap` seconds apart from 0."""
    return [(round(i * gap, 6), tick(i)) for i in range(n)]


def run_of(*specs: str, seed: int = 0, number: int = 0, method: str = "GET",
           path: str = "/stream", resumed: bool = False) -> FaultRun:
    return FaultPlan.load(specs, seed=seed).for_connection(number, method, "example.com", path,
                                                           resumed)


def apply(run: FaultRun, chunks: Iterable[tuple[float, bytes]]) -> list[Action]:
    """What the server does: cut at events only when a fault needs it, then transform."""
    chunks = list(chunks)
    pieces: Iterable[Piece] = (
        split_at_events(chunks) if run.needs_events() else (Piece(d, b) for d, b in chunks)
    )
    return list(run.transform(pieces))


def transformed(*specs: str, chunks: Iterable[tuple[float, bytes]] | None = None,
                **kw: object) -> tuple[list[Action], FaultRun]:
    run = run_of(*specs, **kw)  # type: ignore[arg-type]
    return apply(run, ticks() if chunks is None else chunks), run


def pieces_of(actions: Sequence[Action]) -> list[Piece]:
    return [a for a in actions if isinstance(a, Piece)]


def body(actions: Sequence[Action]) -> bytes:
    return b"".join(p.data for p in pieces_of(actions))


def ending(actions: Sequence[Action]) -> Ending | None:
    endings = [a for a in actions if isinstance(a, Ending)]
    assert len(endings) <= 1 and (not endings or actions[-1] is endings[0])
    return endings[0] if endings else None


def events(data: bytes) -> list[Event]:
    return [item for item in parse(data) if isinstance(item, Event)]


def ids(data: bytes) -> list[str | None]:
    return [e.id for e in events(data)]


def dues(actions: Sequence[Action]) -> list[float]:
    return [a.due for a in actions]


STREAM = b"".join(data for _, data in ticks())


# -- value parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("250ms", 0.25), ("2s", 2.0), ("1m", 60.0), (" 10 ms ", 0.01), ("0", 0.0), ("1.5s", 1.5),
    # A bare number is milliseconds (Toxiproxy's unit), as text and as a TOML number.
    ("500", 0.5), ("1.5", 0.0015), (500, 0.5), (3, 0.003), (0.5, 0.0005), (1500.0, 1.5),
])
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text, "x") == pytest.approx(seconds)


def test_a_bare_duration_is_milliseconds_in_specs_and_plans(tmp_path: Path) -> None:
    assert parse_spec("latency:head=500").params.head == 0.5  # type: ignore[attr-defined]
    plan = tmp_path / "plan.toml"
    plan.write_text('[[fault]]\ntype = "latency"\nhead = 500\nchunk = 2.5\n')
    latency = FaultPlan.load([], plan).faults[0].params
    assert (latency.head, latency.chunk) == (0.5, 0.0025)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("text", "hint"), [
    ("", ""), ("soon", ""), ("-1s", ""), ("1h", ""), ("2 s s", ""), ("1e3", ""),
    ("2sec", " (did you mean 2s?)"), ("500 msec", " (did you mean 500ms?)"),
    ("1.5S", " (did you mean 1.5s?)"), ("3minutes", " (did you mean 3m?)"),
    (-5, ""), (float("nan"), ""), (float("inf"), ""), (True, ""),
])
def test_bad_durations_name_the_key_and_the_rule(text: str | float, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(text, "pause.duration")
    assert str(info.value) == (
        f"pause.duration: bad duration {text!r}{hint}: durations carry a unit (250ms, 2s, 1m)"
        " or are milliseconds (500 = 500ms)")


@pytest.mark.parametrize(("text", "size"), [
    ("512", 512), ("10K", 10240), ("10k", 10240), ("1M", 1 << 20), ("1.5K", 1536),
    ("2KB", 2048), ("1KiB", 1024), ("20K/s", 20480), ("1G", 1 << 30), (64, 64),
    (2048.0, 2048),  # a TOML float
])
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text, "x") == size


@pytest.mark.parametrize("text", ["", "fast", "-5", "1T", "10 K B", -5, True, float("inf")])
def test_bad_sizes(text: str | float) -> None:
    with pytest.raises(ConfigError, match="bad size"):
        parse_size(text, "throttle.rate")


# -- specs and their validation --------------------------------------------------------------

GOOD = [
    "throttle:rate=1K", "throttle:rate=20480",
    "latency:head=500ms", "latency:chunk=20ms,jitter=10ms,dist=normal",
    "latency:chunk=20ms,jitter=5ms,dist=lognormal", "latency:chunk=1ms,jitter=1ms,dist=uniform",
    "latency:chunk=20ms,jitter=5ms", "latency:head=500",
    "pause:after_event=5,duration=30s", "pause:at=2s,duration=1s", "pause:duration=1s,per=event",
    "stall:after_event=12", "stall:at=1s", "stall:per=event,p=0.1",
    "rechunk:mode=bytes,size=3", "rechunk:mode=random,min=1,max=8", "rechunk:mode=byte",
    "rechunk:mode=event", "rechunk:mode=coalesce", "rechunk:mode=adversarial",
    "drop:after_event=12,how=rst", "drop:after_bytes=1K", "drop:after=2s,how=fin",
    "drop:mid_event=3", "drop:per=event,p=0.1",
    "http:status=429,retry_after=2,shape=openai", "http:status=529,shape=anthropic",
    "http:status=503", "http:status=500,body=oops,header=X-Why: testing",
    "refuse", "no-head", "refuse:p=0.5",
    "inject:after_event=3,shape=anthropic-overloaded", "inject:event=note,data=hello",
    "inject:shape=warning,per=event,p=0.2",
    "heartbeat:every=5s", "heartbeat:every=250ms,style=ping",
    "retry:value=1000", "retry:value=2s",
    "corrupt:mode=json,at_event=2", "corrupt:mode=omit", "corrupt:mode=utf8,per=event,p=0.5",
    "drop:after_event=4,on_resume=none,route=/ci/*",
    "http:status=503,route=POST /v1/chat/*",
]


@pytest.mark.parametrize("spec", GOOD)
def test_good_specs_parse(spec: str) -> None:
    fault = parse_spec(spec)
    assert fault.type == spec.partition(":")[0]
    assert fault.spec == spec


def test_spec_fields() -> None:
    fault = parse_spec("drop:how=rst,p=0.25,per=event,on_resume=none,route=POST */v1/chat/*")
    assert fault.params == Drop(how="rst")
    assert fault.probability == 0.25 and fault.per_event and fault.on_resume == "none"
    assert fault.applies_to("POST", "api.openai.com", "/v1/chat/completions")
    assert not fault.applies_to("GET", "api.openai.com", "/v1/chat/completions")
    assert not fault.applies_to("POST", "api.openai.com", "/v1/messages")
    assert parse_spec("refuse").applies_to("GET", "any", "/thing")


BAD = [
    ("bogus", "unknown fault type 'bogus'"),
    ("", "unknown fault type ''"),
    ("drop:after_event=3,color=red", "drop does not take color (it takes after_event, "
     "after_bytes, after, mid_event, how, route, p, per, on_resume)"),
    ("refuse:after_event=1", "refuse does not take after_event (it takes route, p, per, "
     "on_resume)"),
    ("drop:after_event", "expected key=value, got 'after_event'"),
    ("drop:=3", "expected key=value"),
    ("drop:after_event=3,after_event=4", "after_event is given twice"),
    ("drop:after_event=3,p=1.5", "p must be between 0 and 1"),
    ("drop:after_event=3,p=-0.1", "p must be between 0 and 1"),
    ("drop:after_event=3,p=often", "p must be a number"),
    ("drop:after_event=3,per=request", "per must be connection or event, not 'request'"),
    ("drop:after_event=3,on_resume=later", "on_resume must be fresh or none, not 'later'"),
    ("drop:after_event=3,route=http://x/y", "drop:after_event=3,route=http://x/y: bad route "
     "'http://x/y': routes have no scheme, use host/path (did you mean 'x/y'?)"),
    ("throttle", "throttle needs rate"),
    ("throttle:rate=0", "throttle needs rate"),
    ("throttle:rate=fast", "throttle:rate=fast: throttle.rate: bad size 'fast'"),
    ("latency:head=soon", "latency:head=soon: latency.head: bad duration 'soon'"),
    ("latency:chunk=1ms,dist=pareto", "dist must be fixed, uniform, normal or lognormal"),
    ("latency", "latency needs head= or chunk="),
    ("latency:head=1s,jitter=5ms", "latency jitter= and dist= spread chunk=: give chunk= too"),
    ("latency:chunk=20ms,jitter=5ms,dist=fixed", "latency dist=fixed ignores jitter="),
    ("latency:chunk=20ms,dist=normal", "latency dist=normal needs jitter= > 0"),
    ("latency:chunk=0,jitter=1ms,dist=lognormal", "latency dist=lognormal needs chunk= > 0"),
    ("pause:after_event=2", "pause needs duration="),
    ("pause:duration=1s", "pause needs duration= and after_event= or at="),
    ("pause:after_event=1,at=1s,duration=1s", "pause needs duration= and after_event= or at= "
     "(one of them"),
    ("pause:after_event=-1,duration=1s", "after_event must be >= 0"),
    ("pause:after_event=x,duration=1s", "after_event must be a whole number"),
    ("stall:after_event=1.5", "after_event must be a whole number"),
    ("stall:after_event=1,at=1s", "stall needs after_event= or at= (one of them"),
    ("rechunk:mode=zigzag", "mode must be one of bytes, random, byte"),
    ("rechunk:mode=bytes", "rechunk mode=bytes needs size >= 1"),
    ("rechunk:mode=bytes,size=0", "rechunk mode=bytes needs size >= 1"),
    ("rechunk:mode=random,min=8,max=2", "rechunk random needs 1 <= min <= max"),
    ("rechunk:mode=random,min=0,max=0", "rechunk random needs 1 <= min <= max"),
    ("rechunk:mode=byte,size=x", "rechunk mode=byte ignores size= (it is for mode=bytes)"),
    ("drop:how=rst", "drop needs exactly one of after_event, after_bytes, after, mid_event"),
    ("drop:after_event=1,after_bytes=10", "drop needs exactly one of"),
    ("drop:after_event=2,how=maybe", "how must be fin or rst, not 'maybe'"),
    ("drop:mid_event=0", "drop mid_event= counts events from 1"),
    ("drop:after_bytes=lots", "bad size 'lots'"),
    ("drop:after=later", "bad duration 'later'"),
    ("http", "http needs status=200..599"),
    ("http:status=700", "http needs status=200..599"),
    # what an audit found sent: a 1xx as a final answer, a body after 204 or 304, a header
    # line no client parses, a second Content-Length, faults that hold a stream for good
    ("http:status=101", "http needs status=200..599, not 204 or 304"),
    ("http:status=204", "http needs status=200..599, not 204 or 304"),
    ("http:status=304", "http needs status=200..599, not 204 or 304"),
    ("http:status=500,header=foo", "http header= takes 'Name: value', not 'foo'"),
    ("http:status=500,header=Bad Name: 1", "http header= takes 'Name: value'"),
    ("http:status=500,header=Content-Length: 5", "cannot set Content-Length: the server frames"),
    ("http:status=500,header=Connection: close", "cannot set Connection"),
    ("pause:after_event=1,duration=100000s", "pause.duration: '100000s' is longer than a day"),
    ("latency:head=25h", "latency.head"),
    ("http:status=abc", "status must be a whole number"),
    ("http:status=429,shape=google", "shape must be text, openai or anthropic"),
    ("http:status=500,body=oops,shape=openai", "http takes body= or shape=, not both"),
    ("inject:after_event=1", "inject needs shape="),
    ("inject:after_event=1,shape=nope", "shape must be one of error, warning"),
    ("inject:shape=error,data=x", "inject takes shape= or event=/data=, not both"),
    ("heartbeat", "heartbeat needs every=DURATION > 0"),
    ("heartbeat:every=0s", "heartbeat needs every=DURATION > 0"),
    ("heartbeat:every=1s,style=loud",
     "style must be comment, ping, heartbeat, keep-alive or connection-status"),
    ("retry", "retry needs value=DURATION"),
    ("retry:value=soon", "retry.value: bad duration 'soon'"),
    ("retry:value=1.5", "retry value= is a whole number of milliseconds"),
    ("corrupt:at_event=2",
     "corrupt needs mode= (one of field, utf8, json, duplicate, omit, crc, truncate)"),
    ("corrupt:mode=scramble", "mode must be one of"),
    ("corrupt:mode=omit,at_event=0", "corrupt at_event= counts events from 1"),
]


@pytest.mark.parametrize(("spec", "message"), BAD)
def test_bad_specs_name_the_bad_part(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_spec(spec)
    text = str(info.value)
    assert message in text and "\n" not in text


@pytest.mark.parametrize(("table", "message"), [
    ({"type": "http", "status": 500, "header": ["X-A: b", "X-C: d"]},
     "header takes one value, not a list"),  # was sent as the line "['X-A: b', ...]"
    ({"type": "latency", "head": 1e308}, "latency.head"),  # ms: held the stream for good
    ({"type": "pause", "after_event": 1, "duration": 1e15}, "longer than a day"),
])
def test_bad_tables_name_the_bad_part(table: dict[str, object], message: str) -> None:
    """The same checks for a TOML plan's tables and the control API's JSON."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_table(table)


def test_an_injected_status_has_its_own_reason_phrase() -> None:
    teapot, unknown = run_of("http:status=418").http_error(), run_of("http:status=599").http_error()
    assert teapot is not None and teapot.reason == "I'm a Teapot"  # was "Error"
    assert unknown is not None and unknown.reason == "Error"
    overloaded = run_of("http:status=529,shape=anthropic").http_error()
    assert overloaded is not None and overloaded.reason == "Overloaded"  # Anthropic's own


def test_every_type_is_described_and_has_a_valid_example() -> None:
    text = describe_types()
    for name, kind in REGISTRY.items():
        assert f"  {name} " in text
        parse_spec(kind.example.split("  ")[0].split(" (")[0])  # the example, without notes
    assert "route=" in text and "on_resume=" in text
    # The unit rule is stated where users look first.
    assert ("Durations carry a unit, 250ms, 2s or 1m; a bare number is milliseconds (500 = "
            "500ms), in a --fault spec and as a TOML number alike.") in text.splitlines()


# -- what a new user trips over: one name per concept, suggestions, faults that never fire --


@pytest.mark.parametrize(("spec", "message"), [
    # after_event=K is "once K events were sent" in every type (drop took after_events,
    # inject at_event); the old names are refused with the new one suggested.
    ("drop:after_events=3", "drop does not take after_events (did you mean after_event?)"),
    ("inject:at_event=3,shape=error", "inject does not take at_event (did you mean after_event?)"),
    ("corrupt:mode=json,after_event=2",
     "corrupt does not take after_event (did you mean at_event?)"),  # event 2 itself
    ("pause:after_evnt=2,duration=1s",
     "pause does not take after_evnt (did you mean after_event?)"),
    ("latency:heed=1s", "latency does not take heed (did you mean head?)"),
    ("drop:after_event=1,rout=/x", "drop does not take rout (did you mean route?)"),
    ("latncy:head=1s", "unknown fault type 'latncy' (did you mean latency?); "
     "see `sse-recorder faults`"),
    ("nohead", "unknown fault type 'nohead' (did you mean no-head?); see `sse-recorder faults`"),
    ("rechunk:mode=adversarail", "mode must be one of bytes, random, byte, event, coalesce, "
     "adversarial, not 'adversarail' (did you mean adversarial?)"),
    ("drop:after_event=1,how=rts", "how must be fin or rst, not 'rts' (did you mean rst?)"),
    ("http:status=429,shape=openia",
     "shape must be text, openai or anthropic, not 'openia' (did you mean openai?)"),
    ("latency:chunk=1ms,jitter=1ms,dist=normall", "dist must be fixed, uniform, normal or "
     "lognormal, not 'normall' (did you mean normal?)"),
    ("heartbeat:every=1s,style=pings", "style must be comment, ping, heartbeat, keep-alive or "
     "connection-status, not 'pings' (did you mean ping?)"),
    ("drop:per=events", "per must be connection or event, not 'events' (did you mean event?)"),
    ("drop:after_event=1,on_resume=fersh",
     "on_resume must be fresh or none, not 'fersh' (did you mean fresh?)"),
    ("corrupt:mode=jsn", "mode must be one of field, utf8, json, duplicate, omit, crc, truncate, "
     "not 'jsn' (did you mean json?)"),
])
def test_unknown_names_suggest_the_nearest(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_spec(spec)
    assert str(info.value) == f"{spec}: {message}"


def test_an_unknown_inject_shape_lists_every_shape_and_the_nearest() -> None:
    from sse_recorder.demo.payloads import SHAPES
    from sse_recorder.framing.registry import FRAME_SHAPES

    with pytest.raises(ConfigError) as info:
        parse_spec("inject:shape=anthropic-overload")
    shapes = ", ".join([*SHAPES, *FRAME_SHAPES])
    assert str(info.value) == (f"inject:shape=anthropic-overload: shape must be one of {shapes}, "
                               "not 'anthropic-overload' (did you mean anthropic-overloaded?)")


PER_EVENT_ONLY = "(only pause, stall, timeout, drop, inject, corrupt roll at every event)"


@pytest.mark.parametrize(("spec", "message"), [
    # No position: a bare pause was refused, a bare stall accepted and never fired.
    ("stall", "stall needs after_event= or at= (one of them; or per=event,p=P)"),
    ("stall:p=0.5", "stall needs after_event= or at= (one of them; or per=event,p=P)"),
    # A key its mode ignores.
    ("rechunk:mode=adversarial,size=3",
     "rechunk mode=adversarial ignores size= (it is for mode=bytes)"),
    ("rechunk:mode=bytes,size=3,max=9", "rechunk mode=bytes ignores max= (it is for mode=random)"),
    ("rechunk:mode=event,min=1,max=9", "rechunk mode=event ignores min= (it is for mode=random), "
     "max= (it is for mode=random)"),
    ("rechunk:mode=random,size=4", "rechunk mode=random ignores size= (it is for mode=bytes)"),
    # per=event on a type without a per-event roll: p= was ignored, it always fired.
    ("refuse:per=event,p=0.1", f"refuse has no per=event form {PER_EVENT_ONLY}; "
     "p= alone says how often it fires"),
    ("throttle:rate=1K,per=event", f"throttle has no per=event form {PER_EVENT_ONLY}; "
     "p= alone says how often it fires"),
    # per=event with a position: one of them was ignored.
    ("drop:after_bytes=10,per=event,p=0.5", "per=event rolls p= at every event instead of a "
     "position, so drop would ignore after_bytes=: give one or the other"),
    ("drop:after_event=3,per=event", "per=event rolls p= at every event instead of a "
     "position, so drop would ignore after_event=: give one or the other"),
    ("inject:after_event=2,shape=error,per=event", "per=event rolls p= at every event instead "
     "of a position, so inject would ignore after_event=: give one or the other"),
    ("corrupt:mode=omit,at_event=2,per=event", "per=event rolls p= at every event instead of a "
     "position, so corrupt would ignore at_event=: give one or the other"),
    ("stall:at=1s,after_event=2,per=event", "per=event rolls p= at every event instead of a "
     "position, so stall would ignore after_event=, at=: give one or the other"),
])
def test_faults_that_could_never_fire_or_would_ignore_a_key_are_refused(
    spec: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_spec(spec)
    assert str(info.value) == f"{spec}: {message}"


def recorded(number: int, method: str, url: str, answered: bool = True) -> Interaction:
    return Interaction(number, 0.0, RecordedRequest(method, url, ()),
                       ResponseHead(200, "OK", ()) if answered else None, 0, True, answered,
                       Outcome.CLEAN if answered else Outcome.PROXY_ERROR, 0, None)


CASSETTE = [
    recorded(1, "GET", "http://localhost:8123/ticks?n=3"),
    recorded(2, "POST", "https://api.openai.com/v1/chat/completions"),
    recorded(3, "GET", "http://localhost:8123/gone", answered=False),  # never served
]


def test_unreachable_routes_are_named_with_the_reason() -> None:
    plan = FaultPlan.load([
        "drop:after_event=1,route=localhost/ticks",  # the recorded host: fires
        "http:status=500,route=POST */v1/chat/*",  # fires
        "refuse",  # no route: fires everywhere
        "drop:after_event=1,route=127.0.0.1/ticks",  # the replayer's address
        "http:status=429,route=GET api.openai.com/v1/chat/*",  # recorded as a POST
        "refuse:route=/v2/*",  # no such path
        "refuse:route=localhost/gone",  # only a failed recording there
    ])
    recorded_as = ("(recorded: GET localhost/ticks, POST api.openai.com/v1/chat/completions)")
    assert plan.unreachable(CASSETTE) == [
        "drop:after_event=1,route=127.0.0.1/ticks: route 127.0.0.1/ticks never matches, so "
        "the fault never fires: no recording is from host 127.0.0.1 (recorded: "
        "api.openai.com, localhost); routes match the recorded host",
        "http:status=429,route=GET api.openai.com/v1/chat/*: route GET api.openai.com/v1/chat/* "
        "never matches, so the fault never fires: no GET request is recorded there "
        + recorded_as,
        "refuse:route=/v2/*: route */v2/* never matches, so the fault never fires: no recorded "
        "request has that path " + recorded_as,
        "refuse:route=localhost/gone: route localhost/gone never matches, so the fault never "
        "fires: no recorded request has that path " + recorded_as,
    ]
    assert FaultPlan.load(["refuse:route=/x"]).unreachable([]) == [
        "refuse:route=/x: route */x never matches, so the fault never fires: the cassette "
        "holds no recorded response"]
    many = [recorded(n, "GET", f"http://h/{n}") for n in range(5)]
    assert FaultPlan.load(["refuse:route=h/9"]).unreachable(many)[0].endswith(
        "(recorded: GET h/0, GET h/1, GET h/2 and 2 more)")


def test_routes_match_the_host_they_are_given_which_is_the_recorded_one() -> None:
    plan = FaultPlan.load(["refuse:route=localhost/ticks"])
    assert plan.for_connection(0, "GET", "localhost", "/ticks", False).refuse()
    assert not plan.for_connection(0, "GET", "127.0.0.1", "/ticks", False).refuse()


# -- plans -----------------------------------------------------------------------------------

PLAN = """
seed = 42

[[fault]]
type = "drop"
after_event = 4
how = "rst"
route = "/ci/*"
p = 0.5
on_resume = "none"

[[fault]]
type = "http"
status = 429
retry_after = 2
shape = "openai"
route = "POST /v1/chat/completions"

[[fault]]
type = "throttle"
rate = 2048
"""


def test_toml_plan(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    path.write_text(PLAN)
    plan = FaultPlan.load(["stall:after_event=1"], path)
    assert plan.seed == 42
    assert [f.type for f in plan.faults] == ["drop", "http", "throttle", "stall"]
    drop = plan.faults[0]
    assert drop.probability == 0.5 and drop.on_resume == "none"
    assert drop.spec == f"{path} fault #1"
    assert isinstance(http := plan.faults[1].params, Http) and ("Retry-After", "2") in http.headers
    assert FaultPlan.load([], path, seed=7).seed == 7  # --seed wins
    assert FaultPlan.load(["refuse"]).seed == 0


@pytest.mark.parametrize(("text", "message"), [
    ("seed = [\n", "not valid TOML"),
    ("colour = 1\n", "unknown top-level key(s) colour"),
    ('[[faults]]\ntype = "refuse"\n', "unknown top-level key(s) faults (did you mean fault?)"),
    ('seed = "x"\n', "seed must be an integer"),
    ("fault = 3\n", "faults are [[fault]] tables"),
    ("[[fault]]\nafter_event = 1\n", "fault #1 needs a type"),
    ('[[fault]]\ntype = "refuse"\n[[fault]]\ntype = "drop"\nafter_event = 2\nhow = "maybe"\n',
     "fault #2: how must be fin or rst"),
    ('[[fault]]\ntype = "latency"\nhead = "soon"\n', "fault #1: latency.head: bad duration"),
    ('[[fault]]\ntype = "warp"\n', "unknown fault type 'warp'"),
])
def test_bad_plans(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "plan.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        FaultPlan.load([], path)
    assert message in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_plan(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the fault plan: No such file"):
        FaultPlan.load([], tmp_path / "absent.toml")


# -- choosing faults per connection ----------------------------------------------------------


def chosen(plan: FaultPlan, number: int, method: str = "GET", path: str = "/s",
           resumed: bool = False) -> list[str]:
    return [f.spec for f, _ in plan.for_connection(number, method, "h", path, resumed).chosen]


def test_for_connection_is_a_function_of_seed_and_number() -> None:
    specs = ["drop:after_event=3,p=0.5", "refuse:p=0.3", "inject:shape=error,per=event,p=0.5"]
    first = [chosen(FaultPlan.load(specs, seed=11), n) for n in range(50)]
    again = [chosen(FaultPlan.load(specs, seed=11), n) for n in range(50)]
    other = [chosen(FaultPlan.load(specs, seed=12), n) for n in range(50)]
    assert first == again and first != other
    drops = sum("drop:after_event=3,p=0.5" in c for c in first)
    assert 10 < drops < 40  # p=0.5 over 50 connections
    assert all(specs[2] in c for c in first)  # per=event faults are always in play
    # The draws for one connection do not depend on the order connections are asked for.
    plan = FaultPlan.load(specs, seed=11)
    assert [chosen(plan, n) for n in reversed(range(50))] == first[::-1]


def test_per_event_draws_are_reproducible() -> None:
    spec = "inject:shape=warning,per=event,p=0.5"
    chunks = ticks(20, 0.0)
    first, second, third = (run_of(spec, seed=s, number=3) for s in (5, 5, 6))
    a, b, c = (apply(r, chunks) for r in (first, second, third))
    assert body(a) == body(b) and first.log == second.log
    assert first.log != third.log
    fired = [e["event"] for e in first.log]
    assert 2 <= len(fired) <= 19 and fired == sorted(fired)


def test_route_and_resume_filters() -> None:
    plan = FaultPlan.load(["drop:after_event=1,route=/ci/*,on_resume=none",
                           "http:status=503,route=POST /v1/chat/*", "throttle:rate=1K"])
    assert chosen(plan, 0, "GET", "/ci/logs") == [plan.faults[0].spec, plan.faults[2].spec]
    assert chosen(plan, 0, "GET", "/ci/logs", resumed=True) == [plan.faults[2].spec]
    assert chosen(plan, 0, "POST", "/v1/chat/completions") == [plan.faults[1].spec,
                                                               plan.faults[2].spec]
    assert chosen(plan, 0, "GET", "/v1/chat/completions") == [plan.faults[2].spec]


def test_probability_zero_and_one() -> None:
    plan = FaultPlan.load(["refuse:p=0", "no-head:p=1"], seed=3)
    assert all(chosen(plan, n) == ["no-head:p=1"] for n in range(20))


# -- split_at_events -------------------------------------------------------------------------


@st.composite
def sse_streams(draw: st.DrawFn) -> bytes:
    """Events (multi-line, multi-byte data, names, ids) and comments, with LF, CRLF or CR
    line endings, sometimes a comment between an event's fields."""
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = st.text(st.sampled_from("ab xé데ü€😀{}\":\n"), max_size=12)
    blocks: list[bytes] = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["event", "event", "comment", "inner-comment", "retry"]))
        if kind == "comment":
            blocks.append(encode_event(comment=draw(st.sampled_from(["hb", "", "x y"])),
                                       newline=newline))
        elif kind == "retry":
            blocks.append(encode_event(retry=draw(st.integers(0, 5000)), newline=newline))
        else:
            block = encode_event(draw(text), event=draw(st.sampled_from([None, "update"])),
                                 id=draw(st.sampled_from([None, "7"])), newline=newline)
            if kind == "inner-comment":  # `: note` after the first line of the block
                first = block.index(newline.encode()) + len(newline)
                block = block[:first] + f": note{newline}".encode() + block[first:]
            blocks.append(block)
    return b"".join(blocks)


@st.composite
def chunked(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    stream = draw(sse_streams())
    points = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    bounds = [0, *points, len(stream)]
    return stream, [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def ends(pieces: Sequence[Piece]) -> list[int]:
    out, total = [], 0
    for piece in pieces:
        total += len(piece.data)
        out.append(total)
    return out


@HYPOTHESIS
@given(chunked())
def test_split_at_events_keeps_bytes_and_cuts_at_every_event(
    case: tuple[bytes, list[bytes]],
) -> None:
    stream, chunks = case
    pieces = list(split_at_events((float(i), c) for i, c in enumerate(chunks)))
    assert b"".join(p.data for p in pieces) == stream
    assert all(p.data for p in pieces)
    positions = ends(pieces)
    cuts = {0, *positions}
    found = events(stream)
    for number, event in enumerate(found, start=1):
        # The event's end (its CRLF's LF included when it came in the same chunk) is a cut,
        # and the piece ending there is a boundary that counts this event.
        end = event.end
        if end not in cuts:
            assert stream[end - 1 : end + 1] == b"\r\n" and end + 1 in cuts
            end += 1
        piece = pieces[positions.index(end)]
        assert piece.boundary and piece.events == number
    for piece, end in zip(pieces, positions, strict=True):
        assert piece.events == sum(e.end <= end for e in found)
        if piece.boundary:  # never inside an event (a comment between its fields included)
            assert not any(e.start < end < e.end for e in found), (piece, found)
    # Each piece keeps the due time of the chunk it came from, in order.
    assert [p.due for p in pieces] == sorted(p.due for p in pieces)


def test_split_at_events_on_a_known_stream() -> None:
    chunks = [(0.0, b"data: a\n\ndata: b\n"), (0.5, b"\n: hb\n"), (0.7, b"\ndata: c\r"),
              (0.9, b"\n\r\n")]
    pieces = list(split_at_events(chunks))
    assert pieces == [  # each names the recorded chunk it is part of
        Piece(0.0, b"data: a\n\n", 1, True, 0), Piece(0.0, b"data: b\n", 1, False, 0),
        Piece(0.5, b"\n", 2, True, 1), Piece(0.5, b": hb\n", 2, True, 1),
        Piece(0.7, b"\ndata: c\r", 2, False, 2), Piece(0.9, b"\n\r\n", 3, True, 3),
    ]


def test_split_at_events_does_not_cut_at_a_comment_inside_an_event() -> None:
    pieces = list(split_at_events([(0.0, b"data: a\n: c\ndata: b\n\n: hb\n\n")]))
    assert [p.data for p in pieces] == [b"data: a\n: c\ndata: b\n\n", b": hb\n", b"\n"]
    across = list(split_at_events([(0.0, b"data: a\n: c\n"), (1.0, b"data: b\n\n")]))
    assert [(p.data, p.boundary) for p in across] == [(b"data: a\n: c\n", False),
                                                      (b"data: b\n\n", True)]


# -- the transform, stage by stage -----------------------------------------------------------


def test_no_faults_is_the_identity() -> None:
    actions, run = transformed()
    assert body(actions) == STREAM and ending(actions) is None and run.log == []
    assert dues(actions) == [d for d, _ in ticks()]


@pytest.mark.parametrize(("how", "outcome"), [("fin", Outcome.CLOSED), ("rst", Outcome.RESET)])
def test_drop_after_event(how: str, outcome: Outcome) -> None:
    actions, run = transformed(f"drop:after_event=2,how={how}")
    assert ids(body(actions)) == ["0", "1"]
    assert ending(actions) == Ending(outcome, 0.1)
    assert run.log == [{"fault": f"drop:after_event=2,how={how}", "type": "drop",
                        "at_ms": 100.0, "event": 2, "how": how}]


def test_drop_after_bytes_cuts_inside_a_chunk() -> None:
    actions, run = transformed("drop:after_bytes=30")
    assert body(actions) == STREAM[:30]
    assert ending(actions) == Ending(Outcome.CLOSED, 0.1)
    assert not run.needs_events()
    assert run.log[0]["bytes"] == 30


def test_drop_after_a_time() -> None:
    actions, _ = transformed("drop:after=250ms,how=rst")
    assert ids(body(actions)) == ["0", "1", "2"]  # due at 0, 0.1, 0.2
    assert ending(actions) == Ending(Outcome.RESET, 0.25)


def test_drop_after_a_time_counts_pauses_and_throttling() -> None:
    actions, run = transformed("pause:after_event=1,duration=1s", "drop:after=500ms")
    assert ids(body(actions)) == ["0"] and ending(actions) == Ending(Outcome.CLOSED, 0.5)
    assert [e["type"] for e in run.log] == ["pause", "drop"]
    chunks = [(0.0, b"x" * 1000)]
    actions, _ = transformed("throttle:rate=100", "drop:after=1s,how=rst", chunks=chunks)
    assert body(actions) == b"x" * 100  # 1 s at 100 B/s, in writes of 2 bytes
    assert ending(actions) == Ending(Outcome.RESET, 1.0)
    actions, _ = transformed("drop:after=1s", "drop:after_event=2")  # whichever comes first
    assert ids(body(actions)) == ["0", "1"] and ending(actions) == Ending(Outcome.CLOSED, 0.1)


def test_drop_mid_event() -> None:
    actions, _ = transformed("drop:mid_event=3")
    data = body(actions)
    assert ids(data) == ["0", "1"]
    third = tick(2)
    assert data == tick(0) + tick(1) + third[: len(third) // 2]
    assert ending(actions) == Ending(Outcome.CLOSED, 0.2)


def test_drop_per_event() -> None:
    actions, run = transformed("drop:per=event,p=1")
    assert ids(body(actions)) == ["0"] and ending(actions) == Ending(Outcome.CLOSED, 0.0)
    actions, _ = transformed("drop:per=event,p=0")
    assert body(actions) == STREAM and ending(actions) is None


def test_stall() -> None:
    actions, run = transformed("stall:after_event=3")
    assert ids(body(actions)) == ["0", "1", "2"]
    assert ending(actions) == Ending(Outcome.STALLED, 0.2)
    actions, run = transformed("stall:at=150ms")  # at T: the 0.2 event never comes
    assert ids(body(actions)) == ["0", "1"]
    assert ending(actions) == Ending(Outcome.STALLED, pytest.approx(0.15))
    assert run.log == [{"fault": "stall:at=150ms", "type": "stall", "at_ms": 150.0,
                        "event": 2}]


def test_pause_shifts_everything_after_event_k() -> None:
    actions, run = transformed("pause:after_event=2,duration=1s")
    assert body(actions) == STREAM
    assert dues(actions) == pytest.approx([0.0, 0.1, 1.2, 1.3, 1.4])
    assert run.log[0]["event"] == 2 and run.log[0]["duration_ms"] == 1000.0
    actions, run = transformed("pause:at=150ms,duration=500ms")
    assert dues(actions) == pytest.approx([0.0, 0.1, 0.7, 0.8, 0.9])  # from 150 ms on
    assert run.log[0]["at_ms"] == 150.0 and run.log[0]["event"] == 2
    actions, _ = transformed("pause:duration=100ms,per=event,p=1")
    assert dues(actions) == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])


def test_pause_then_drop_ending_is_shifted() -> None:
    actions, _ = transformed("pause:after_event=1,duration=2s", "drop:after_event=3,how=rst")
    assert ending(actions) == Ending(Outcome.RESET, pytest.approx(2.2))


@pytest.mark.parametrize("shape", list(SHAPES))
def test_inject_a_shape(shape: str) -> None:
    actions, run = transformed(f"inject:after_event=2,shape={shape}")
    found = events(body(actions))
    name, payload = SHAPES[shape]
    assert [e.id for e in found] == ["0", "1", None, "2", "3", "4"]
    assert found[2].type == (name or "message") and json.loads(found[2].data) == payload
    assert run.log == [{"fault": f"inject:after_event=2,shape={shape}", "type": "inject",
                        "at_ms": 100.0, "event": 2}]


def test_inject_before_the_first_event_and_custom_events() -> None:
    actions, _ = transformed("inject:after_event=0,event=note,data=line one\nline two")
    found = events(body(actions))
    assert (found[0].type, found[0].data) == ("note", "line one\nline two")
    assert [e.id for e in found[1:]] == ["0", "1", "2", "3", "4"]
    actions, _ = transformed("inject:shape=backoff,per=event,p=1")
    names = [e.type for e in events(body(actions))]
    assert names == ["backoff"] + ["message", "backoff"] * 5


@pytest.mark.parametrize(("mode", "expected_ids"), [
    ("field", ["0", "2", "3", "4"]),  # `data {...}`: no colon, a field name, no data
    ("utf8", ["0", "1", "2", "3", "4"]),
    ("json", ["0", "1", "2", "3", "4"]),
    ("duplicate", ["0", "1", "1", "2", "3", "4"]),
    ("omit", ["0", "2", "3", "4"]),
])
def test_corrupt(mode: str, expected_ids: list[str]) -> None:
    actions, run = transformed(f"corrupt:mode={mode},at_event=2")
    data = body(actions)
    found = events(data)
    assert [e.id for e in found] == expected_ids
    assert run.log[0]["event"] == 2 and run.log[0]["mode"] == mode
    second = next(e for e in found if e.id == "1") if "1" in expected_ids else None
    if mode == "field":
        assert b"id: 1\ndata " in data and b"id: 1\ndata:" not in data
    elif mode == "utf8":
        assert second is not None and second.data.startswith("\ufffd\ufffd")
        assert b"\xff\xfe" in data
    elif mode == "json":
        assert second is not None
        with pytest.raises(json.JSONDecodeError):
            json.loads(second.data)
    others = [e for e in found if e.id != "1"]
    assert all(json.loads(e.data) == {"i": int(e.id or -1)} for e in others)


def test_heartbeats_between_events() -> None:
    actions, run = transformed("heartbeat:every=250ms")
    items = parse(body(actions))
    assert [type(i).__name__ for i in items] == ["Event", "Event", "Event", "Comment", "Event",
                                                 "Event"]
    assert items[3] == Comment("heartbeat")
    assert dues(actions) == pytest.approx([0.0, 0.1, 0.2, 0.25, 0.3, 0.4])
    pauses, _ = transformed("heartbeat:every=100ms,style=ping",
                            "pause:after_event=5,duration=950ms",
                            chunks=ticks(5, 0.0) + [(0.0, tick(5))])
    pings = [a for a in pieces_of(pauses) if b"ping" in a.data]
    assert [p.due for p in pings] == pytest.approx([0.1 * k for k in range(1, 10)])
    assert all(p.data == b"event: ping\ndata: {}\n\n" for p in pings)


def test_heartbeats_never_split_an_event() -> None:
    chunks = [(0.0, b"data: a\n"), (1.0, b"data: b\n\n"), (2.0, b"data: c\n\n")]
    actions, _ = transformed("heartbeat:every=300ms", chunks=chunks)
    items = parse(body(actions))
    assert [i.data for i in items if isinstance(i, Event)] == ["a\nb", "c"]
    assert sum(isinstance(i, Comment) for i in items) == 6  # 0.3 .. 1.8, before "c"


def test_retry_field_first() -> None:
    actions, run = transformed("retry:value=1500")
    assert pieces_of(actions)[0].data == b"retry: 1500\n\n"
    parser = SSEParser()
    assert events(body(actions)) == events(STREAM)
    parser.feed(body(actions))
    assert parser.reconnection_time == 1500
    assert run.log[0]["value"] == 1500


# -- recorded chunks stay whole where no fault acts ------------------------------------------

# Two events in the first recorded chunk and in the last, as a server flushing late writes them.
SHARED = [(0.005, b"id: a1\ndata: one\n\nid: a2\ndata: two\n\n"),
          (0.306, b"id: a3\ndata: three\n\n"), (0.606, b"id: a4\ndata: four\n\n"),
          (0.906, b"id: a5\ndata: five\n\nid: a6\ndata: six\n\n")]
A1, A2 = SHARED[0][1][:18], SHARED[0][1][18:]
INJECTED = b"event: injected\ndata: x\n\n"


def writes(actions: Sequence[Action]) -> list[tuple[float, bytes]]:
    return [(round(p.due, 9), p.data) for p in pieces_of(actions)]


@pytest.mark.parametrize("spec", [
    "drop:after_event=100", "drop:mid_event=100", "drop:per=event,p=0", "stall:after_event=100",
    "stall:at=5s", "timeout:after_event=100,duration=1s", "timeout:at=5s,duration=1s",
    "pause:after_event=100,duration=1s", "pause:at=5s,duration=1s,signal=true",
    "heartbeat:every=10s", "inject:after_event=100,shape=error",
    "inject:shape=error,per=event,p=0", "corrupt:mode=json,at_event=100",
])
def test_a_fault_that_never_fires_keeps_every_recorded_chunk(spec: str) -> None:
    actions, run = transformed(spec, chunks=SHARED)
    assert writes(actions) == SHARED and ending(actions) is None and run.log == []


@pytest.mark.parametrize(("specs", "expected", "end"), [
    # Where a fault acts inside a chunk of two events, that chunk alone is split there.
    (["inject:after_event=1,event=injected,data=x"],
     [(0.005, A1), (0.005, INJECTED), (0.005, A2), *SHARED[1:]], None),
    (["inject:after_event=3,event=injected,data=x"],
     [*SHARED[:2], (0.306, INJECTED), *SHARED[2:]], None),
    (["pause:after_event=1,duration=1s"],
     [(0.005, A1), (1.005, A2), *[(d + 1, c) for d, c in SHARED[1:]]], None),
    (["drop:mid_event=2,how=rst"], [(0.005, A1 + A2[: len(A2) // 2])],
     Ending(Outcome.RESET, 0.005)),
    (["corrupt:mode=omit,at_event=2"], [(0.005, A1), *SHARED[1:]], None),
    # Where it acts between chunks, no chunk is split.
    (["retry:value=1000"], [(0.005, b"retry: 1000\n\n"), *SHARED], None),
    (["pause:after_event=2,duration=1s"], [SHARED[0], *[(d + 1, c) for d, c in SHARED[1:]]],
     None),
    (["drop:after_event=4"], SHARED[:3], Ending(Outcome.CLOSED, 0.606)),
    (["heartbeat:every=200ms"],
     [SHARED[0], (0.2, b": heartbeat\n\n"), SHARED[1], (0.4, b": heartbeat\n\n"),
      (0.6, b": heartbeat\n\n"), SHARED[2], (0.8, b": heartbeat\n\n"), SHARED[3]], None),
    (["corrupt:mode=field,at_event=3"],
     [SHARED[0], (0.306, b"id: a3\ndata  three\n\n"), *SHARED[2:]], None),
    (["latency:chunk=10ms", "stall:after_event=100"], [(d + 0.01, c) for d, c in SHARED], None),
    (["stall:at=700ms"], SHARED[:3], Ending(Outcome.STALLED, pytest.approx(0.7))),
])
def test_a_fault_that_fires_keeps_the_other_chunks(
    specs: list[str], expected: list[tuple[float, bytes]], end: Ending | None
) -> None:
    actions, _ = transformed(*specs, chunks=SHARED)
    assert writes(actions) == [(pytest.approx(d), c) for d, c in expected]
    assert ending(actions) == end


def test_throttle_makes_the_same_writes_beside_a_fault_that_cuts_at_events() -> None:
    alone, _ = transformed("throttle:rate=1K", chunks=SHARED)
    beside, _ = transformed("throttle:rate=1K", "heartbeat:every=10s", chunks=SHARED)
    assert writes(beside) == writes(alone)
    assert b"id: a1\ndata: one\n\nid" in [data for _, data in writes(alone)]


def test_latency_delays_a_chunk_of_several_events_once() -> None:
    actions, _ = transformed("latency:chunk=20ms,jitter=15ms", "stall:after_event=100",
                             chunks=SHARED)
    assert [data for _, data in writes(actions)] == [data for _, data in SHARED]


def test_a_chunk_latency_is_logged_once_at_the_first_chunk_it_delays() -> None:
    """Like throttle, a per-chunk fault is one entry, not one per chunk."""
    actions, run = transformed("latency:chunk=10ms", chunks=SHARED)
    assert writes(actions)[0][0] == pytest.approx(SHARED[0][0] + 0.01)
    assert run.log == [{"fault": "latency:chunk=10ms", "type": "latency",
                        "at_ms": round(SHARED[0][0] * 1000, 3), "first_delay_ms": 10.0}]
    _, both = transformed("latency:head=1s,chunk=10ms", chunks=SHARED)
    assert both.head_delay() == 1.0  # the server asks before the body
    assert [sorted(entry) for entry in both.log] == [
        ["at_ms", "fault", "first_delay_ms", "type"],
        ["at_ms", "fault", "head_delay_ms", "type"]]


def test_frames_of_another_stream_keep_their_chunks() -> None:
    from sse_recorder.framing.registry import NDJSON

    chunks = [(0.0, b'{"i": 0}\n{"i": 1}\n'), (0.1, b'{"i": 2}\n'), (0.2, b'{"i": 3}\n')]
    run = run_of("drop:after_event=100")
    run.dialect = NDJSON
    actions = list(run.transform(split_at_frames(chunks, NDJSON)))
    assert writes(actions) == chunks


def fault_point(chunks: list[tuple[float, bytes]], k: int) -> int | None:
    """Where a fault after event k acts: the end of the first piece between events that
    counts k events (`split_at_events`, tested above, is the oracle); None: it never does."""
    total = 0
    for piece in split_at_events(chunks):
        total += len(piece.data)
        if piece.boundary and piece.events == k:
            return total
    return None


def between_events(chunks: list[tuple[float, bytes]]) -> set[int]:
    """The positions where a piece that ends between events ends."""
    total, found = 0, set()
    for piece in split_at_events(chunks):
        total += len(piece.data)
        if piece.boundary:
            found.add(total)
    return found


def made_by_a_fault(data: bytes) -> bool:
    return data in (INJECTED, b": heartbeat\n\n") or data.startswith(b"event: stream-")


@HYPOTHESIS
@given(chunked(), st.integers(1, 9), st.sampled_from([
    "inject:after_event={k},event=injected,data=x", "pause:after_event={k},duration=1s",
    "pause:after_event={k},duration=1s,signal=true", "drop:after_event={k}",
    "stall:after_event={k}", "timeout:after_event={k},duration=1s",
    "heartbeat:every=5ms", "corrupt:mode=json,at_event=100",
]))
def test_a_fault_splits_a_recorded_chunk_only_where_it_acts(
    case: tuple[bytes, list[bytes]], k: int, spec: str
) -> None:
    stream, parts = case
    chunks = [(i * 0.01, c) for i, c in enumerate(parts)]
    kind = spec.split(":")[0]
    acts_at = fault_point(chunks, k) if "{k}" in spec else None
    actions, _ = transformed(spec.format(k=k), chunks=chunks)
    cut_short = kind in ("drop", "stall", "timeout") and acts_at is not None
    limit = acts_at if cut_short and acts_at is not None else len(stream)
    recorded = [p for p in pieces_of(actions) if not made_by_a_fault(p.data)]
    assert b"".join(p.data for p in recorded) == stream[:limit]
    assert (ending(actions) is not None) == cut_short
    position = 0
    inserted: set[int] = set()  # where, in the recorded bytes, the fault's own writes went
    for piece in pieces_of(actions):
        if made_by_a_fault(piece.data):
            inserted.add(position)
        else:
            position += len(piece.data)
    chunk_ends = list(itertools.accumulate(len(c) for _, c in chunks))
    if kind == "heartbeat":  # between events only: in a gap between chunks, or right after
        # an event that was half sent when the beat came due (which may split its chunk)
        assert inserted <= {0, *chunk_ends} | between_events(chunks)
    else:  # the others' own writes (an injected event, stream-pause) where they acted
        assert inserted <= {acts_at, len(stream)}
    # The recorded chunk ends, plus the place where the fault acted, and no other cut.
    expected = {e for e in chunk_ends if 0 < e <= limit} | (
        {acts_at} if acts_at is not None else set())
    cuts = list(itertools.accumulate(len(p.data) for p in recorded))
    assert set(cuts) - expected <= inserted and expected <= set(cuts)
    # Each write is due with its recorded chunk (a pause: 1 s later from where it acted),
    # and none before the one before it.
    assert dues(actions) == sorted(dues(actions))
    position = 0
    for piece in recorded:
        index = bisect.bisect_right(chunk_ends, position)
        shift = 1.0 if kind == "pause" and acts_at is not None and position >= acts_at else 0
        assert piece.due == pytest.approx(chunks[index][0] + shift)
        position += len(piece.data)


# -- at=T acts at T --------------------------------------------------------------------------

AT_CHUNKS = [(0.005, tick(0)), (0.306, tick(1)), (0.606, tick(2)), (0.906, tick(3))]


def test_stall_at_a_time_sends_nothing_due_from_then() -> None:
    actions, run = transformed("stall:at=700ms", chunks=AT_CHUNKS)
    assert writes(actions) == AT_CHUNKS[:3]
    assert ending(actions) == Ending(Outcome.STALLED, pytest.approx(0.7))
    assert run.log == [{"fault": "stall:at=700ms", "type": "stall", "at_ms": 700.0,
                        "event": 3}]
    actions, run = transformed("stall:at=0", chunks=AT_CHUNKS)
    assert actions == [Ending(Outcome.STALLED, 0.0)] and run.log[0]["event"] == 0
    exact, _ = transformed("stall:at=606ms", chunks=AT_CHUNKS)  # a chunk due at T: after it
    assert writes(exact) == AT_CHUNKS[:2]


def test_timeout_at_a_time_closes_duration_after_it() -> None:
    actions, run = transformed("timeout:at=100ms,duration=200ms", chunks=AT_CHUNKS)
    assert writes(actions) == AT_CHUNKS[:1]
    assert ending(actions) == Ending(Outcome.CLOSED, pytest.approx(0.3))
    assert run.log[0]["at_ms"] == 100.0 and run.log[0]["close_ms"] == 300.0


def test_pause_at_a_time_shifts_what_is_due_from_then() -> None:
    actions, run = transformed("pause:at=700ms,duration=1s", chunks=AT_CHUNKS)
    assert writes(actions) == [*AT_CHUNKS[:3], (1.906, tick(3))]
    assert run.log[0]["at_ms"] == 700.0 and run.log[0]["event"] == 3
    signalled, _ = transformed("pause:at=700ms,duration=1s,signal=true",
                               "heartbeat:every=250ms", chunks=AT_CHUNKS)
    # stream-pause at T, the heartbeats due meanwhile, stream-resume as it ends, then 1.906.
    added = [(due, data.split(b"\n")[0]) for due, data in writes(signalled)
             if not data.startswith(b"id:")]
    beat = b": heartbeat"
    assert added == [(0.25, beat), (0.5, beat), (0.7, b"event: stream-pause"), (0.75, beat),
                     (1.0, beat), (1.25, beat), (1.5, beat), (1.7, b"event: stream-resume"),
                     (1.75, beat)]
    assert writes(signalled)[-1] == (1.906, tick(3))


def test_at_inside_an_event_cut_across_chunks() -> None:
    # Event 1 is written half at 100 ms and half at 300 ms; T = 200 ms falls between.
    event = tick(1)
    chunks = [(0.0, tick(0)), (0.1, event[:5]), (0.3, event[5:]), (0.4, tick(2))]
    stalled, _ = transformed("stall:at=200ms", chunks=chunks)
    assert writes(stalled) == chunks[:2]  # left half sent, as drop:after=200ms would
    paused, _ = transformed("pause:at=200ms,duration=1s", chunks=chunks)
    assert writes(paused) == [*chunks[:2], (1.3, event[5:]), (1.4, tick(2))]
    signalled, _ = transformed("pause:at=200ms,duration=1s,signal=true", chunks=chunks)
    announced = writes(signalled)
    # The stream-pause event waits for the end of the event it would have cut.
    assert announced[:3] == chunks[:3] and b"stream-pause" in announced[3][1]
    assert announced[3][0] == 0.3 and announced[-1] == (1.4, tick(2))
    assert [e.id for e in events(body(signalled)) if e.id] == ["0", "1", "2"]


@HYPOTHESIS
@given(chunked(), st.lists(st.integers(0, 40), min_size=13, max_size=13),
       st.integers(0, 400), st.sampled_from(["stall", "timeout", "pause"]))
def test_at_acts_at_t(case: tuple[bytes, list[bytes]], gaps: list[int], t_ms: int,
                      kind: str) -> None:
    _, parts = case
    due_ms = list(itertools.accumulate(gaps))[: len(parts)]
    chunks = [(ms / 1000, c) for ms, c in zip(due_ms, parts, strict=True)]
    spec = {"stall": f"stall:at={t_ms}ms", "timeout": f"timeout:at={t_ms}ms,duration=250ms",
            "pause": f"pause:at={t_ms}ms,duration=250ms"}[kind]
    actions, run = transformed(spec, chunks=chunks)
    sent = [(ms, c) for ms, c in zip(due_ms, parts, strict=True) if c]
    fires = any(ms >= t_ms for ms, _ in sent)
    assert bool(run.log) == fires and (not fires or run.log[0]["at_ms"] == t_ms)
    if kind == "pause":  # every chunk as recorded, those due from T on 250 ms later
        assert writes(actions) == [(pytest.approx((ms + 250 * (ms >= t_ms)) / 1000), c)
                                   for ms, c in sent]
        assert ending(actions) is None
        return
    # Nothing due at T or later goes out; what does, as recorded.
    assert writes(actions) == [(pytest.approx(ms / 1000), c) for ms, c in sent if ms < t_ms]
    if not fires:
        assert ending(actions) is None
    elif kind == "stall":
        assert ending(actions) == Ending(Outcome.STALLED, pytest.approx(t_ms / 1000))
    else:
        assert ending(actions) == Ending(Outcome.CLOSED, pytest.approx(t_ms / 1000 + 0.25))


# -- re-chunking -----------------------------------------------------------------------------

TRICKY = [
    (0.0, encode_event("첫째 줄\n둘째 줄", event="crlf", id="1", newline="\r\n")),
    (0.1, encode_event("line one\nline two", event="crlf", id="2", newline="\r\n")),
    (0.2, encode_event("😀 é", id="3")),
]
TRICKY_STREAM = b"".join(d for _, d in TRICKY)


@pytest.mark.parametrize("mode", ["bytes,size=5", "random,min=1,max=7", "byte", "event",
                                  "coalesce", "adversarial"])
def test_rechunk_keeps_the_events(mode: str) -> None:
    actions, run = transformed(f"rechunk:mode={mode}", chunks=TRICKY)
    pieces = pieces_of(actions)
    assert body(actions) == TRICKY_STREAM
    assert events(body(actions)) == events(TRICKY_STREAM)
    sizes = [len(p.data) for p in pieces]
    if mode.startswith("bytes"):
        assert max(sizes) <= 5 and len(pieces) > len(TRICKY)
    elif mode.startswith("random"):
        assert 1 <= min(sizes) and max(sizes) <= 7
    elif mode == "byte":
        assert sizes == [1] * len(TRICKY_STREAM)
    elif mode == "event":
        assert [p.data for p in pieces] == [d for _, d in TRICKY]
    elif mode == "coalesce":
        assert [p.data for p in pieces] == [TRICKY_STREAM] and pieces[0].due == 0.2
    assert run.log[0]["mode"] == mode.split(",")[0]
    # Each piece keeps its chunk's due time, and the last piece of a chunk its boundary.
    if mode != "coalesce":
        assert sorted({p.due for p in pieces}) == [0.0, 0.1, 0.2]


def test_adversarial_cuts() -> None:
    actions, _ = transformed("rechunk:mode=adversarial", chunks=TRICKY)
    datas = [p.data for p in pieces_of(actions)]
    pairs = list(zip(datas, datas[1:], strict=False))
    assert any(a.endswith(b"\r") and b.startswith(b"\n") for a, b in pairs)  # CR | LF
    assert any(a[-1] >= 0xC0 for a in datas)  # right after a multi-byte lead byte
    for data in datas:  # never a whole multi-byte character at the end... of a cut piece
        if data[-1] >= 0xC0:
            with pytest.raises(UnicodeDecodeError):
                data.decode()
    assert any(a.endswith(b"e") and b.startswith(b"vent:") for a, b in pairs)  # field name
    assert any(a.endswith(b"\n") and b == b"\n" or b.startswith(b"\n") and not
               a.endswith(b"\r") for a, b in pairs)  # an event | its blank line


@HYPOTHESIS
@given(chunked(), st.sampled_from(["bytes,size=3", "random,min=1,max=9", "byte", "event",
                                   "coalesce", "adversarial"]),
       st.integers(0, 1000))
def test_rechunk_any_stream(case: tuple[bytes, list[bytes]], mode: str, seed: int) -> None:
    stream, chunks = case
    actions, _ = transformed(f"rechunk:mode={mode}", seed=seed,
                             chunks=[(i * 0.01, c) for i, c in enumerate(chunks)])
    assert body(actions) == stream
    assert parse(body(actions)) == parse(stream)
    parser = SSEParser()  # fed piece by piece, the parser sees the same items
    assert [i for p in pieces_of(actions) for i in parser.feed(p.data)] == parse(stream)


# -- timing ----------------------------------------------------------------------------------


def test_throttle_timing_math() -> None:
    chunks = [(0.0, b"x" * 1000) for _ in range(5)]  # everything due at once (instant)
    actions, run = transformed("throttle:rate=1000", chunks=chunks)
    pieces = pieces_of(actions)
    burst = 1000 // 50  # 20 ms worth at most per write
    assert all(len(p.data) <= burst for p in pieces)
    sent = 0
    for piece in pieces:  # each write is due when the bytes before it have had their time
        assert piece.due == pytest.approx(sent / 1000)
        sent += len(piece.data)
    assert sent == 5000 and pieces[-1].due == pytest.approx(4.98)
    assert run.log == [{"fault": "throttle:rate=1000", "type": "throttle", "at_ms": 0.0,
                        "rate": 1000.0}]


def test_throttle_never_sends_early_and_ends_after_the_last_write() -> None:
    chunks = [(0.0, b"a" * 100), (1.0, b"b" * 100)]
    actions, _ = transformed("throttle:rate=1K", "drop:per=event,p=0",
                             chunks=chunks)
    pieces = pieces_of(actions)
    assert pieces[0].due == 0.0
    later = [p for p in pieces if p.data.startswith(b"b")]
    assert later[0].due == 1.0  # a recorded gap longer than the transfer time is kept
    assert later[-1].due == pytest.approx(1.0 + 80 / 1024)
    cut, _ = transformed("throttle:rate=100", "drop:after_bytes=150", chunks=chunks)
    assert ending(cut) == Ending(Outcome.CLOSED, pytest.approx(1.5))


def test_latency() -> None:
    run = run_of("latency:head=500ms")
    assert run.head_delay() == 0.5 and run.log[0]["head_delay_ms"] == 500.0
    actions, _ = transformed("latency:chunk=20ms")
    assert dues(actions) == pytest.approx([0.02, 0.12, 0.22, 0.32, 0.42])
    chunks = ticks(50, 0.001)
    actions, _ = transformed("latency:chunk=20ms,jitter=15ms,dist=uniform", chunks=chunks)
    times = dues(actions)
    assert times == sorted(times)  # order kept
    extra = [t - d for t, (d, _) in zip(times, chunks, strict=True)]
    assert all(0.005 - 1e-9 <= e for e in extra) and len(set(extra)) > 10
    for dist in ("normal", "lognormal"):
        actions, _ = transformed(f"latency:chunk=20ms,jitter=5ms,dist={dist}", chunks=chunks)
        assert dues(actions) == sorted(dues(actions)) and min(dues(actions)) >= 0


# -- before the body -------------------------------------------------------------------------


def test_http_errors() -> None:
    run = run_of("http:status=429,retry_after=1,shape=openai")
    error = run.http_error()
    assert error is not None and (error.status, error.reason) == (429, "Too Many Requests")
    assert dict(error.headers) == {"Retry-After": "1", "Content-Type": "application/json"}
    assert json.loads(error.body) == HTTP_BODIES["openai"][429]
    assert run.log == [{"fault": "http:status=429,retry_after=1,shape=openai", "type": "http",
                        "at_ms": 0.0, "status": 429}]
    error = run_of("http:status=529,shape=anthropic").http_error()
    assert error is not None and json.loads(error.body)["error"]["type"] == "overloaded_error"
    error = run_of("http:status=502,shape=anthropic").http_error()
    assert error is not None and json.loads(error.body)["error"]["type"] == "api_error"
    error = run_of("http:status=503").http_error()
    assert error is not None and error.body.startswith(b"503 Service Unavailable")
    error = run_of("http:status=500,body=oops,header=X-Why: testing").http_error()
    assert error is not None and error.body == b"oops" and ("X-Why", "testing") in error.headers
    assert run_of("throttle:rate=1K").http_error() is None


def test_refuse_and_no_head() -> None:
    assert run_of("refuse").refuse() and not run_of("no-head").refuse()
    assert run_of("no-head").no_head() and not run_of("refuse").no_head()


@pytest.mark.parametrize(("spec", "needs"), [
    ("throttle:rate=1K", False), ("rechunk:mode=byte", False), ("rechunk:mode=event", True),
    ("rechunk:mode=coalesce", True), ("drop:after_bytes=10", False), ("drop:after=1s", False),
    ("drop:after_event=1", True), ("drop:mid_event=1", True), ("stall:after_event=1", True),
    ("inject:shape=error", True), ("heartbeat:every=1s", True), ("retry:value=1", True),
    ("corrupt:mode=omit", True), ("pause:at=1s,duration=1s", True),
    ("latency:chunk=1ms", False),
])
def test_needs_events(spec: str, needs: bool) -> None:
    assert run_of(spec).needs_events() is needs


def test_faults_compose() -> None:
    actions, run = transformed("inject:after_event=1,shape=error",
                               "corrupt:mode=duplicate,at_event=3",
                               "pause:after_event=2,duration=1s", "rechunk:mode=byte",
                               "throttle:rate=100K", "drop:after_event=4,how=rst")
    found = events(body(actions))
    assert [e.id for e in found] == ["0", None, "1", "2", "2", "3"]
    assert all(len(p.data) == 1 for p in pieces_of(actions))
    assert ending(actions) is not None and ending(actions).outcome is Outcome.RESET  # type: ignore[union-attr]
    assert max(dues(actions)) >= 1.0
    assert {e["type"] for e in run.log} == {"inject", "corrupt", "pause", "rechunk", "throttle",
                                            "drop"}
