"""Browser latency benchmark: what a person hears, with the app and Chromium on this machine.

    python -m bench.browser                          # 8 turns, hands-free, one conversation
    python -m bench.browser --load                   # next to one busy core (a Python busy loop, normal priority)
    python -m bench.browser --sessions 2             # two people talking at once, the second ~1 s later
    python -m bench.browser --llm qwen2.5-0.5b --turns 10 --port 7861

The app starts as a user starts it (`python app.py`), headless Chromium opens its page, and a fake microphone plays
one long clip per person: questions (piper-spoken and human recordings) with GAP_S of silence after each, so every
reply has played before the next question. Full duplex, as the app starts: Record is clicked once.

Clocks. Page events are `performance.now()` of the page: the reply's first bytes, its `playing` event (audible) and
stalls, from web/player.js (`window.omniReplies`). The fake microphone is a Web Audio stream: the clip is scheduled
at an AudioContext time, converted to page time when the context renders it, so "last speech sample" = clip start +
the sample offset of the question's last loud 10 ms in the clip. The server logs the end of turn and its first reply
audio in wall-clock ms; the page's clock is put on the same wall clock with `Date.now() - performance.now()` (one
machine, one system clock). Each reply is matched to its question by time, each server session to its page by time.

Writes bench/results/browser[-<llm>][-load][-2sessions].json (median and p90 of each part, every turn, what the
chat heard and answered), a -timeline.png of the median turn and the app's -app.log. Needs `./setup.sh --test`
(Playwright, Debian's chromium).
"""

from __future__ import annotations

import argparse
import ast
import base64
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from omni.audio import SAMPLE_RATE, load_audio, to_int16
from omni.wav import wav_bytes
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, recording, wait_for
from web.page import CONVERSATIONS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PROMPTS_DIR = ROOT / "bench" / "prompts"
DATA = ROOT / "tests" / "data"

# Silence before the first question: the recorder's stream to the server is set up by then. With 1 s, a smoke run
# next to a busy core lost the whole first question.
LEAD_IN_S = 2.0
GAP_S = 14.0  # silence after each question: a short reply (~3 sentences) has played by the next one
STAGGER_S = 1.0  # the second person starts talking this long after the first
SCHEDULE_MS = 300  # the clip is scheduled this far ahead, so that it starts exactly when scheduled
APP_START_TIMEOUT_S = 300  # model load on a busy 2-core machine
TAIL_TIMEOUT_S = 60.0  # after the clip, how long the last reply may take to finish playing
POLL_S = 1.0

# Where the last speech sample is: the last 10 ms window within SPEECH_DB of the recording's loudest window (and
# above SPEECH_FLOOR_DBFS). Stable from 35 to 45 dB on our recordings, and 60-110 ms earlier than the Silero VAD's
# speech_end (the start of its first silent 32 ms frame), which bench.latency uses.
WINDOW = SAMPLE_RATE // 100
SPEECH_DB = 40.0
SPEECH_FLOOR_DBFS = -55.0


@dataclass(frozen=True)
class Prompt:
    path: Path
    speaker: str  # "human" (a real recording) or "piper" (synthesized)
    held_out: bool = False  # never used to tune anything in the project: no test, no benchmark, no notes

    @property
    def name(self) -> str:
        return self.path.stem


