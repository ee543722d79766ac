"""Record SSE traffic into a cassette: `mitmdump -s addons/record.py --set sse_cassette=PATH`.

Options (all `--set name=value`, lists by repeating): sse_cassette, sse_include,
sse_exclude, sse_redact_headers, sse_redact_query, sse_redact_json, sse_redact_values,
sse_redact_env. The logic lives in
`sse_recorder.mitm.record_addon`; this file only hands it to mitmproxy.

This is the checkout's copy; any install has its own: `sse-recorder addon-path record`
prints its path (sse_recorder/mitm/scripts/record.py).
"""

from sse_recorder.mitm.record_addon import Recorder

addons = [Recorder()]
