"""Latency benchmark: spoken prompts -> the app's own code path (omni.conversation) -> first reply audio.

    python -m bench                 # real-time pace, 0.5 s chunks, as a browser microphone sends them
    python -m bench --baseline      # also the naive pipeline with the same models, side by side
    python -m bench --fast          # no waiting between chunks (speculation then gets no head start)

Times are wall-clock on this machine. "Speech end" is where the pause detector located the last speech sample;
with real-time pacing, a sample is "spoken" at t0 + index / 16 kHz and reaches the server with its 0.5 s chunk.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from omni import Audio, Finished, Settings
from omni.audio import FRAME, SAMPLE_RATE, load_audio
from omni.cascade import Cascade
from omni.conversation import Conversation, ConversationOptions
from utils.turn import TurnOptions
from utils.vad import PauseDetectorOptions

HERE = Path(__file__).parent
CHUNK_S = 0.5  # what the browser sends per stream event
FRAME_MS = 1000 * FRAME / SAMPLE_RATE  # the pause detector's time step (32 ms)
# After each prompt: enough for the longest end-of-turn wait (words read unfinished) and its chunk.
TRAILING_SILENCE_S = TurnOptions().incomplete_ms / 1000 + CHUNK_S
PROMPTS = [HERE / "prompts" / name for name in ("hello.wav", "capital.wav", "spider.wav", "book.wav", "name_cat.wav", "japan.wav")] + [
    HERE.parent / "tests" / "data" / name for name in ("spk1_snt5.wav", "example1.wav")
]


@dataclass
class TurnResult:
    prompt: str
    pipeline: str  # "streaming" (the app) or "baseline" (naive)
    speech_s: float
    transcript: str = ""
    reply_text: str = ""
    vad_ms: float = 0.0  # last speech sample -> end of turn declared (includes the wait for the chunk)
    eot_to_first_audio_ms: float = 0.0  # end of turn declared -> first reply audio ready
    speech_end_to_first_audio_ms: float = 0.0  # last speech sample -> first reply audio ready
    asr_after_eot_ms: float = 0.0  # ASR time still left when the turn ended
    llm_first_token_ms: float = 0.0  # from the LLM call to its first token
    tokens_per_s: float = 0.0
    tts_rtf: float = 0.0
    speculated: bool = False  # the reply was already under way when the turn ended
    stages: dict[str, float] = field(default_factory=dict)  # absolute times (s from speech start) for the plot


def speak_turn(conversation: Conversation, audio: np.ndarray, name: str, realtime: bool) -> tuple[float, float]:
    """Feed AUDIO + silence in 0.5 s chunks until the pause detector ends the turn.

    Returns (t0, eot_at): when the stream's first sample was "spoken", and when the end of turn was declared.
    """
    conversation.clear()
    stream = np.concatenate([audio, np.zeros(int(TRAILING_SILENCE_S * SAMPLE_RATE), np.float32)])
    chunk = int(CHUNK_S * SAMPLE_RATE)
    t0 = time.perf_counter()
    for i in range(0, len(stream), chunk):
        if realtime:  # the chunk's last sample is spoken at t0 + (i + chunk) / rate; it arrives then
            time.sleep(max(0.0, t0 + (i + chunk) / SAMPLE_RATE - time.perf_counter()))
        if any(e.kind == "end_of_turn" for e in conversation.hear(stream[i : i + chunk], SAMPLE_RATE)):
            eot_at = time.perf_counter()
            # Without real-time pacing, pretend the audio was spoken just before now.
            return (t0 if realtime else eot_at - (i + chunk) / SAMPLE_RATE), eot_at
    raise RuntimeError(f"{name}: the pause detector never ended the turn")


def run_turn(model: Cascade, conversation: Conversation, audio: np.ndarray, name: str, realtime: bool) -> TurnResult:
    t0, eot_at = speak_turn(conversation, audio, name, realtime)
    speech_start, speech_end = conversation.ended.speech_start, conversation.ended.speech_end
    speech_end_at = t0 + speech_end / SAMPLE_RATE

    first_audio_at = None
    turn = None
    for reply_chunk in conversation.reply():
        match reply_chunk:
            case Audio() if first_audio_at is None:
                first_audio_at = time.perf_counter()
                started_at = conversation.reply_started_at
            case Finished():
                turn = reply_chunk.turn
    assert turn is not None and first_audio_at is not None
    timings = turn.timings
    asr_done_at = started_at + timings["asr_ms"] / 1000
    return TurnResult(
        prompt=name,
        pipeline="streaming",
        speech_s=len(audio) / SAMPLE_RATE,
        transcript=turn.transcript,
        reply_text=turn.reply_text,
        vad_ms=(eot_at - speech_end_at) * 1000,
        eot_to_first_audio_ms=(first_audio_at - eot_at) * 1000,
        speech_end_to_first_audio_ms=(first_audio_at - speech_end_at) * 1000,
        asr_after_eot_ms=max(0.0, asr_done_at - eot_at) * 1000,
        llm_first_token_ms=timings["first_token_ms"] - timings["asr_ms"],
        tokens_per_s=timings["tokens_per_s"],
        tts_rtf=timings["tts_rtf"],
        speculated=started_at < eot_at,
        stages={
            "speech_start": speech_start / SAMPLE_RATE,
            "speech_end": speech_end / SAMPLE_RATE,
            "end_of_turn": eot_at - t0,
            "reply_start": started_at - t0,
            "asr_done": asr_done_at - t0,
            "first_token": started_at - t0 + timings["first_token_ms"] / 1000,
            "first_audio": first_audio_at - t0,
            "reply_done": started_at - t0 + timings["total_ms"] / 1000,
        },
    )


def whole_window(model: Cascade, audio: np.ndarray) -> str:
    """faster-whisper's own path (a 30 s window, greedy). Called on the transcriber's own thread, as the app calls
    it: CTranslate2's thread team belongs to the calling thread, and one more team spinning would slow the peer."""
    segments, _ = model.asr.model.transcribe(audio, language="en", beam_size=1)
    return " ".join(s.text.strip() for s in segments)


