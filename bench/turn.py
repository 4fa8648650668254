"""Turn-taking benchmark: does the pause detector end the turn when the speaker has finished, and only then?

    python -m bench.turn            # smart-turn on the audio, next to the old 700 ms rule
    python -m bench.turn --lm       # plus the language model on Whisper's transcript (loads Whisper base, Qwen 1.5B)
    python -m bench.turn --lm --chunk-s 0.1   # what chunks shorter than the browser's would give

Every recording of tests/data/turns (index.tsv; see make.py there) goes through `utils.vad.PauseDetector` in 0.5 s
chunks, as the browser sends them, with the real Silero VAD and the real smart-turn model, four times: with the
chunk boundaries 0, 125, 250 and 375 ms later (where a chunk boundary falls decides much of the wait). Per run:
- early cut: the turn ended before the speaker finished (in a pause that was not an end);
- late: a finished utterance took more than `LATE_MS` to end;
- right: otherwise. Noise-only recordings are right when nothing happens at all.
"Last speech -> end of turn" runs from the last speech sample (index.tsv, by energy) to the moment the detector
says so: the end of the chunk that held the deciding frame, plus the time that `feed` call took (smart-turn runs
inside it). Tuned and held-out recordings are reported apart. JSON goes to bench/results/turn.json.

With --lm, the text's probability for a pause becomes known `READ_S` after the chunk in which the speech stopped
arrived, from the first chunk after that: that is when the app, which transcribes and evaluates the words in the
background as each chunk arrives (listening ahead, speculation), would have it (Whisper base takes ~0.25 s for the
last phrase and Qwen 1.5B 0.15-0.3 s for the new words; with 0.5 s chunks, one chunk later). "... read at once" is a
reader that takes no time: what the chunks and the policy's silences alone cost. Its answers depend on the system
prompt in omni/llm.py.
"""

from __future__ import annotations

import argparse
import copy
import csv
import itertools
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from omni.audio import SAMPLE_RATE, load_audio
from omni.conversation import Conversation
from omni.speech_model import SpeechModel, WordsEnd
from utils.turn import SmartTurn, TurnOptions
from utils.vad import PauseDetector, PauseDetectorOptions, SileroVad, VadEvent

ROOT = Path(__file__).resolve().parent.parent
TURNS = ROOT / "tests" / "data" / "turns"
RESULTS = ROOT / "bench" / "results"
CHUNK = SAMPLE_RATE // 2  # the browser's 0.5 s chunks
# The app's reading of the words at a pause: Whisper on the last phrase and the model, with a browser on the machine.
READ_S = 0.3
LEAD_S, TAIL_S = 0.3, 4.5  # room tone added around each recording: the longest wait (3 s) and its chunk fit
LATE_MS = 1000.0


