"""Load benchmark: N conversations at once, each a person speaking real recordings through the app's code path.

    python -m bench.load --sessions 1 2 4                                  # the language model in this process
    python -m bench.load --sessions 1 2 4 --remote http://127.0.0.1:8000/v1 [--remote-model NAME]

Each simulated person speaks a recording in 0.5 s chunks at real-time pace (`omni.conversation.Conversation`, the
real VAD ends the turn), waits for the reply, listens to it at playback speed, thinks for a moment and speaks the
next one; person i starts `--stagger-s` seconds after person i-1. Reported per N: end of turn -> first reply audio,
median and p90 over every turn of every person. `--remote` sets OMNI_LLM_URL, so the cascade is made the way the app
makes it (`Cascade.load`); Whisper and piper stay in this process. JSON goes to bench/results/load-<engine>.json,
and bench/results/load.png plots every engine measured so far.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from bench.latency import CHUNK_S, PROMPTS, TRAILING_SILENCE_S
from omni import Audio, Finished, Settings
from omni.audio import SAMPLE_RATE, load_audio
from omni.cascade import Cascade
from omni.conversation import Conversation

RESULTS = Path(__file__).parent / "results"


@dataclass
class LoadOptions:
    turns: int = 3  # per person
    stagger_s: float = 1.0  # two people starting within a second of each other (issue 11's two-user trial)
    think_s: float = 1.0  # between hearing the end of a reply and speaking again


@dataclass
class LoadTurn:
    sessions: int
    person: int
    turn: int
    prompt: str
    eot_to_first_audio_ms: float | None = None  # None: no audio (see error)
    reply_s: float = 0.0  # seconds of reply audio
    reply_text: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # the model's own (Turn.timings: asr_ms, first_token_ms...)
    error: str = ""


def speak(conversation: Conversation, audio: np.ndarray) -> float:
    """Feed AUDIO and then silence in 0.5 s chunks at real-time pace until the turn ends; returns when it did."""
    stream = np.concatenate([audio, np.zeros(int(TRAILING_SILENCE_S * SAMPLE_RATE), np.float32)])
    chunk, t0 = int(CHUNK_S * SAMPLE_RATE), time.perf_counter()
    for i in range(0, stream.size, chunk):
        time.sleep(max(0.0, t0 + (i + chunk) / SAMPLE_RATE - time.perf_counter()))  # the chunk arrives when spoken
        conversation.hear(stream[i : i + chunk], SAMPLE_RATE)
        if conversation.turn_ended:
            return time.perf_counter()
    raise RuntimeError("the pause detector never ended the turn")


def person(model: Cascade, sessions: int, index: int, options: LoadOptions, out: list[LoadTurn]) -> None:
    conversation = Conversation(model)
    for turn in range(options.turns):
        path = PROMPTS[(index + turn) % len(PROMPTS)]
        result = LoadTurn(sessions, index, turn, path.stem)
        eot_at = speak(conversation, load_audio(path))
        first_audio_at = None
        try:
            for chunk in conversation.reply():
                match chunk:
                    case Audio(pcm):
                        first_audio_at = first_audio_at or time.perf_counter()
                        result.reply_s += len(pcm) / model.sample_rate
                    case Finished(finished):
                        result.reply_text, result.timings = finished.reply_text, finished.timings
        except Exception as e:  # noqa: BLE001 - a failed turn is a result too; the person goes on
            result.error = f"{type(e).__name__}: {e}"
        if first_audio_at is not None:
            result.eot_to_first_audio_ms = round((first_audio_at - eot_at) * 1000, 1)
            time.sleep(max(0.0, first_audio_at + result.reply_s - time.perf_counter()))  # listening to it
        conversation.played()
        out.append(result)
        print(
            f"N={sessions} person {index} turn {turn} {path.stem:10} end of turn -> audio "
            f"{result.eot_to_first_audio_ms} ms {result.error or repr(result.reply_text[:50])}",
            flush=True,
        )
        time.sleep(options.think_s)


def run(model: Cascade, sessions: int, options: LoadOptions) -> list[LoadTurn]:
    results: list[LoadTurn] = []
    people = [threading.Thread(target=person, args=(model, sessions, i, options, results)) for i in range(sessions)]
    for thread in people:
        thread.start()
        time.sleep(options.stagger_s)
    for thread in people:
        thread.join()
    return results


def summary(turns: list[LoadTurn]) -> dict[str, float | int | None]:
    values = sorted(t.eot_to_first_audio_ms for t in turns if t.eot_to_first_audio_ms is not None)
    p90 = values[min(len(values) - 1, round(0.9 * (len(values) - 1)))] if values else None
    return {
        "median_ms": round(statistics.median(values), 1) if values else None,
        "p90_ms": p90,
        "turns": len(turns),
        "failed": sum(1 for t in turns if t.eot_to_first_audio_ms is None),
    }


def plot(path: Path) -> None:
    """End of turn -> first audio against N for every engine measured in bench/results."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ticks: set[int] = set()
    for report_path in sorted(path.parent.glob("load-*.json")):
        report = json.loads(report_path.read_text())
        n = [int(k) for k in report["by_sessions"]]
        ticks.update(n)
        for stat, style in (("median_ms", "-o"), ("p90_ms", "--x")):
            values = [report["by_sessions"][str(k)][stat] for k in n]
            ax.plot(n, values, style, label=f"{report['engine']} {stat[:-3]}")
    ax.set_xlabel("conversations at once")
    ax.set_ylabel("end of turn -> first audio (ms)")
    ax.set_xticks(sorted(ticks))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4], help="conversations at once")
    parser.add_argument("--remote", metavar="URL", help="an OpenAI-compatible server (as OMNI_LLM_URL)")
    parser.add_argument("--remote-model", metavar="NAME", help="its model (default: the first it lists)")
    settings, load_defaults = Settings.from_env(os.environ), LoadOptions()
    parser.add_argument("--llm", default=settings.llm, help="the local language model key (without --remote)")
    parser.add_argument("--turns", type=int, default=load_defaults.turns, help="turns per person")
    parser.add_argument("--stagger-s", type=float, default=load_defaults.stagger_s)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    settings = replace(settings, llm=args.llm)
    if args.remote:
        settings = replace(settings, llm_url=args.remote, llm_model=args.remote_model or settings.llm_model)
    options = LoadOptions(turns=args.turns, stagger_s=args.stagger_s)

    model = Cascade.load(settings)
    model.warm_up()
    engine = "remote" if args.remote else "local"
    by_sessions, turns = {}, []
    for sessions in args.sessions:
        results = run(model, sessions, options)
        by_sessions[str(sessions)] = summary(results)
        turns += results
        print(f"N={sessions}: {by_sessions[str(sessions)]}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "engine": engine,
        "models": model.description,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "options": asdict(options),
        "by_sessions": by_sessions,
        "turns": [asdict(t) for t in turns],
    }
    (args.out / f"load-{engine}.json").write_text(json.dumps(report, indent=2))
    plot(args.out / "load.png")
    print(f"wrote {args.out / f'load-{engine}.json'} and {args.out / 'load.png'}")


if __name__ == "__main__":
    main()
