"""Unit tests for the fault registry: one class per type, parameters typed when the plan loads.

Why: the stages read these fields as they are, so every number must arrive parsed (sizes as
int bytes, durations as float seconds, from a unit or a bare number of milliseconds) and every
type must accept its own documented example; one concept has one key name in every type.
"""

from __future__ import annotations

import dataclasses

import pytest

from sse_recorder.demo.payloads import ENGLISH, HTTP_BODIES, KOREAN, SHAPES, service_events
from sse_recorder.errors import ConfigError
from sse_recorder.faults import parse_spec
from sse_recorder.faults.registry import (
    REGISTRY,
    Corrupt,
    Drop,
    Heartbeat,
    Http,
    Inject,
    Kind,
    Latency,
    Params,
    Pause,
    Rechunk,
    Retry,
    Stage,
    Stall,
    Throttle,
)
from sse_recorder.model import Outcome
from sse_recorder.sse import encode_event

CHOICES = {"mode", "how", "dist", "style", "reason"}  # the only text a stage compares


def example(kind: type[Params]) -> str:
    """The example `sse-recorder faults` shows, without its notes."""
    return kind.example.split("  ")[0].split(" (")[0]


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_type_parses_its_own_example(name: str) -> None:
    kind = REGISTRY[name]
    assert kind.name == name and kind.example.startswith(name)
    fault = parse_spec(example(kind))
    assert type(fault.params) is kind and fault.type == name
    keys = {part.split("=")[0] for part in example(kind).partition(":")[2].split(",") if part}
    assert keys <= set(kind.keys)
    for field in dataclasses.fields(fault.params):  # no stage parses text
        value = getattr(fault.params, field.name)
        assert not isinstance(value, str) or field.name in CHOICES, (name, field.name)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_unknown_keys_are_refused(name: str) -> None:
    spec = f"{name}:colour=red"
    with pytest.raises(ConfigError) as info:
        parse_spec(spec)
    takes = ", ".join([*REGISTRY[name].keys, "route", "p", "per", "on_resume"])
    assert str(info.value) == f"{spec}: {name} does not take colour (it takes {takes})"


def test_one_key_name_per_concept() -> None:
    """"After K events" is after_event everywhere; event K itself is at_event or mid_event."""
    keys = {key for params in REGISTRY.values() for key in params.keys}
    assert not {key for key in keys if key.endswith("_events")}
    for name in ("pause", "stall", "drop", "inject"):
        assert "after_event" in REGISTRY[name].keys, name
    for params in REGISTRY.values():  # per=event replaces only keys the type has
        assert set(params.per_event_replaces or ()) <= set(params.keys), params.name


def test_every_key_has_a_kind_and_every_kind_a_use() -> None:
    used = {kind for params in REGISTRY.values() for kind in params.keys.values()}
    assert used == set(Kind)
    assert {params.stage for params in REGISTRY.values()} == set(Stage) - {Stage.DEADLINE}
    assert all(not {"route", "p", "per", "on_resume"} & set(p.keys) for p in REGISTRY.values())


def test_sizes_are_int_bytes_and_durations_float_seconds() -> None:
    throttle = parse_spec("throttle:rate=1K").params
    assert throttle == Throttle(rate=1024) and type(throttle.rate) is int
    latency = parse_spec("latency:head=500ms,chunk=20ms,jitter=10ms,dist=normal").params
    assert latency == Latency(head=0.5, chunk=0.02, jitter=0.01, dist="normal")
    assert all(type(v) is float for v in (latency.head, latency.chunk, latency.jitter))
    assert parse_spec("latency:head=1s").params == Latency(head=1.0, chunk=None)
    assert parse_spec("pause:after_event=5,duration=30s").params == Pause(30.0, 5, None)
    assert parse_spec("pause:at=2s,duration=1m").params == Pause(60.0, None, 2.0)
    assert parse_spec("stall:at=250ms").params == Stall(None, 0.25)
    drop = parse_spec("drop:after_bytes=2K,how=rst").params
    assert drop == Drop(after_bytes=2048, how="rst") and drop.ending is Outcome.RESET
    assert parse_spec("drop:after=1500").params == Drop(after=1.5)  # bare: milliseconds
    assert parse_spec("latency:head=250").params == Latency(head=0.25)
    assert parse_spec("heartbeat:every=250ms,style=ping").params == Heartbeat(0.25, "ping")
    assert parse_spec("retry:value=1000").params == Retry(1000)
    retry = parse_spec("retry:value=2.5s").params
    assert retry == Retry(2500) and type(retry.value) is int
    assert parse_spec("corrupt:mode=json").params == Corrupt("json", 1)