# Alternating piper and human. Held out: example5 (human; used nowhere but references.tsv) and how_are_you (piper;
# only made by bench/make_prompts.py). The human recordings are statements, which the model answers anyway.
# Not spk1_snt1: it is cut off inside its last sound ("dog"), which no microphone does, and the end of turn then
# waited 3.3-5.7 s for the rest in every smoke run.
PROMPTS = [
    Prompt(PROMPTS_DIR / "capital.wav", "piper"),
    Prompt(DATA / "spk1_snt2.wav", "human"),
    Prompt(DATA / "questions" / "how_are_you.wav", "piper", held_out=True),
    Prompt(DATA / "example1.wav", "human"),
    Prompt(PROMPTS_DIR / "spider.wav", "piper"),
    Prompt(DATA / "example5.wav", "human", held_out=True),
    Prompt(PROMPTS_DIR / "name_cat.wav", "piper"),
    Prompt(DATA / "spk1_snt5.wav", "human"),
    Prompt(PROMPTS_DIR / "book.wav", "piper"),
    Prompt(DATA / "spk1_snt3.wav", "human"),
]
SESSION_ROTATION = len(PROMPTS) // 2  # the second person asks the same questions in another order

# The fake microphone (the measuring note): one MediaStreamDestination for every getUserMedia call, since Gradio
# calls it more than once; the clip starts when the benchmark says, after Record. The app's own wrapper
# (web/barge_in.js) wraps this one and asks for Chromium's processing, which does not apply to a Web Audio stream.
FAKE_MIC = """
(() => {
  const context = new AudioContext();
  const microphone = context.createMediaStreamDestination();
  navigator.mediaDevices.getUserMedia = async () => { await context.resume(); return microphone.stream; };
  navigator.mediaDevices.enumerateDevices = async () =>
    [{deviceId: "default", kind: "audioinput", label: "Benchmark microphone", groupId: "bench"}];

  // When each reply stopped playing: its end, or a pause (a barge-in hold, Stop).
  window.benchPlayback = [];
  for (const type of ["ended", "pause"]) {
    document.addEventListener(type, (e) => {
      if (e.target.closest && e.target.closest("#reply")) window.benchPlayback.push([type, performance.now()]);
    }, true);
  }

  const pause = () => new Promise((resolve) => setTimeout(resolve, 2));

  // performance.now() minus context time (ms) as the context renders: the smallest of a few readings, since
  // currentTime is read some time after the quantum it names was rendered into the stream.
  async function renderOffset() {
    let offset = Infinity;
    for (let i = 0; i < 20; i++, await pause()) {
      offset = Math.min(offset, performance.now() - context.currentTime * 1000);
    }
    return offset;
  }

  // Wall clock = performance.now() + this. Date.now() truncates to the ms, so the largest reading is the closest.
  window.benchEpochOffset = () => {
    let offset = -Infinity;
    for (let i = 0; i < 200; i++) offset = Math.max(offset, Date.now() - performance.now());
    return {epochOffset: offset, timeOrigin: performance.timeOrigin};
  };

  // Decode a WAV (base64) to play later: a long clip takes a while, which must not delay its start.
  let clip = null;
  window.benchLoad = async (wav) => {
    const bytes = Uint8Array.from(atob(wav), (c) => c.charCodeAt(0));
    clip = await context.decodeAudioData(bytes.buffer);
  };

  // Play the clip into the microphone, at wall-clock time startEpoch if given (and not past), else in scheduleMs;
  // returns when its first sample goes out, in page time.
  window.benchSpeak = async (scheduleMs, startEpoch) => {
    await context.resume();
    const source = context.createBufferSource();
    source.buffer = clip;
    source.connect(microphone);
    const offset = await renderOffset();
    let at = context.currentTime + scheduleMs / 1000;
    if (startEpoch !== null) at = Math.max(at, (startEpoch - (Date.now() - performance.now()) - offset) / 1000);
    source.start(at);
    const output = context.getOutputTimestamp();
    return {
      clipStart: at * 1000 + offset,
      clipStartAtOutput: (at - output.contextTime) * 1000 + output.performanceTime,  // for the record only
      contextRate: context.sampleRate,
    };
  };
})();
"""

