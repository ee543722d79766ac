"""Answer every request from a cassette: `mitmdump -s addons/replay.py --set sse_replay=PATH`.

Options: sse_replay (the cassette), sse_replay_speed ('1', '10', 'instant'...),
sse_replay_match. Clients use mitmproxy as HTTP(S)_PROXY and trust its CA. The logic lives
in `sse_recorder.mitm.replay_addon`.

This is the checkout's copy; any install has its own: `sse-recorder addon-path replay`
prints its path (sse_recorder/mitm/scripts/replay.py).
"""

from sse_recorder.mitm.replay_addon import CassetteReplay

addons = [CassetteReplay()]
