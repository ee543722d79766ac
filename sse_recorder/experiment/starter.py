"""The starter plan `sse-recorder experiment --init` writes: one scenario per failure pattern.

The patterns are the ones streaming APIs show in the wild: a stall, a reset mid-stream, an
idle timeout, a 429 with Retry-After, structured `error` / `retry-hint` / `backoff` events,
a vendor's overload error (as an HTTP status and as a mid-stream event), heartbeat-only
silence, a pause that announces itself, a slow link, adversarial re-chunking, corruption.
Every fault is a spec of the fault spec language; `tests/unit/test_experiment_plan.py`
loads this text, so it stays valid as the fault types change.
"""

from __future__ import annotations

import json

STARTER = """\
# An experiment: run a client against a cassette under each scenario's faults and judge it
# by the hypothesis. `sse-recorder experiment THIS_FILE`; see the README's "Experiments".
cassette = {cassette}   # relative to this file
seed = 1                      # every run's fault seed is derived from it
repeats = 1
timeout = "8s"                # a client still running then is killed and counted as hung
speed = 2.0                   # replay at twice the recorded pace

[client]
# "{{python}}" is the Python running sse-recorder. The client
# gets SSE_RECORDER_BASE_URL (the replay server), SSE_RECORDER_RUN_ID, SSE_RECORDER_SEED;
# "{{base_url}}" in an argument or an env value is replaced by the base URL.
command = {command}
# cwd = "."
# env = {{ OPENAI_BASE_URL = "{{base_url}}/v1", OPENAI_API_KEY = "sk-test" }}

[hypothesis]                  # what a resilient client does
exit_status = 0
# output_contains = ["done"]
# within = "5s"
all_events = true             # every recorded event served at least once
no_duplicates = true          # no event served twice (it resumed where it stopped)
last_event_id = true          # each reconnection sends the last id it was sent
retry_after = true            # waits Retry-After after an error that carries it
retry_field = true            # waits the stream's retry: before reconnecting
reconnect_delay = {{ max = "5s" }}
tolerance = "50ms"

# `times = 1`: the faults meet only the first response; the reconnection is served clean.

[[scenario]]
name = "stall"
description = "the stream goes silent after event 5 and stays open"
faults = ["stall:after_event=5"]
times = 1

[[scenario]]
name = "reset-mid-stream"
faults = ["drop:after_event=6,how=rst"]
times = 1

[[scenario]]
name = "idle-timeout"
description = "silent after event 5, then closed 1 s later (a proxy's idle timeout)"
faults = ["timeout:after_event=5,duration=1s"]
times = 1

[[scenario]]
name = "rate-limited"
description = "429 with Retry-After: 1 before the stream"
faults = ["http:status=429,retry_after=1"]
times = 1

[[scenario]]
name = "error-event"
faults = ["inject:after_event=4,shape=error"]
times = 1

[[scenario]]
name = "retry-hint"
faults = ["inject:after_event=3,shape=retry-hint"]
times = 1

[[scenario]]
name = "backoff-event"
faults = ["inject:after_event=3,shape=backoff"]
times = 1

[[scenario]]
name = "overloaded-529"
description = "a vendor overload error as the response"
faults = ["http:status=529,shape=anthropic"]
times = 1

[[scenario]]
name = "overloaded-event"
description = "a vendor overload error mid-stream"
faults = ["inject:after_event=4,shape=anthropic-overloaded"]
times = 1

[[scenario]]
name = "heartbeat-only"
description = "after event 5 only heartbeats come, the stream never goes on"
faults = ["stall:after_event=5", "heartbeat:every=200ms"]
times = 1

[[scenario]]
name = "signalled-pause"
description = "stream-pause and stream-resume events around a 1 s pause"
faults = ["pause:after_event=4,duration=1s,signal=true"]

[[scenario]]
name = "slow-link"
faults = ["throttle:rate=4K", "latency:head=300ms"]

[[scenario]]
name = "adversarial-chunks"
faults = ["rechunk:mode=adversarial"]

[[scenario]]
name = "corrupt-json"
faults = ["corrupt:mode=json,at_event=3"]
times = 1
"""


def starter_plan(cassette: str = "cassette.sqlite",
                 command: tuple[str, ...] = ("{python}", "client.py")) -> str:
    """The starter plan's TOML text for this cassette and client command."""
    return STARTER.format(cassette=json.dumps(cassette), command=json.dumps(list(command)))