READ_PAGE = """() => ({
  replies: window.omniReplies || [],
  audible: window.omniAudible || [],
  playback: window.benchPlayback,
  holds: (window.omniBargeIn && window.omniBargeIn.holds) || 0,
  // What the chat shows: the words the server heard, and the answers (with "(interrupted)" where cut).
  heard: [...document.querySelectorAll("[data-testid=user]")].map((e) => e.innerText.trim()).filter(Boolean),
  answers: [...document.querySelectorAll("[data-testid=bot]")].map((e) => e.innerText.trim()).filter(Boolean),
})"""

# The app's log line per turn (app.py): 'turn N: first reply audio X ms after the end of the turn {"timing": ...}'.
TIMING_LINE = re.compile(r"turn (\d+): first reply audio .*?(\{\"timing\".*\})\s*$")
# the model's own timings at the end of each reply, with the session id
TURN_TIMINGS_LINE = re.compile(r"app: turn (\d+): (\{'.*\}) (\{\"timing\".*\})\s*$")
MODELS_LINE = re.compile(r"loaded (.+) in [\d.]+ s")


@dataclass
class Question:
    """A prompt placed in a clip; times in seconds from the clip's first sample."""

    prompt: Prompt
    speech_start_s: float
    speech_end_s: float  # the end of the last speech sample


@dataclass
class Talk:
    """One person: their clip and, once it plays, when it started (page and wall clock)."""

    session: int
    questions: list[Question]
    wav: bytes
    duration_s: float
    clip_start: float = 0.0  # performance.now() of the clip's first sample
    epoch_offset: float = 0.0  # wall-clock ms = page ms + this
    clocks: dict[str, float] = field(default_factory=dict)  # cross-checks of the two conversions above
    page: object = None

    def epoch(self, page_ms: float | None) -> float | None:
        return None if page_ms is None else page_ms + self.epoch_offset

    def at(self, clip_s: float) -> float:
        """Wall-clock ms of a point in the clip."""
        return self.clip_start + clip_s * 1000 + self.epoch_offset


@dataclass
class ServerTurn:
    session_id: str
    turn: int
    end_of_turn: float  # wall-clock ms
    first_audio: float
    timings: dict = field(default_factory=dict)  # the model's own (asr_ms, tokens_per_s...), single session only


@dataclass
class TurnResult:
    session: int
    turn: int
    prompt: str
    speaker: str
    held_out: bool
    # The headline: the last speech sample leaves the microphone -> the reply's `playing` event in the page.
    speech_end_to_audible_ms: float | None = None
    # Its parts, in order.
    speech_end_to_end_of_turn_ms: float | None = None  # the server's VAD declares the end of turn (incl. 0.5 s chunks)
    end_of_turn_to_server_audio_ms: float | None = None  # the model's first audio, written to the reply stream
    server_audio_to_first_bytes_ms: float | None = None  # the page reads the stream's first bytes
    first_bytes_to_audible_ms: float | None = None  # Media Source Extensions start playing
    server_audio_to_audible_ms: float | None = None  # the last two together (issue 12's target: <= 150 ms)
    end_of_turn_to_request_ms: float | None = None  # the page opens the reply stream (Gradio sends its URL)
    stalls: int = 0  # gaps inside the reply: `waiting` while bytes were still coming
    stalls_total_ms: float = 0.0
    stalls_max_ms: float = 0.0
    stall_spans: list[tuple[float, float]] = field(default_factory=list)  # wall-clock ms, for the plot
    overlapped: bool = False  # the reply was still playing when the next question began (a barge-in)
    tokens_per_s: float | None = None
    error: str = ""
    times: dict[str, float] = field(default_factory=dict)  # wall-clock ms of each event, for the plot


HEADLINE = "speech_end_to_audible_ms"
METRICS = [
    HEADLINE,
    "speech_end_to_end_of_turn_ms",
    "end_of_turn_to_server_audio_ms",
    "server_audio_to_first_bytes_ms",
    "first_bytes_to_audible_ms",
    "server_audio_to_audible_ms",
    "end_of_turn_to_request_ms",
    "stalls_total_ms",
    "stalls_max_ms",
    "tokens_per_s",
]


