"""What the server and the page's scripts agree on, in one place: element ids, hidden signal buttons, the snippets
event handlers run in the browser, and the scripts loaded into the page's head.

The scripts (player.js, barge_in.js, level.js) read the ids from `window.omniPage`, written here from the same constants.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent

# elem_ids of the components the scripts find
MIC, REPLY, INTERRUPT = "mic", "reply", "duplex"
# ... and what the page's style arranges: the list of conversations, and the row of buttons under it
CONVERSATIONS, CONVERSATION_BUTTONS = "conversations", "conversation-buttons"
# Hidden buttons the scripts press to tell the server something: the reply was held (a loud sound while it
# played), resumed (it was not speech), or played to its end.
HOLD, RESUME, PLAYED = "omni-hold", "omni-resume", "omni-played"
# ... and that the user confirmed deleting the open conversation (Clear history, Delete).
FORGET = "omni-forget"

# Gradio 6 ignores gr.Audio(recording=...) sent from the server, so the server flips a hidden value and these
# snippets press the microphone's own buttons or drive the player.
PRESS_STOP = f"() => {{ document.querySelector('#{MIC} .stop-button')?.click(); }}"
PRESS_RECORD = f"() => {{ document.querySelector('#{MIC} .record-button')?.click(); }}"
PLAY_REPLY = "(url) => { window.omniPlay?.(url); }"  # player.js streams the reply into the page's player
SILENCE_REPLY = "() => { window.omniDropHold?.(); window.omniStopReply?.(); }"
# The server confirmed a barge-in: stop playback and tell the server how much of the reply was heard
# (barge_in.js held playback even sooner, and knows where).
CUT_REPLY = "() => { const heard = window.omniCutReply?.() ?? 0; window.omniStopReply?.(); return heard; }"
CONFIRM_FORGET = (
    "() => { if (confirm('Delete this conversation and its recordings? This cannot be undone.')) "
    f"document.getElementById('{FORGET}')?.click(); }}"
)

# The list of conversations is compact and scrolls rather than pushing the page down. The buttons under it share
# their row equally (Gradio's minimum width would wrap three), the export link looks like them, and its empty box
# (a conversation not saved yet) takes no room.
CSS = f"""
#{CONVERSATIONS} .wrap {{ flex-direction: column; flex-wrap: nowrap; gap: 4px; max-height: 13rem; overflow-y: auto; }}
#{CONVERSATIONS} label {{ padding: 4px 8px; }}
.{CONVERSATION_BUTTONS} > * {{ flex: 1 1 0 !important; min-width: 0 !important; margin: 0 !important; }}
.{CONVERSATION_BUTTONS} > .block {{ padding: 0; }}
.{CONVERSATION_BUTTONS} > .block:not(:has(a)) {{ display: none; }}
.{CONVERSATION_BUTTONS} .html-container, .{CONVERSATION_BUTTONS} .prose {{ height: 100%; padding: 0 !important; }}
.omni-export {{
  display: flex; align-items: center; justify-content: center; height: 100%; white-space: nowrap;
  padding: var(--button-small-padding); border-radius: var(--button-small-radius);
  border: var(--button-border-width) solid var(--button-secondary-border-color);
  background: var(--button-secondary-background-fill); color: var(--button-secondary-text-color);
  font-size: var(--button-small-text-size); font-weight: var(--button-small-text-weight); text-decoration: none;
}}
.omni-export:hover {{ background: var(--button-secondary-background-fill-hover); }}
/* The microphone's level bar (level.js) instead of the scrolling waveform, which kept a third of a core busy. */
#{MIC} .mic-wrap > div:not(.controls):not(.omni-level) {{ display: none !important; }}
.omni-level {{
  height: 8px; margin: 12px 0; border-radius: 4px; overflow: hidden; background: var(--neutral-200);
}}
.omni-level > div {{ height: 100%; background: var(--color-accent); transform: scaleX(0); transform-origin: left; }}
"""


def head() -> str:
    """The page's head: the shared ids, then the scripts."""
    ids = {"MIC": MIC, "REPLY": REPLY, "INTERRUPT": INTERRUPT, "HOLD": HOLD, "RESUME": RESUME, "PLAYED": PLAYED}
    scripts = [f"window.omniPage = {json.dumps(ids)};"]
    scripts += [(HERE / name).read_text() for name in ("player.js", "barge_in.js", "level.js")]
    return "".join(f"<script>{script}</script>" for script in scripts)
