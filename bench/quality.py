"""Quality benchmark: are spoken questions heard right and answered right, in the app and from the command line?

    python -m bench.quality                # both paths, 0.5 s chunks at real-time pace (~25 min on 2 cores)
    python -m bench.quality --fast         # no real-time pacing (same transcripts; latency is not the app's)
    python -m bench.quality --asr          # transcripts only: the app's phrase path, variants, whole utterance
    python -m bench.quality --paths cli --only 'arith|mem'   # one path, some rows

The questions are bench/prompts/quality/index.tsv (made by bench/make_quality.py): facts, arithmetic on spoken
numbers, and conversations whose last answer needs what was said before, in several voices including real human
recordings. Rows marked held_out were never looked at while tuning; they are reported on their own.

- app: `omni.conversation.Conversation` with the cascade, 0.5 s chunks (as bench/latency.py feeds them): the
  pause detector ends each turn, the transcript is made phrase by phrase while listening ahead.
- cli: `Cascade.respond` on the whole recording (what `python -m omni.reply` does), history kept by hand.

Word error rate is over all turns (jiwer, after Whisper's English normalizer); an answer is right when the reply
matches the row's regex. Writes bench/results/quality.json (or quality-asr.json) and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import jiwer
import numpy as np
from whisper_normalizer.english import EnglishTextNormalizer

from omni import Audio, Finished, Settings
from omni.asr import AsrOptions
from omni.audio import SAMPLE_RATE, load_audio
from omni.cascade import Cascade, CascadeSession, _pieces, run
from omni.conversation import Conversation, ConversationOptions
from omni.llm import LlmOptions
from omni.scheduler import URGENT
from omni.speech_model import Message

HERE = Path(__file__).parent
PROMPTS = HERE / "prompts" / "quality"
CHUNK_S = 0.5  # what the browser sends per stream event
TRAILING_SILENCE_S = 4.0  # enough for any end-of-turn rule to fire
# A sentence mark followed by a word in lower case or one that carries a sentence on: phrases joined as if the
# sentence had ended there ("... is established. for the frequent ...", "... animal? In the world").
BROKEN = re.compile(r"[.?!]\s+(?:[a-z]|(?:In|On|At|To|From|Of|For|With|By|About|Into|And|Or|But|Than)\b)")
_normalize = EnglishTextNormalizer()


@dataclass
class Item:
    id: str
    dialog: str
    file: str
    text: str
    answer: str
    voice: str
    held_out: bool
    kind: str

    @property
    def reference(self) -> str:
        return " ".join(self.text.replace("|", " ").split())

    def audio(self) -> np.ndarray:
        return load_audio(PROMPTS / self.file)


def load_items(only: str | None = None) -> list[Item]:
    with open(PROMPTS / "index.tsv", newline="") as f:
        items = [Item(**{**row, "held_out": row["held_out"] == "1"}) for row in csv.DictReader(f, delimiter="\t")]
    if only:  # whole dialogs: a question about what was said needs its earlier turns
        dialogs = {i.dialog for i in items if re.search(only, i.id)}
        items = [i for i in items if i.dialog in dialogs]
    return items


def dialogs(items: list[Item]) -> list[list[Item]]:
    groups: dict[str, list[Item]] = {}
    for item in items:
        groups.setdefault(item.dialog, []).append(item)
    return list(groups.values())


def normalize(text: str) -> str:
    return " ".join(_normalize(text).split())


def wer(references: list[str], hypotheses: list[str]) -> float:
    refs, hyps = zip(*[(normalize(r), normalize(h)) for r, h in zip(references, hypotheses) if normalize(r)])
    return jiwer.wer(list(refs), list(hyps))


def correct(pattern: str, reply: str) -> bool:
    return bool(re.search(pattern, reply, re.IGNORECASE))


@dataclass
class TurnResult:
    id: str
    path: str  # "app" or "cli"
    voice: str
    kind: str
    held_out: bool
    reference: str
    answer: str
    transcript: str = ""
    reply: str = ""
    right: bool | None = None  # None: nothing to check in this turn
    phrases: int = 1
    cut: bool = False  # the end of turn came before the speaker had finished (the rest is not in this turn)
    asr_ms: float = 0.0  # the reply's own ASR time (app: what was left when it started)
    first_audio_ms: float = 0.0  # app: end of turn -> first audio; cli: from the call
    timings: dict[str, float] = field(default_factory=dict)


def feed(conversation: Conversation, audio: np.ndarray, realtime: bool) -> tuple[float, bool]:
    """AUDIO and silence in 0.5 s chunks until the turn ends (as bench/latency.py's speak_turn, keeping the
    history); returns when the end of turn was declared, and whether that cut the speaker off (words of AUDIO
    were still to come: they are not heard in this turn)."""
    stream = np.concatenate([audio, np.zeros(int(TRAILING_SILENCE_S * SAMPLE_RATE), np.float32)])
    last_word = np.flatnonzero(np.abs(audio) > 0.01)[-1]
    chunk = int(CHUNK_S * SAMPLE_RATE)
    t0 = time.perf_counter()
    for i in range(0, len(stream), chunk):
        if realtime:
            time.sleep(max(0.0, t0 + (i + chunk) / SAMPLE_RATE - time.perf_counter()))
        if any(e.kind == "end_of_turn" for e in conversation.hear(stream[i : i + chunk], SAMPLE_RATE)):
            return time.perf_counter(), i + chunk <= last_word
    raise RuntimeError("the pause detector never ended the turn")


def result(item: Item, path: str, transcript: str, reply: str, **kw) -> TurnResult:
    right = correct(item.answer, reply) if item.answer else None
    return TurnResult(
        item.id, path, item.voice, item.kind, item.held_out, item.reference, item.answer, transcript, reply, right, **kw
    )


def run_app(conversation: Conversation, dialog: list[Item], realtime: bool) -> Iterable[TurnResult]:
    conversation.clear()
    for item in dialog:
        eot_at, cut = feed(conversation, item.audio(), realtime)
        phrases = len(conversation.phrase_breaks()) + 1
        first_audio_at, turn = None, None
        for chunk in conversation.reply():
            match chunk:
                case Audio() if first_audio_at is None:
                    first_audio_at = time.perf_counter()
                case Finished():
                    turn = chunk.turn
        conversation.played()
        assert turn is not None and first_audio_at is not None, item.id
        yield result(
            item,
            "app",
            turn.transcript,
            turn.reply_text,
            phrases=phrases,
            cut=cut,
            asr_ms=turn.timings["asr_ms"],
            first_audio_ms=(first_audio_at - eot_at) * 1000,
            timings=turn.timings,
        )


def run_cli(model: Cascade, dialog: list[Item]) -> Iterable[TurnResult]:
    history: list[Message] = []
    for item in dialog:
        turn = None
        for chunk in model.respond(item.audio(), SAMPLE_RATE, history):
            match chunk:
                case Finished():
                    turn = chunk.turn
        assert turn is not None, item.id
        history.extend(turn.messages())
        yield result(
            item,
            "cli",
            turn.transcript,
            turn.reply_text,
            asr_ms=turn.timings["asr_ms"],
            first_audio_ms=turn.timings["first_audio_ms"],
            timings=turn.timings,
        )


def median(values: list[float]) -> float:
    return round(statistics.median(values), 1) if values else 0.0


def p90(values: list[float]) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, round(0.9 * (len(values) - 1)))], 1) if values else 0.0


def score(results: list[TurnResult]) -> dict:
    if not results:
        return {"turns": 0}
    checked = [r for r in results if r.right is not None]
    memory = [r for r in checked if r.kind in ("memory", "human")]
    return {
        "turns": len(results),
        "wer": round(100 * wer([r.reference for r in results], [r.transcript for r in results]), 2),
        "broken_joins": sum(len(BROKEN.findall(r.transcript)) for r in results),
        "cut_turns": sum(r.cut for r in results),
        "answers": f"{sum(r.right for r in checked)}/{len(checked)}",
        "accuracy": round(100 * sum(r.right for r in checked) / max(1, len(checked)), 1),
        "memory": f"{sum(r.right for r in memory)}/{len(memory)}",
        "by_kind": {
            k: f"{sum(r.right for r in checked if r.kind == k)}/{sum(r.kind == k for r in checked)}"
            for k in sorted({r.kind for r in checked})
        },
        "first_audio_ms": {
            "median": median([r.first_audio_ms for r in results]),
            "p90": p90([r.first_audio_ms for r in results]),
        },
        "asr_ms": {"median": median([r.asr_ms for r in results]), "p90": p90([r.asr_ms for r in results])},
    }


# --- transcripts only -------------------------------------------------------------------------------------------


def turn_cut(conversation: Conversation, audio: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """The turn's audio and phrase breaks as the app cuts them (the same pause detector, 0.5 s chunks)."""
    conversation.cancel()
    feed(conversation, audio, realtime=False)
    return conversation.turn_audio(), conversation.phrase_breaks()