# --- the clips ----------------------------------------------------------------------------------------------------


def speech_bounds(audio: np.ndarray) -> tuple[float, float]:
    """(first, last) loud 10 ms window of a recording, in seconds: where its speech starts and ends."""
    n = audio.size // WINDOW
    power = np.mean(audio[: n * WINDOW].reshape(n, WINDOW).astype(np.float64) ** 2, axis=1)
    db = 10 * np.log10(power + 1e-12)
    loud = np.nonzero(db >= max(db.max() - SPEECH_DB, SPEECH_FLOOR_DBFS))[0]
    return float(loud[0] * WINDOW / SAMPLE_RATE), float((loud[-1] + 1) * WINDOW / SAMPLE_RATE)


def prompts_for(session: int, turns: int) -> list[Prompt]:
    """TURNS prompts (cycling through PROMPTS if more are asked for), in this person's order."""
    first = session * SESSION_ROTATION
    return [PROMPTS[(first + i) % len(PROMPTS)] for i in range(turns)]


def make_talk(session: int, prompts: list[Prompt], gap_s: float) -> Talk:
    """One clip: LEAD_IN_S of silence, then each prompt followed by GAP_S of silence."""
    parts, questions, at = [np.zeros(int(LEAD_IN_S * SAMPLE_RATE), np.float32)], [], LEAD_IN_S
    for prompt in prompts:
        audio = load_audio(prompt.path)
        start, end = speech_bounds(audio)
        questions.append(Question(prompt, at + start, at + end))
        parts += [audio, np.zeros(int(gap_s * SAMPLE_RATE), np.float32)]
        at += (audio.size + int(gap_s * SAMPLE_RATE)) / SAMPLE_RATE
    audio = np.concatenate(parts)
    return Talk(session, questions, wav_bytes(to_int16(audio), SAMPLE_RATE), audio.size / SAMPLE_RATE)


# --- the app, the load and the browser ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int, llm: str | None, log_path: Path) -> subprocess.Popen:
    """`python app.py` as a user starts it; returns once the page is served (the model is loaded by then)."""
    env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    command = [sys.executable, "app.py"] + (["--llm", llm] if llm else [])
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + APP_START_TIMEOUT_S
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=2)
            return process
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"the app exited ({process.returncode}):\n{log_path.read_text()[-3000:]}") from None
            time.sleep(1)
    process.kill()
    raise SystemExit(f"the app did not start in {APP_START_TIMEOUT_S} s (log: {log_path})")


