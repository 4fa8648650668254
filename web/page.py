"""What the server and the page's scripts agree on, in one place: element ids, hidden signal buttons, the snippets
event handlers run in the browser, and the scripts loaded into the page's head.

The scripts (player.js, barge_in.js) read the ids from `window.omniPage`, written here from the same constants.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent

# elem_ids of the components the scripts find
MIC, REPLY, INTERRUPT = "mic", "reply", "duplex"
# Hidden buttons the scripts press to tell the server something: the reply was held (a loud sound while it
# played), resumed (it was not speech), or played to its end.
HOLD, RESUME, PLAYED = "omni-hold", "omni-resume", "omni-played"

# Gradio 6 ignores gr.Audio(recording=...) sent from the server, so the server flips a hidden value and these
# snippets press the microphone's own buttons or drive the player.
PRESS_STOP = f"() => {{ document.querySelector('#{MIC} .stop-button')?.click(); }}"
PRESS_RECORD = f"() => {{ document.querySelector('#{MIC} .record-button')?.click(); }}"
PLAY_REPLY = "(url) => { window.omniPlay?.(url); }"  # player.js streams the reply into the page's player
SILENCE_REPLY = "() => { window.omniDropHold?.(); window.omniStopReply?.(); }"
# The server confirmed a barge-in: stop playback and tell the server how much of the reply was heard
# (barge_in.js held playback even sooner, and knows where).
CUT_REPLY = "() => { const heard = window.omniCutReply?.() ?? 0; window.omniStopReply?.(); return heard; }"


def head() -> str:
    """The page's head: the shared ids, then the scripts."""
    ids = {"MIC": MIC, "REPLY": REPLY, "INTERRUPT": INTERRUPT, "HOLD": HOLD, "RESUME": RESUME, "PLAYED": PLAYED}
    scripts = [f"window.omniPage = {json.dumps(ids)};"]
    scripts += [(HERE / name).read_text() for name in ("player.js", "barge_in.js")]
    return "".join(f"<script>{script}</script>" for script in scripts)