def run_baseline_turn(model: Cascade, conversation: Conversation, audio: np.ndarray, name: str, realtime: bool) -> TurnResult:
    """The naive pipeline with the same models: transcribe after the stop, write the whole reply, speak it."""
    options = conversation.options
    conversation.options = replace(options, speculate=False, listen_ahead=False)
    try:
        t0, eot_at = speak_turn(conversation, audio, name, realtime)
        speech_end_at = t0 + conversation.ended.speech_end / SAMPLE_RATE
        turn_audio = conversation.turn_audio()
    finally:
        conversation.options = options
    transcript = model.asr._thread.call(whole_window, model, turn_audio)
    asr_at = time.perf_counter()
    reply_text = "".join(model.llm.stream([], transcript))
    for _ in model.tts.synthesize(reply_text):  # the naive way: the whole reply, then play it
        pass
    first_audio_at = time.perf_counter()
    return TurnResult(
        prompt=name,
        pipeline="baseline",
        speech_s=len(audio) / SAMPLE_RATE,
        transcript=transcript,
        reply_text=reply_text,
        vad_ms=(eot_at - speech_end_at) * 1000,
        eot_to_first_audio_ms=(first_audio_at - eot_at) * 1000,
        speech_end_to_first_audio_ms=(first_audio_at - speech_end_at) * 1000,
        asr_after_eot_ms=(asr_at - eot_at) * 1000,
    )


def summary(results: list[TurnResult], key: str) -> dict[str, float]:
    values = sorted(getattr(r, key) for r in results)
    p90 = values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]
    return {"median": round(statistics.median(values), 1), "p90": round(p90, 1)}