def phases(chunk: int = CHUNK) -> tuple[int, ...]:
    """Where the chunk boundaries fall: the first chunk 0, 1/4, 1/2 and 3/4 of a CHUNK long (0: a whole one)."""
    return tuple(chunk * quarter // 4 for quarter in range(4))


PHASES = phases()


@dataclass
class Recording:
    name: str
    kind: str  # complete | pause | noise
    text: str
    audio: np.ndarray  # padded with LEAD_S / TAIL_S of room tone
    end: int | None  # last speech sample (in `audio`)
    pauses: list[tuple[int, int]]  # pauses that are not ends (samples in `audio`)
    held_out: bool


def room_tone(recording: np.ndarray, seconds: float, seed: int) -> np.ndarray:
    """White noise at the RECORDING's floor (its 10th-percentile 10 ms level): the microphone keeps hearing the room."""
    hop = SAMPLE_RATE // 100
    frames = recording[: len(recording) // hop * hop].astype(np.float64).reshape(-1, hop)
    level = float(np.sqrt(np.percentile(np.mean(frames**2, axis=1), 10)))
    return (np.random.default_rng(seed).standard_normal(round(seconds * SAMPLE_RATE)) * level).astype(np.float32)


def load_set(folder: Path = TURNS) -> list[Recording]:
    """The turn-taking set, each recording padded with room tone (lead LEAD_S, tail TAIL_S)."""
    out = []
    with open(folder / "index.tsv", newline="") as f:
        for seed, row in enumerate(csv.DictReader(f, delimiter="\t")):
            x = load_audio(folder / row["file"])
            lead = round(LEAD_S * SAMPLE_RATE)
            x = np.concatenate([room_tone(x, LEAD_S, seed), x, room_tone(x, TAIL_S, 1000 + seed)])
            pauses = [
                tuple(lead + round(float(t) * SAMPLE_RATE) for t in p.split("-")) for p in row["pauses"].split(";") if p
            ]
            end = lead + round(float(row["end_s"]) * SAMPLE_RATE) if row["end_s"] else None
            out.append(
                Recording(Path(row["file"]).stem, row["kind"], row["text"], x, end, pauses, row["held_out"] == "1")
            )
    return out


@dataclass
class Outcome:
    name: str
    kind: str
    held_out: bool
    phase_ms: float  # the first chunk's length (0: a whole chunk): where the chunk boundaries fall
    verdict: str  # early | right | late | noise-ended
    latency_ms: float | None  # last speech -> end of turn declared (None: no end, or an early one)
    heard: float | None  # smart-turn at the last pause
    read: float | None  # the text's P(end) when the turn ended
    asks: bool | None  # ... and whether the words asked something
    events: list[str] = field(default_factory=list)


def read_in_time(silence_start: int, bounds: Sequence[int], chunk_end: int, read_s: float) -> bool:
    """Are the words up to a silence that began at SILENCE_START read when the chunk ending at CHUNK_END arrives?
    Their reading starts as the chunk in which the silence began arrives (chunks end at BOUNDS) and takes READ_S."""
    shown = next(b for b in bounds[1:] if b > silence_start)
    return shown + read_s * SAMPLE_RATE <= chunk_end


class TextEnd:
    """The language model's reading of the words as the app would have it: from Whisper's transcript of the turn up
    to a silence, ready READ_S after the chunk that shows the silence arrived, and used from the first chunk after
    that (see the module docstring). READ_S 0: a reader that takes no time, the floor of the chunks themselves."""

    def __init__(self, read_s: float = READ_S) -> None:
        from omni.asr import Transcriber
        from omni.llm import ChatModel

        self.read_s = read_s
        self.asr = Transcriber("whisper-base")
        self.chat = ChatModel("qwen2.5-1.5b")
        self.cache: dict[tuple[str, int], tuple[str, WordsEnd]] = {}
        self.spent_s = 0.0  # in the app this work is done in the background: not counted as the detector's time

    def reading(self, rec: Recording, start: int, end: int) -> WordsEnd:
        if (rec.name, end) not in self.cache:
            t0 = time.perf_counter()
            # The words as the app hands them over: from 0.3 s before speech_start to 0.2 s after the pause began.
            words = self.asr.transcribe(
                np.array(rec.audio[max(0, start - SAMPLE_RATE * 3 // 10) : end + SAMPLE_RATE // 5])
            )
            read = [*self.chat.read_steps([], words)][-1] if words else WordsEnd(0.0)
            self.cache[rec.name, end] = words, read
            self.spent_s += time.perf_counter() - t0
        return self.cache[rec.name, end][1]

    def for_detector(self, rec: Recording, detector: PauseDetector, bounds: list[int], chunk_end: Callable[[], int]):
        def text_end(silence_start: int) -> WordsEnd | None:
            if not read_in_time(silence_start, bounds, chunk_end(), self.read_s):
                return None
            return self.reading(rec, detector.speech_start, silence_start)

        return text_end


def run(
    rec: Recording,
    options: PauseDetectorOptions,
    vad: SileroVad,
    smart_turn: SmartTurn | None,
    text: TextEnd | None = None,
    phase: int = 0,
    chunk: int = CHUNK,
) -> Outcome:
    """Feed REC in CHUNKs (the first one PHASE samples long, if not 0) until the turn ends."""
    detector = PauseDetector(options, vad.fork(), smart_turn=smart_turn)
    bounds = [0, *range(phase or chunk, len(rec.audio), chunk), len(rec.audio)]
    position = {"chunk_end": 0}
    if text is not None:
        detector.text_end = text.for_detector(rec, detector, bounds, lambda: position["chunk_end"])
    events, end_at = [], 0.0
    for a, b in itertools.pairwise(bounds):
        position["chunk_end"] = b
        t0, background = time.perf_counter(), text.spent_s if text else 0.0
        new = detector.feed(rec.audio[a:b], SAMPLE_RATE)
        took = time.perf_counter() - t0 - ((text.spent_s if text else 0.0) - background)
        events += new
        if any(e.kind == "end_of_turn" for e in new):
            end_at = b + took * SAMPLE_RATE  # the chunk arrived with its last sample; then feed() ran
            break
    return classify(rec, events, end_at, phase, detector.verdict)


def classify(
    rec: Recording, events: list[VadEvent], end_at: float, phase: int, heard_read: tuple[float | None, WordsEnd | None]
) -> Outcome:
    """The outcome of a run whose events were EVENTS, the end of turn declared at stream position END_AT."""
    end = next((e for e in events if e.kind == "end_of_turn"), None)
    latency = None
    if rec.end is None:
        verdict = "noise-ended" if end else "right"
    elif end is None:
        verdict = "late"
    elif end.sample < rec.end - SAMPLE_RATE // 5:  # ended in a pause: the speaker had not finished
        verdict = "early"
    else:
        latency = 1000 * (end_at - rec.end) / SAMPLE_RATE
        verdict = "late" if latency > LATE_MS else "right"
    labels = [f"{e.kind}@{e.sample / SAMPLE_RATE:.2f}" for e in events]
    heard, read = heard_read
    return Outcome(
        rec.name, rec.kind, rec.held_out, 1000 * phase / SAMPLE_RATE, verdict, latency, heard,
        read and read.probability, read and read.asks, labels,
    )


def run_app(rec: Recording, model: SpeechModel, vad: SileroVad, smart_turn: SmartTurn, phase: int = 0) -> Outcome:
    """Feed REC to the app's own path at real-time pace: a `Conversation` on the real cascade, listening ahead and
    speculating, whose readings of the words count from the moment they are ready (not a chunk later by rule)."""
    talk = Conversation(model, PauseDetectorOptions(), vad=vad.fork(), smart_turn=smart_turn)
    bounds = [0, *range(phase or CHUNK, len(rec.audio), CHUNK), len(rec.audio)]
    events, end_at, start = [], 0.0, time.perf_counter()
    try:
        for a, b in itertools.pairwise(bounds):
            time.sleep(max(0.0, start + b / SAMPLE_RATE - time.perf_counter()))  # the chunk's last sample is spoken
            events += talk.hear(rec.audio[a:b], SAMPLE_RATE)
            if talk.turn_ended:
                end_at = (time.perf_counter() - start) * SAMPLE_RATE
                break
        return classify(rec, events, end_at, phase, talk.ended.verdict if talk.ended else talk.detector.verdict)
    finally:
        talk.close()
        time.sleep(0.3)  # the cancelled answer stops within a step; the next recording starts on a quiet model


def summary(outcomes: list[Outcome]) -> dict:
    latencies = sorted(o.latency_ms for o in outcomes if o.latency_ms is not None)
    count = {v: sum(o.verdict == v for o in outcomes) for v in ("early", "right", "late", "noise-ended")}
    return {
        "runs": len(outcomes),
        **count,
        "median_ms": statistics.median(latencies) if latencies else None,
        "p90_ms": float(np.percentile(latencies, 90)) if latencies else None,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lm", action="store_true", help="also read the words (Whisper base + Qwen2.5 1.5B)")
    parser.add_argument(
        "--app", action="store_true", help="also the app's own path in real time (Conversation on the cascade)"
    )
    parser.add_argument(
        "--chunk-s", type=float, default=CHUNK / SAMPLE_RATE, help="chunk length (the app's is 0.5 s; not with --app)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "turn.json")
    args = parser.parse_args()
    chunk = round(args.chunk_s * SAMPLE_RATE)
    if args.app and chunk != CHUNK:
        parser.error("--app hears the browser's 0.5 s chunks")

    recordings = load_set()
    vad, smart_turn = SileroVad().load(), SmartTurn.shared()
    policies: dict[str, tuple[PauseDetectorOptions, TextEnd | None]] = {
        "700 ms rule": (PauseDetectorOptions(turn=None), None),
        "smart-turn": (PauseDetectorOptions(turn=TurnOptions(ear_alone_ends_fast=True)), None),
        "smart-turn, never fast alone": (PauseDetectorOptions(), None),
    }
    if args.lm:
        policies["smart-turn + LM"] = (PauseDetectorOptions(), text := TextEnd())
        # A reader that took no time: what the chunks alone cost.
        policies["... read at once"] = (PauseDetectorOptions(), at_once := copy.copy(text))
        at_once.read_s = 0.0
    results = {
        name: [run(rec, options, vad, smart_turn, text, phase, chunk) for rec in recordings for phase in phases(chunk)]
        for name, (options, text) in policies.items()
    }
    if args.app:
        from omni import Settings
        from omni.cascade import Cascade

        model = Cascade.load(Settings.from_env(os.environ))
        model.warm_up()
        # Real time: ~8 s per recording and phase. Two phases: a speech end early and late in a chunk.
        results["the app, real time"] = [
            run_app(rec, model, vad, smart_turn, phase) for rec in recordings for phase in PHASES[::2]
        ]
    t0 = time.perf_counter()
    for rec in recordings[:10]:
        smart_turn(rec.audio[: 3 * SAMPLE_RATE])
    smart_turn_ms = 100 * (time.perf_counter() - t0)

    report = {
        "chunk_s": chunk / SAMPLE_RATE,
        "read_s": READ_S,
        "phases_ms": [1000 * p / SAMPLE_RATE for p in phases(chunk)],
        "late_ms": LATE_MS,
        "smart_turn_ms_per_call": round(smart_turn_ms, 1),
        "policies": {},
    }
    columns = ("early cuts", "right", "late", "noise ended", "median ms", "p90 ms")
    widths = [max(len(c), 6) for c in columns]
    header = f"{'':18s} " + " ".join(f"{c:>{w}}" for c, w in zip(columns, widths))
    for part, held_out in (("tuned", False), ("held out", True)):
        n = sum(r.held_out == held_out for r in recordings)
        print(f"\n{part}: {n} recordings x {len(PHASES)} chunk phases = {n * len(PHASES)} runs\n{header}")
        for name, outcomes in results.items():
            s = summary([o for o in outcomes if o.held_out == held_out])
            report["policies"].setdefault(name, {})[part] = s
            cells = (s["early"], s["right"], s["late"], s["noise-ended"], _ms(s["median_ms"]), _ms(s["p90_ms"]))
            print(f"{name:18s} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    print(
        f"\nlast speech -> end of turn over the runs that were not cut early; late: > {LATE_MS:.0f} ms; "
        f"smart-turn {smart_turn_ms:.0f} ms per call now"
    )
    for name, outcomes in results.items():
        report["policies"][name]["runs"] = [asdict(o) for o in outcomes]
    if args.lm:
        text = policies["smart-turn + LM"][1]
        report["transcripts"] = {
            f"{n}@{s / SAMPLE_RATE:.2f}": {"words": words, "end": read.probability, "asks": read.asks}
            for (n, s), (words, read) in text.cache.items()
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