def test_rechunk_defaults_are_resolved_once() -> None:
    assert parse_spec("rechunk:mode=bytes,size=3").params == Rechunk("bytes", 3, 1, 64)
    assert parse_spec("rechunk:size=3").params == Rechunk("bytes", 3, 1, 64)
    assert parse_spec("rechunk:mode=random").params == Rechunk("random", 1, 1, 64)
    assert parse_spec("rechunk:mode=random,min=2,max=9").params == Rechunk("random", 1, 2, 9)
    assert parse_spec("rechunk:mode=random,min=9").params == Rechunk("random", 1, 9, 64)
    # A key the mode ignores is refused, whatever its value; 0 is not "the default".
    for spec in ("rechunk:mode=byte,size=x", "rechunk:mode=adversarial,size=3",
                 "rechunk:mode=random,min=0,max=0", "rechunk:mode=random,min=0"):
        with pytest.raises(ConfigError):
            parse_spec(spec)


def test_http_and_inject_are_rendered_when_the_plan_loads() -> None:
    http = parse_spec("http:status=429,retry_after=2,shape=anthropic").params
    assert isinstance(http, Http) and (http.status, http.reason) == (429, "Too Many Requests")
    assert http.headers == (("Retry-After", "2"), ("Content-Type", "application/json"))
    assert http.body == b'{"type": "error", "error": {"type": "rate_limit_error", ' \
        b'"message": "Number of requests has exceeded your rate limit."}}'
    inject = parse_spec("inject:after_event=3,shape=backoff").params
    assert inject == Inject(encode_event('{"attempt": 3, "nextRetry": 8000, "maxAttempts": 5}',
                                         event="backoff"), 3)
    assert parse_spec("inject:event=note,data=hi").params == Inject(b"event: note\ndata: hi\n\n")


@pytest.mark.parametrize(("spec", "events", "stage"), [
    ("drop:after_event=1", True, Stage.CUTS), ("drop:mid_event=1", True, Stage.CUTS),
    ("drop:after_bytes=1", False, Stage.CUTS), ("drop:after=1s", False, Stage.DEADLINE),
    ("drop:per=event,p=0.5", True, Stage.CUTS),
    ("rechunk:mode=event", True, Stage.RECHUNK), ("rechunk:mode=byte", False, Stage.RECHUNK),
    ("latency:chunk=1ms", False, Stage.TIMING), ("pause:at=1s,duration=1s", True, Stage.TIMING),
    ("http:status=500", False, Stage.ANSWER), ("inject:shape=error", True, Stage.CONTENT),
])
def test_events_and_stage_follow_the_parameters(spec: str, events: bool, stage: Stage) -> None:
    params = parse_spec(spec).params
    assert params.needs_events() is events and params.acts_at() is stage


def test_payloads_are_shared_with_the_demo_upstream() -> None:
    english, korean = service_events(ENGLISH), service_events(KOREAN)
    assert list(english) == ["error", "warning", "retry-hint", "backoff"]
    assert all(SHAPES[name] == (name, data) for name, data in english.items())
    assert english["backoff"] == korean["backoff"] and english["error"] != korean["error"]
    assert english["error"]["details"] == korean["error"]["details"]
    assert SHAPES["anthropic-overloaded"][1] is HTTP_BODIES["anthropic"][529]
    assert SHAPES["openai-error"][1] is HTTP_BODIES["openai"][None]