def busy_core() -> subprocess.Popen:
    """One busy process at normal priority, as a browser tab or a build next to the app would be."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def open_page(browser, url: str):
    """A page of the app in a fresh browser context: a person of its own (cookie, session) with the fake mic."""
    page = browser.new_context().new_page()
    page.add_init_script(FAKE_MIC)
    page.goto(url)
    page.wait_for_selector("#mic .record-button", timeout=60_000)
    # Once the page has listed the browser's conversations: pressed sooner, Gradio 6.31's streaming recorder may
    # not have loaded its wav encoder yet ("ge is not a constructor") and the microphone never streams.
    page.wait_for_selector(f"#{CONVERSATIONS} label", timeout=60_000)
    return page


def press_record(talk: Talk) -> None:
    """Record, once (hands-free from then on), and the clip made ready to play."""
    talk.page.click("#mic .record-button")
    wait_for(lambda: recording(talk.page), 20, "recording to start")
    talk.page.evaluate("(wav) => window.benchLoad(wav)", base64.b64encode(talk.wav).decode())


def start_talking(talk: Talk, start_epoch_ms: float | None = None) -> None:
    """Start the clip (the recorder is running), at START_EPOCH_MS if given, else as soon as it can be scheduled."""
    page = talk.page
    mic = page.evaluate("(a) => window.benchSpeak(...a)", [SCHEDULE_MS, start_epoch_ms])
    epoch = page.evaluate("() => window.benchEpochOffset()")
    talk.clip_start, talk.epoch_offset = mic["clipStart"], epoch["epochOffset"]
    talk.clocks = {
        # How much later the clip reaches the (fake) loudspeaker output than the microphone stream.
        "mic_output_after_render_ms": round(mic["clipStartAtOutput"] - mic["clipStart"], 1),
        # performance.timeOrigin against Date.now(): the two ways to put the page on the wall clock.
        "time_origin_minus_date_now_ms": round(epoch["timeOrigin"] - epoch["epochOffset"], 1),
        "audio_context_rate": mic["contextRate"],
    }


def wait_until_answered(talks: list[Talk]) -> None:
    """Until every clip has played and each page has played its last reply (or TAIL_TIMEOUT_S more)."""
    clip_end = max(t.at(t.duration_s) for t in talks) / 1000
    deadline = clip_end + TAIL_TIMEOUT_S
    while time.time() < deadline:
        if time.time() > clip_end and all(reply_finished(t) for t in talks):
            return
        time.sleep(POLL_S)
    print("warning: a reply had not finished playing when the benchmark ended", file=sys.stderr)


def reply_finished(talk: Talk) -> bool:
    state = talk.page.evaluate(READ_PAGE)
    replies = state["replies"]
    if len(replies) < len(talk.questions) or not replies[-1]["done"]:
        return False
    started = replies[-1]["playingAt"]
    return started is not None and any(t > started for _, t in state["playback"])


# --- matching the page and the server -----------------------------------------------------------------------------


def server_turns(log_text: str) -> dict[str, list[ServerTurn]]:
    """The app log's timing lines, by server session id, in order."""
    sessions: dict[str, list[ServerTurn]] = {}
    timings: list[tuple[int, dict]] = []
    for line in log_text.splitlines():
        if match := TIMING_LINE.search(line):
            data = json.loads(match.group(2))
            turn = ServerTurn(data["timing"], int(match.group(1)), data["end_of_turn"], data["first_audio"])
            sessions.setdefault(turn.session_id, []).append(turn)
        elif match := TURN_TIMINGS_LINE.search(line):
            timings.append((json.loads(match.group(3))["timing"], int(match.group(1)), ast.literal_eval(match.group(2))))
    for session_id, turn_number, model_timings in timings:  # the model's own timings, by session and turn
        for turn in sessions.get(session_id, []):
            if turn.turn == turn_number:
                turn.timings = model_timings
    return sessions


def assign_sessions(sessions: dict[str, list[ServerTurn]], talks: list[Talk], pages: list[dict]) -> dict[int, list]:
    """Which server session is which page: the one whose ends of turn its reply requests follow most closely."""

    def distance(turns: list[ServerTurn], talk: Talk, page: dict) -> float:
        requests = [talk.epoch(r["requestedAt"]) for r in page["replies"]]
        gaps = [min((r - t.end_of_turn for r in requests if r >= t.end_of_turn), default=1e9) for t in turns]
        return statistics.median(gaps)

    assigned: dict[int, list[ServerTurn]] = {t.session: [] for t in talks}
    for turns in sessions.values():
        best = min(range(len(talks)), key=lambda i: distance(turns, talks[i], pages[i]))
        assigned[talks[best].session] += turns
    return assigned


