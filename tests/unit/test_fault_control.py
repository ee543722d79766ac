"""Unit tests for the control API's pure parts: which addresses count as loopback, and how
a POST body becomes a fault (the same parser, so the same errors, as `--fault`).

Why: the API decides every client's faults, so where it may listen and which requests it
answers must be exact; and a harness in another language sends a spec as text or JSON, so
every form must give the same fault as the spec on the command line.
"""

from __future__ import annotations

import json

import pytest

from sse_recorder.errors import ConfigError
from sse_recorder.faults import parse_spec
from sse_recorder.replay.control import Refused, check_host, is_loopback, read_fault


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST", True), ("0.0.0.0", False), ("::", False),
    ("192.168.1.4", False), ("10.0.0.1", False), ("example.com", False), ("", False),
    ("localhost.evil.example", False), ("127.0.0.1.nip.io", False),
])
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_non_loopback_control_host_needs_forcing() -> None:
    check_host("127.0.0.1", allow_remote=False)
    check_host("0.0.0.0", allow_remote=True)
    with pytest.raises(ConfigError) as info:
        check_host("0.0.0.0", allow_remote=False)
    assert str(info.value).startswith("--control-host 0.0.0.0 is not a loopback address")
    assert "--control-allow-remote" in str(info.value)


SPEC = "pause:after_event=2,duration=300ms,signal=true"


@pytest.mark.parametrize("body", [
    SPEC.encode(), f"  {SPEC}\n".encode(), json.dumps(SPEC).encode(),
    json.dumps({"spec": SPEC}).encode(),
])
def test_every_body_form_is_the_spec(body: bytes) -> None:
    assert read_fault(body) == parse_spec(SPEC)


def test_a_table_body_is_the_same_fault() -> None:
    table = {"type": "pause", "after_event": 2, "duration": "300ms", "signal": True}
    fault = read_fault(json.dumps(table).encode())
    assert fault.params == parse_spec(SPEC).params
    assert fault.spec == "pause:after_event=2,duration=300ms,signal=true"


@pytest.mark.parametrize(("body", "message"), [
    (b"", "no fault given"),
    (b"\xff\xfe", "not UTF-8"),
    (b"{", "not valid JSON"),
    (b"[]", "a fault table with a type"),
    (b'{"spec": "drop:after_event=1", "type": "drop"}', "a fault table with a type"),
    (b'{"spec": 3}', "a fault table with a type"),
    (b"drop:after_evnt=1", "drop:after_evnt=1: drop does not take after_evnt (did you mean "
                           "after_event?)"),
    (b'{"type": "nope"}', "unknown fault type 'nope'"),
])
def test_bad_bodies_are_400_with_one_line(body: bytes, message: str) -> None:
    with pytest.raises(Refused) as info:
        read_fault(body)
    assert info.value.status == 400
    assert message in str(info.value) and "\n" not in str(info.value)