def timed(work: Callable[[], str]) -> tuple[str, float]:
    start = time.perf_counter()
    text = work()
    return text, (time.perf_counter() - start) * 1000


def app_transcript(model: Cascade, audio: np.ndarray, breaks: list[int], old_join: bool) -> tuple[str, float]:
    """The app's transcript of a turn, and the ms its reply spends on it: the last phrase's (the earlier ones were
    transcribed while the user went on talking)."""
    session = CascadeSession(model)
    pieces = _pieces(audio, SAMPLE_RATE, breaks)
    run(session._transcribe_turn(pieces, lambda: URGENT))
    session.phrases = session.phrases[:-1]
    text, ms = timed(lambda: run(session._transcribe_turn(pieces, lambda: URGENT)))
    return (" ".join(p.transcript for p in session.phrases if p.transcript) if old_join else text), ms


def asr_variants(model: Cascade, items: list[Item]) -> dict:
    """Every turn through the app's path with each listening aid on and off, and whole (the CLI)."""
    conversation = Conversation(model, options=ConversationOptions(speculate=False, listen_ahead=False))
    options = model.asr.options
    variants = {  # name -> (AsrOptions, the path, phrases joined the old way: with " ")
        "phrases, old join": (replace(options, beam_size=1), "app", True),
        "phrases, join (app)": (replace(options, beam_size=1), "app", False),
        "phrases, join, beam 5": (replace(options, beam_size=5), "app", False),
        "whole utterance (cli)": (replace(options, beam_size=1), "cli", False),
        "whole utterance, beam 5": (replace(options, beam_size=5), "cli", False),
    }
    rows = []
    for item in items:
        recording = item.audio()
        audio, breaks = turn_cut(conversation, recording)
        row = {"id": item.id, "held_out": item.held_out, "reference": item.reference, "phrases": len(breaks) + 1}
        for name, (asr_options, path, old_join) in variants.items():
            model.asr.options = asr_options
            if path == "cli":
                text, ms = timed(partial(model.asr.transcribe, recording))
            else:
                text, ms = app_transcript(model, audio, breaks, old_join)
            row[name] = {"text": text, "ms": round(ms, 1)}
        model.asr.options = options
        rows.append(row)
        print(
            f"{item.id:10} {row['phrases']} | " + " | ".join(row[n]["text"] for n in variants if "beam" not in n),
            flush=True,
        )
    summary = {}
    multi = [r for r in rows if r["phrases"] > 1]
    for name in variants:
        for part, chosen in (
            ("held-in", [r for r in rows if not r["held_out"]]),
            ("held-out", [r for r in rows if r["held_out"]]),
            ("multi-phrase", multi),
        ):
            summary.setdefault(name, {})[part] = {
                "wer": round(100 * wer([r["reference"] for r in chosen], [r[name]["text"] for r in chosen]), 2),
                "broken_joins": sum(len(BROKEN.findall(r[name]["text"])) for r in chosen),
            }
        for part, chosen in (("ms", rows), ("multi_phrase_ms", multi)):
            times = [r[name]["ms"] for r in chosen]
            summary[name][part] = {"median": median(times), "p90": p90(times)}
    return {"variants": summary, "turns": rows}


