"""Answer every request from a cassette: `mitmdump -s <this file> --set sse_replay=PATH`.

`sse-recorder addon-path replay` prints this file's path. Options: sse_replay (the
cassette), sse_replay_speed ('1', '10', 'instant'...), sse_replay_match. Clients use
mitmproxy as HTTP(S)_PROXY and trust its CA. The logic lives in
`sse_recorder.mitm.replay_addon`.
"""

from sse_recorder.mitm.replay_addon import CassetteReplay

addons = [CassetteReplay()]