def plot_timeline(result: TurnResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result.stages
    rows = [
        ("user speaking", s["speech_start"], s["speech_end"], "tab:blue"),
        ("end-of-turn silence", s["speech_end"], s["end_of_turn"], "tab:gray"),
        ("ASR", s["reply_start"], s["asr_done"], "tab:orange"),
        ("LLM first token", s["asr_done"], s["first_token"], "tab:green"),
        ("LLM + TTS stream", s["first_token"], s["reply_done"], "tab:olive"),
    ]
    fig, ax = plt.subplots(figsize=(9, 3))
    for y, (label, a, b, color) in enumerate(rows):
        ax.broken_barh([(a, max(b - a, 0.005))], (y - 0.35, 0.7), color=color)
        ax.text(b + 0.03, y, f"{(b - a) * 1000:.0f} ms", va="center", fontsize=8)
    ax.axvline(s["end_of_turn"], color="black", ls="--", lw=1)
    ax.axvline(s["first_audio"], color="red", lw=1.5)
    ax.text(s["first_audio"], len(rows) - 0.4, f" first audio {result.eot_to_first_audio_ms:.0f} ms after end of turn", color="red", fontsize=8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("seconds from start of the stream")
    ax.set_title(f'One turn ("{result.transcript[:50]}"), {result.pipeline}', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", action="store_true", help="also run the naive pipeline (same models)")
    parser.add_argument("--fast", action="store_true", help="feed chunks without waiting (not real-time)")
    parser.add_argument("--no-speculation", action="store_true", help="answer only after the end of turn")
    parser.add_argument("--no-listen-ahead", action="store_true", help="do not transcribe while the user speaks")
    parser.add_argument("--end-of-turn-ms", type=float, default=PauseDetectorOptions.end_of_turn_ms)
    parser.add_argument("--pause-ms", type=float, default=PauseDetectorOptions.pause_ms, help="silence that starts speculation")
    settings = Settings.from_env(os.environ)
    parser.add_argument("--llm", default=settings.llm, help="language model key (see omni/models.py)")
    parser.add_argument("--asr", default=settings.asr, help="speech recognition model key")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    model = Cascade.load(replace(settings, asr=args.asr, llm=args.llm))
    model.warm_up()
    cold_start_s = time.perf_counter() - start
    conversation = Conversation(
        model,
        PauseDetectorOptions(end_of_turn_ms=args.end_of_turn_ms, pause_ms=args.pause_ms),
        ConversationOptions(speculate=not args.no_speculation, listen_ahead=not args.no_listen_ahead),
    )
    results: list[TurnResult] = []
    for path in PROMPTS:
        audio = load_audio(path)
        runs = [run_turn] + ([run_baseline_turn] if args.baseline else [])
        for run in runs:
            r = run(model, conversation, audio, path.stem, realtime=not args.fast)
            results.append(r)
            print(
                f"{r.pipeline:9} {r.prompt:10} {r.speech_s:4.1f}s  end->turn {r.vad_ms:5.0f}  turn->audio "
                f"{r.eot_to_first_audio_ms:6.0f}  speech end->audio {r.speech_end_to_first_audio_ms:6.0f} ms  "
                f"| {r.transcript!r} -> {r.reply_text[:60]!r}",
                flush=True,
            )

    streaming = [r for r in results if r.pipeline == "streaming"]
    keys = ["vad_ms", "eot_to_first_audio_ms", "speech_end_to_first_audio_ms", "asr_after_eot_ms", "llm_first_token_ms", "tokens_per_s", "tts_rtf"]
    report = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores, {platform.python_version()}",
        "models": model.description,
        "chunk_s": CHUNK_S,
        "realtime": not args.fast,
        "speculation": not args.no_speculation,
        "listen_ahead": not args.no_listen_ahead,
        "end_of_turn_ms": args.end_of_turn_ms,
        "pause_ms": args.pause_ms,
        "cold_start_s": round(cold_start_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "streaming": {k: summary(streaming, k) for k in keys},
        "turns": [asdict(r) for r in results],
    }
    baseline = [r for r in results if r.pipeline == "baseline"]
    if baseline:
        report["baseline"] = {k: summary(baseline, k) for k in ("eot_to_first_audio_ms", "speech_end_to_first_audio_ms")}
        for key in ("eot_to_first_audio_ms", "speech_end_to_first_audio_ms"):
            fast = report["streaming"][key]["median"]
            # A median under one VAD frame means the answer was ready when the turn ended: the ratio is then a
            # lower bound (printed with ">="), not a division by almost nothing.
            report[f"speedup_{key[:-3]}"] = round(report["baseline"][key]["median"] / max(FRAME_MS, fast), 1)
            report[f"speedup_{key[:-3]}_is_lower_bound"] = fast < FRAME_MS
    (args.out / "latency.json").write_text(json.dumps(report, indent=2))
    median_turn = sorted(streaming, key=lambda r: r.eot_to_first_audio_ms)[len(streaming) // 2]
    plot_timeline(median_turn, args.out / "timeline.png")

    print(f"\n{report['models']}  |  cold start {report['cold_start_s']} s, peak RSS {report['peak_rss_mb']} MB")
    print(f"{'metric':32} {'median':>8} {'p90':>8}")
    for k, v in report["streaming"].items():
        print(f"{k:32} {v['median']:8} {v['p90']:8}")
    if baseline:
        for k, v in report["baseline"].items():
            print(f"baseline {k:23} {v['median']:8} {v['p90']:8}")
        for what, key in (("end of turn", "speedup_eot_to_first_audio"), ("last speech", "speedup_speech_end_to_first_audio")):
            bound = ">= " if report[f"{key}_is_lower_bound"] else ""
            print(f"speed-up ({what} -> first audio, median): {bound}{report[key]}x")
    print(f"wrote {args.out / 'latency.json'} and {args.out / 'timeline.png'}")


if __name__ == "__main__":
    main()