# --- main -------------------------------------------------------------------------------------------------------


def print_table(report: dict) -> None:
    print(f"\n{report['models']}  |  {report['seconds']:.0f} s")
    head = f"{'path':5} {'part':9} {'turns':>5} {'WER %':>6} {'broken':>6} {'cut':>3} {'answers':>8} {'acc %':>6}"
    print(head + f" {'memory':>7} {'first audio ms':>15} {'ASR ms':>12}")
    for path, parts in report["paths"].items():
        for part, s in parts.items():
            if part == "all" or not s["turns"]:
                continue
            print(
                f"{path:5} {part:9} {s['turns']:5} {s['wer']:6} {s['broken_joins']:6} {s['cut_turns']:3} "
                f"{s['answers']:>8} {s['accuracy']:6} {s['memory']:>7} "
                f"{s['first_audio_ms']['median']:7} ({s['first_audio_ms']['p90']:5}) "
                f"{s['asr_ms']['median']:5} ({s['asr_ms']['p90']:5})"
            )
        print(f"      by kind: {parts['all']['by_kind']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="feed chunks without waiting (not real-time)")
    parser.add_argument("--asr", action="store_true", help="transcripts only: phrase-path variants and whole")
    parser.add_argument("--paths", default="app,cli", help="app, cli or both")
    parser.add_argument("--only", help="rows whose id matches this regex (with their whole conversation)")
    settings, llm_defaults, asr_defaults = Settings.from_env(os.environ), LlmOptions(), AsrOptions()
    parser.add_argument("--llm", default=settings.llm, help="language model key (see omni/models.py)")
    parser.add_argument("--temperature", type=float, default=llm_defaults.temperature)
    parser.add_argument("--no-arithmetic", action="store_true", help="no exact result for spoken arithmetic")
    parser.add_argument("--beam", type=int, default=asr_defaults.beam_size, help="Whisper's beam size")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    llm_options = replace(llm_defaults, temperature=args.temperature, exact_arithmetic=not args.no_arithmetic)
    asr_options = replace(asr_defaults, beam_size=args.beam)
    model = Cascade.load(replace(settings, llm=args.llm), asr_options, llm_options)
    model.warm_up()
    items = load_items(args.only)
    report: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "models": model.description,
        "asr_options": asdict(asr_options),
        "llm_options": {k: v for k, v in asdict(llm_options).items()},
        "realtime": not args.fast,
    }
    if args.asr:
        report |= asr_variants(model, items)
        report["seconds"] = round(time.perf_counter() - started)
        (args.out / "quality-asr.json").write_text(json.dumps(report, indent=2))
        print(
            f"\n{'WER %, ASR ms median (p90)':34} {'held-in':>8} {'held-out':>8} {'multi-phrase':>12} {'broken':>6}"
            f" {'ASR ms':>14} {'multi-phrase ms':>16}"
        )
        for name, s in report["variants"].items():
            broken = sum(s[p]["broken_joins"] for p in ("held-in", "held-out"))
            print(
                f"{name:34} {s['held-in']['wer']:8} {s['held-out']['wer']:8} {s['multi-phrase']['wer']:12} "
                f"{broken:6} {s['ms']['median']:6} ({s['ms']['p90']:5}) {s['multi_phrase_ms']['median']:7} "
                f"({s['multi_phrase_ms']['p90']:5})"
            )
        print(f"wrote {args.out / 'quality-asr.json'} in {report['seconds']} s")
        return

    results: list[TurnResult] = []
    conversation = Conversation(model)
    for dialog in dialogs(items):
        for path in args.paths.split(","):
            turns = run_app(conversation, dialog, not args.fast) if path == "app" else run_cli(model, dialog)
            for r in turns:
                results.append(r)
                mark = {None: " ", True: "✓", False: "✗"}[r.right]
                print(
                    f"{r.path} {r.id:10} {mark} {r.first_audio_ms:6.0f} ms | {r.transcript!r} -> {r.reply[:90]!r}",
                    flush=True,
                )
    report["paths"] = {
        path: {
            part: score([r for r in results if r.path == path and keep(r)])
            for part, keep in (
                ("held-in", lambda r: not r.held_out),
                ("held-out", lambda r: r.held_out),
                ("all", lambda r: True),
            )
        }
        for path in args.paths.split(",")
    }
    report["seconds"] = round(time.perf_counter() - started)
    report["turns"] = [asdict(r) for r in results]
    # numpy scalars (an int64 sample count, a float32 WER) are written as the numbers they are
    (args.out / "quality.json").write_text(json.dumps(report, indent=2, default=lambda x: x.item()))
    print_table(report)
    print(f"wrote {args.out / 'quality.json'}")


if __name__ == "__main__":
    main()
