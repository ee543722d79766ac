"""Record SSE traffic into a cassette: `mitmdump -s <this file> --set sse_cassette=PATH`.

`sse-recorder addon-path record` prints this file's path. Options (all `--set name=value`,
lists by repeating): sse_cassette, sse_include, sse_exclude, sse_redact_headers,
sse_redact_query, sse_redact_json, sse_redact_values, sse_redact_env. The logic lives in
`sse_recorder.mitm.record_addon`.
"""

from sse_recorder.mitm.record_addon import Recorder

addons = [Recorder()]