def measure(talk: Talk, page: dict, turns: list[ServerTurn]) -> list[TurnResult]:
    """One result per question of TALK: its server turn and reply are the first to follow its last word."""
    results = []
    for k, q in enumerate(talk.questions):
        result = TurnResult(talk.session, k + 1, q.prompt.name, q.prompt.speaker, q.prompt.held_out)
        results.append(result)
        result.times = {"speech_start": talk.at(q.speech_start_s), "speech_end": talk.at(q.speech_end_s)}
        until = float("inf")  # where this turn's events must end: the next question
        if k + 1 < len(talk.questions):
            until = result.times["next_question"] = talk.at(talk.questions[k + 1].speech_start_s)
        server = next((t for t in turns if result.times["speech_end"] <= t.end_of_turn < until), None)
        if server is None:
            result.error = "no reply audio from the server (no timing line in the app log)"
            continue
        result.times.update(end_of_turn=server.end_of_turn, server_audio=server.first_audio)
        result.tokens_per_s = server.timings.get("tokens_per_s")
        reply = next((r for r in page["replies"] if server.end_of_turn <= talk.epoch(r["requestedAt"]) < until), None)
        if reply is None:
            result.error = "the page never opened the reply stream"
            continue
        add_reply(result, talk, page, reply, until)
        fill_parts(result)
    return results


def add_reply(result: TurnResult, talk: Talk, page: dict, reply: dict, until: float) -> None:
    """The page's side of one turn: when its reply came, played, stalled and stopped."""
    audible = reply["playingAt"] if reply["playingAt"] is not None else audible_after(page, reply)
    ended = next((t for _, t in page["playback"] if audible is not None and t > audible), None)
    result.times.update(
        request=talk.epoch(reply["requestedAt"]),
        first_bytes=talk.epoch(reply["firstBytesAt"]),
        audible=talk.epoch(audible),
        playback_end=talk.epoch(ended),
    )
    result.stall_spans = [(talk.epoch(a), talk.epoch(b)) for a, b in reply["stalls"] if b is not None]
    gaps = [b - a for a, b in result.stall_spans]
    result.stalls = len(gaps)
    result.stalls_total_ms = round(sum(gaps), 1)
    result.stalls_max_ms = round(max(gaps, default=0.0), 1)
    result.overlapped = until < float("inf") and (ended is None or talk.epoch(ended) > until)
    if audible is None:
        result.error = "the reply never played"


def audible_after(page: dict, reply: dict) -> float | None:
    """A player that reports only window.omniAudible (Web Audio): the first audible moment after the request."""
    return next((t for t in page["audible"] if t >= reply["requestedAt"]), None)


def fill_parts(result: TurnResult) -> None:
    times = result.times

    def span(a: str, b: str) -> float | None:
        return None if times.get(a) is None or times.get(b) is None else round(times[b] - times[a], 1)

    result.speech_end_to_audible_ms = span("speech_end", "audible")
    result.speech_end_to_end_of_turn_ms = span("speech_end", "end_of_turn")
    result.end_of_turn_to_server_audio_ms = span("end_of_turn", "server_audio")
    result.server_audio_to_first_bytes_ms = span("server_audio", "first_bytes")
    result.first_bytes_to_audible_ms = span("first_bytes", "audible")
    result.server_audio_to_audible_ms = span("server_audio", "audible")
    result.end_of_turn_to_request_ms = span("end_of_turn", "request")


# --- the report ---------------------------------------------------------------------------------------------------


def summary(results: list[TurnResult]) -> dict[str, dict[str, float]]:
    """Median and p90 of every metric over the turns that have it (p90 as in bench.latency)."""
    out = {}
    for key in METRICS:
        values = sorted(v for r in results if (v := getattr(r, key)) is not None)
        if values:
            p90 = values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]
            out[key] = {"median": round(statistics.median(values), 1), "p90": round(p90, 1), "n": len(values)}
    return out


def median_turn(results: list[TurnResult]) -> TurnResult | None:
    measured = sorted(
        (r for r in results if r.speech_end_to_audible_ms is not None), key=lambda r: r.speech_end_to_audible_ms
    )
    return measured[(len(measured) - 1) // 2] if measured else None


def plot_timeline(result: TurnResult, path: Path) -> None:
    """The median turn, in seconds from the last speech sample."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = {k: (v - result.times["speech_end"]) / 1000 for k, v in result.times.items() if v is not None}
    rows = [
        ("you speak", "speech_start", "speech_end", "tab:blue"),
        ("end of turn (server VAD)", "speech_end", "end_of_turn", "tab:gray"),
        ("server: first audio", "end_of_turn", "server_audio", "tab:orange"),
        ("to the page: first bytes", "server_audio", "first_bytes", "tab:purple"),
        ("page: playback starts", "first_bytes", "audible", "tab:green"),
        ("the reply plays", "audible", "playback_end", "tab:olive"),
    ]
    fig, ax = plt.subplots(figsize=(9, 3.2))
    for y, (label, a, b, color) in enumerate(rows):
        if a in t and b in t:
            ax.broken_barh([(t[a], max(t[b] - t[a], 0.005))], (y - 0.35, 0.7), color=color)
            ax.text(max(t[a], t[b]) + 0.03, y, f"{(t[b] - t[a]) * 1000:.0f} ms", va="center", fontsize=8)
    zero = result.times["speech_end"]
    for start, end in result.stall_spans:  # gaps inside the reply, on its row
        ax.broken_barh([((start - zero) / 1000, (end - start) / 1000)], (len(rows) - 1.35, 0.7), color="tab:red")
    if "request" in t:
        ax.axvline(t["request"], color="tab:purple", ls=":", lw=1)
    ax.axvline(0, color="black", ls="--", lw=1)
    ax.axvline(t["audible"], color="red", lw=1.5)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("seconds from the last speech sample (dotted: the page opens the reply stream)")
    ax.set_title(
        f"Median turn in the browser: {result.prompt} (session {result.session}, turn {result.turn}), "
        f"audible {result.speech_end_to_audible_ms:.0f} ms after the last word (red)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


COLUMNS = [  # (heading, TurnResult field) for the table
    ("word>heard", HEADLINE),
    ("word>EOT", "speech_end_to_end_of_turn_ms"),
    ("EOT>srv", "end_of_turn_to_server_audio_ms"),
    ("srv>bytes", "server_audio_to_first_bytes_ms"),
    ("bytes>play", "first_bytes_to_audible_ms"),
    ("stall sum", "stalls_total_ms"),
    ("stall max", "stalls_max_ms"),
]


def print_table(results: list[TurnResult], summaries: dict[str, dict]) -> None:
    print(f"\n{'s':>1} {'#':>2} {'prompt':12} {'':2}" + "".join(f"{h:>11}" for h, _ in COLUMNS) + "  notes")
    for r in results:
        notes = ", ".join(filter(None, [r.error, "overlapped the next question" if r.overlapped else ""]))
        mark = "HO" if r.held_out else ("hu" if r.speaker == "human" else "")
        print(
            f"{r.session:>1} {r.turn:>2} {r.prompt:12} {mark:2}"
            + "".join(f"{fmt(getattr(r, k)):>11}" for _, k in COLUMNS)
            + f"  {notes}"
        )
    print(
        "(ms; HO = held out, hu = human recording; word = last speech sample, EOT = end of turn, "
        "srv = the server's first audio)"
    )
    for name, s in summaries.items():
        for stat in ("median", "p90") if s else ():  # no held-out turn in a short run
            row = "".join(f"{fmt(s.get(k, {}).get(stat)):>11}" for _, k in COLUMNS)
            print(f"{name + ' ' + stat:>19}{row}")


def variant_name(args: argparse.Namespace) -> str:
    """browser[-<llm>][-load][-2sessions]: each configuration keeps its own results."""
    return "-".join(
        ["browser"]
        + ([args.llm] if args.llm else [])
        + (["load"] if args.load else [])
        + ([f"{args.sessions}sessions"] if args.sessions > 1 else [])
    )


def run(args: argparse.Namespace, app_log: Path) -> tuple[list[Talk], list[dict], str]:
    """Start everything, talk, and return the people, what their pages recorded, and the app's log."""
    from playwright.sync_api import sync_playwright

    talks = [make_talk(s, prompts_for(s, args.turns), args.gap_s) for s in range(args.sessions)]
    load = busy_core() if args.load else None  # the whole benchmark long, app start included
    app = None
    try:
        port = args.port or free_port()
        app = start_app(port, args.llm, app_log)
        url = f"http://127.0.0.1:{port}"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            for talk in talks:
                talk.page = open_page(browser, url)
                press_record(talk)
            for talk in talks:  # each person starts STAGGER_S after the one before
                start_talking(talk, talks[talk.session - 1].at(0) + STAGGER_S * 1000 if talk.session else None)
                print(
                    f"session {talk.session}: talking, {len(talk.questions)} questions, clip {talk.duration_s:.0f} s",
                    flush=True,
                )
            wait_until_answered(talks)
            pages = [talk.page.evaluate(READ_PAGE) for talk in talks]
            browser.close()
    finally:
        stop(app)
        stop(load)
    return talks, pages, app_log.read_text()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.browser", description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=8, help="questions per person")
    parser.add_argument("--load", action="store_true", help="one busy process at normal priority the whole time")
    parser.add_argument("--sessions", type=int, default=1, choices=(1, 2), help="people talking at once")
    parser.add_argument("--llm", help="the app's language model (e.g. qwen2.5-0.5b); default: the app's")
    parser.add_argument("--port", type=int, help="the app's port (default: a free one)")
    parser.add_argument("--gap-s", type=float, default=GAP_S, help="silence after each question")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = variant_name(args)
    load_before = os.getloadavg()[0]

    talks, pages, log_text = run(args, RESULTS / f"{name}-app.log")

    assigned = assign_sessions(server_turns(log_text), talks, pages)
    results = [r for talk, page in zip(talks, pages) for r in measure(talk, page, assigned[talk.session])]
    summaries = {"all": summary(results)}
    if args.sessions > 1:
        summaries |= {f"session {t.session}": summary([r for r in results if r.session == t.session]) for t in talks}
    summaries["held out"] = summary([r for r in results if r.held_out])
    report = make_report(args, talks, pages, results, summaries, log_text, load_before)
    json_path, plot_path = RESULTS / f"{name}.json", RESULTS / f"{name}-timeline.png"
    json_path.write_text(json.dumps(report, indent=2))
    if middle := median_turn(results):
        plot_timeline(middle, plot_path)

    print_table(results, summaries)
    print(
        f"\n{report['models']} | load: {report['load']} | held out: {', '.join(report['held_out']) or 'none in this run'}"
    )
    print(f"wrote {json_path} and {plot_path} (app log: {RESULTS / (name + '-app.log')})")


def make_report(args, talks, pages, results, summaries, log_text: str, load_before: float) -> dict:
    used = [q.prompt for talk in talks for q in talk.questions]
    models = MODELS_LINE.search(log_text)
    return {
        "what": "last speech sample leaving the fake microphone -> reply audible in the page (Chromium, same machine)",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "models": models.group(1) if models else args.llm or "default",
        "load": "one busy process at normal priority" if args.load else "none (but the browser)",
        "sessions": args.sessions,
        "turns_per_session": args.turns,
        "gap_s": args.gap_s,
        "stagger_s": round((talks[-1].at(0) - talks[0].at(0)) / 1000, 2),
        "load_average_at_start": round(load_before, 2),
        "held_out": sorted({p.name for p in used if p.held_out}),
        "human": sorted({p.name for p in used if p.speaker == "human"}),
        "summary": summaries,
        "barge_in_holds": [page["holds"] for page in pages],
        "clocks": [talk.clocks for talk in talks],
        "chat": [{"heard": page["heard"], "answers": page["answers"]} for page in pages],
        "turns": [asdict(r) for r in results],
    }


if __name__ == "__main__":
    main()
