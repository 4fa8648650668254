"""Make the turn-taking set in this folder: recordings where the true end of the turn is known.

    PYTHONPATH=. .venv/bin/python tests/data/turns/make.py      # needs espeak-ng; run once, the WAVs are kept

Three kinds (column `kind` of index.tsv):
- complete: one finished utterance (question or statement). The turn may end as soon as the speaker stops.
- pause: a sentence with a pause of 0.5-1.5 s inside it ("|" in the text; column `pauses`, seconds) that is not an
  end: at a clause boundary, mid-clause, after a trailing "um" or "and". Human recordings get room tone spliced in
  at a word boundary (found by Whisper's word timestamps, cut at the quietest 10 ms nearby); piper sentences are
  spoken whole and spliced the same way, so the words before the pause keep their unfinished melody; espeak-ng
  speaks the pause itself (SSML <break>).
- noise: no speech at all. Nothing may happen.
Plus `end_s` (the last speech sample, from the clean speech's energy), `source` and `held_out` (1: never used to
tune the end-of-turn policy; `bench.turn` reports them apart). The seven human recordings one folder up are
complete sentences and are listed by their relative path rather than copied. piper samples noise, so a rerun gives
slightly different audio (as in bench/make_prompts.py); espeak-ng is deterministic.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omni.audio import SAMPLE_RATE, load_audio, resample, to_int16
from omni.wav import write_wav

HERE = Path(__file__).parent
HUMAN = HERE.parent  # tests/data: SpeechBrain's test sentences (Apache-2.0), human speakers
MS = SAMPLE_RATE // 1000
HOP = 10 * MS  # energy frames
FLOOR_DB = 35.0  # a 10 ms frame within 35 dB of the loudest one is speech (as tests/test_vad.py finds bounds)
ROOM_DBFS = -70.0  # microphone floor under synthetic speech (the human recordings' own floor is -78..-88 dBFS)
LEAD_MS = TAIL_MS = 100  # silence stored around each recording; bench.turn pads both ends with more


@dataclass(frozen=True)
class Item:
    name: str
    kind: str  # complete | pause | noise
    text: str
    source: str  # human:<file> | espeak:<voice>:<words per minute> | piper:<length scale> | noise
    pause_ms: int = 0  # at the "|" in the text
    cut_s: float | None = None  # where "|" is in the trimmed speech, for a filler that Whisper does not place
    noise_snr_db: float | None = None  # pink noise under the whole recording, this far below the speech
    held_out: bool = False


ITEMS = [
    # complete, synthetic
    Item("es_train", "complete", "What time does the next train to Boston leave?", "espeak:en-us:175"),
    Item("es_timer", "complete", "Can you set a timer for ten minutes?", "espeak:en-gb:165"),
    Item("es_rain", "complete", "Is it going to rain tomorrow?", "espeak:en-gb-scotland:165"),
    Item("es_thanks", "complete", "Thanks, that's all for now.", "espeak:en-us+f3:170"),
    Item("es_austen", "complete", "Who wrote Pride and Prejudice?", "espeak:en-gb-x-rp:160", held_out=True),
    Item("es_lights", "complete", "Turn off the lights in the kitchen, please.", "espeak:en-us+m3:185", held_out=True),
    Item("pi_mountain", "complete", "What is the tallest mountain in the world?", "piper:1.0"),
    Item("pi_jokes", "complete", "Do you know any good jokes?", "piper:1.0", held_out=True),
    Item("es_weather_noisy", "complete", "What's the weather like in London?", "espeak:en-us:165", noise_snr_db=15),
    # pauses that are not ends, synthetic
    Item("es_um_table", "pause", "I'd like to book a table for, um, | four people tonight.", "espeak:en-us:180", 1200),
    Item(
        "es_and_beach",
        "pause",
        "We went down to the beach and | swam until the sun went down.",
        "espeak:en-gb:180",
        1000,
    ),
    Item(
        "es_because",
        "pause",
        "Because the meeting ran so late, | I missed the last bus home.",
        "espeak:en-us+f3:185",
        800,
    ),
    Item("es_tell_me", "pause", "Could you tell me | how far it is to the airport?", "espeak:en-029:175", 700),
    Item("es_thing_is", "pause", "The thing is | I don't really like coffee.", "espeak:en-us+m3:170", 600),
    Item(
        "es_hiking",
        "pause",
        "I was thinking that, uh, | maybe we could go hiking on Sunday.",
        "espeak:en-gb-x-rp:185",
        1500,
        held_out=True,
    ),
    Item(
        "es_if_rain",
        "pause",
        "If it stops raining | we can go for a walk in the park.",
        "espeak:en-us:185",
        1200,
        held_out=True,
    ),
    Item(
        "es_station_noisy",
        "pause",
        "Could you show me | the way to the station?",
        "espeak:en-gb:175",
        1000,
        noise_snr_db=12,
    ),
    Item("pi_unless", "pause", "Unless the weather gets a lot better, | we should stay at home.", "piper:1.0", 1200),
    Item("pi_and_bread", "pause", "I need to buy eggs, milk, and | some fresh bread.", "piper:1.1", 1000),
    Item("pi_so_um", "pause", "So, um, | what do you think about my plan?", "piper:1.0", 1000, cut_s=0.8),
    Item(
        "pi_reason",
        "pause",
        "The reason I am asking is | that my car broke down this morning.",
        "piper:1.0",
        900,
        held_out=True,
    ),
    # pauses that are not ends, human
    Item("hu_canoe", "pause", "The birch canoe slid on the | smooth planks.", "human:example1.wav", 1000),
    Item("hu_level", "pause", "At that high level, | the air is pure.", "human:spk1_snt3.wav", 1200),
    Item("hu_when", "pause", "Drop the two when | you add the figures.", "human:spk1_snt2.wav", 800),
    Item("hu_hurt", "pause", "The child almost hurt the | small dog.", "human:spk1_snt1.wav", 700),
    Item("hu_through", "pause", "The frosty air passed through | the coat.", "human:example5.wav", 600),
    Item("hu_week", "pause", "Sunday is the best part of | the week.", "human:spk1_snt5.wav", 1500, held_out=True),
    Item("hu_runs", "pause", "A thin stripe runs | down the middle.", "human:spk1_snt4.wav", 1000, held_out=True),
    Item(
        "hu_canoe_noisy",
        "pause",
        "The birch canoe slid on | the smooth planks.",
        "human:example1.wav",
        900,
        noise_snr_db=15,
    ),
    # no speech
    Item("no_knocks", "noise", "", "noise"),
    Item("no_fan_keys", "noise", "", "noise", held_out=True),
]
# Complete human sentences, used as they are (relative paths; the recordings one folder up).
HUMAN_COMPLETE = {
    "example1.wav": ("The birch canoe slid on the smooth planks.", False),
    "example5.wav": ("The frosty air passed through the coat.", True),
    "spk1_snt1.wav": ("The child almost hurt the small dog.", False),
    "spk1_snt2.wav": ("Drop the two when you add the figures.", False),
    "spk1_snt3.wav": ("At that high level the air is pure.", False),
    "spk1_snt4.wav": ("A thin stripe runs down the middle.", False),
    "spk1_snt5.wav": ("Sunday is the best part of the week.", True),
}


def db(x: np.ndarray) -> np.ndarray:
    """Level of each 10 ms frame (dB re full scale)."""
    n = len(x) // HOP
    return 10 * np.log10(np.mean(x[: n * HOP].reshape(n, HOP).astype(np.float64) ** 2, axis=1) + 1e-12)


def loud_frames(x: np.ndarray) -> np.ndarray:
    level = db(x)
    return level > level.max() - FLOOR_DB


def bounds(x: np.ndarray) -> tuple[int, int]:
    loud = np.flatnonzero(loud_frames(x))
    return int(loud[0] * HOP), int((loud[-1] + 1) * HOP)


def gaps(x: np.ndarray, min_ms: int) -> list[tuple[int, int]]:
    """Quiet stretches of at least MIN_MS between speech (sample ranges)."""
    loud = loud_frames(x)
    first, last = np.flatnonzero(loud)[[0, -1]]
    out, start = [], None
    for i in range(first, last + 1):
        if not loud[i] and start is None:
            start = i
        elif loud[i] and start is not None:
            if (i - start) * 10 >= min_ms:
                out.append((start * HOP, i * HOP))
            start = None
    return out


def noise(n: int, dbfs: float, seed: int, pink: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = rng.standard_normal(n)
    if pink:
        spectrum = np.fft.rfft(y)
        spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
        y = np.fft.irfft(spectrum, n)
    return (y / np.sqrt(np.mean(y**2)) * 10 ** (dbfs / 20)).astype(np.float32)


def fade(x: np.ndarray, ms: int = 10) -> np.ndarray:
    ramp = np.linspace(0, 1, ms * MS, dtype=np.float32)
    x = x.copy()
    x[: len(ramp)] *= ramp
    x[-len(ramp) :] *= ramp[::-1]
    return x


def espeak(text: str, voice: str, wpm: int) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(
            ["espeak-ng", "-m", "-v", voice, "-s", str(wpm), "-w", f.name, f"<speak>{text}</speak>"], check=True
        )
        return load_audio(f.name)


def word_start(model, x: np.ndarray, text: str) -> int:
    """Where Whisper hears the word after the "|" in TEXT start."""
    norm = lambda w: w.strip(" ,.?!").lower()
    after = [norm(w) for w in text.split("|")[1].split()]
    segments, _ = model.transcribe(x, language="en", word_timestamps=True, beam_size=1)
    starts = [int(w.start * SAMPLE_RATE) for s in segments for w in s.words if norm(w.word) == after[0]]
    return starts[-after.count(after[0])]  # counted from the end: a trimmed first word is sometimes not heard


def piper(speaker, text: str, length_scale: float) -> np.ndarray:
    from piper import SynthesisConfig

    # noise_w 0: the same words always get the same durations (cut_s stays right)
    config = SynthesisConfig(length_scale=length_scale, noise_w_scale=0.0)
    pcm = np.concatenate([c.audio_int16_array for c in speaker.voice.synthesize(text, config)]).astype(np.float32)
    speech = resample(pcm / 32768, speaker.sample_rate)
    a, b = bounds(speech)
    return speech[a:b]


def splice(x: np.ndarray, cut: int, pause_ms: int, room_dbfs: float, seed: int) -> np.ndarray:
    """Insert PAUSE_MS of room tone at CUT, moved to the quietest 10 ms within 80 ms of it."""
    level = db(x)
    lo, hi = max(0, cut // HOP - 8), min(len(level), cut // HOP + 9)
    cut = int((lo + np.argmin(level[lo:hi])) * HOP + HOP // 2)
    return np.concatenate([fade(x[:cut], 5), noise(pause_ms * MS, room_dbfs, seed), fade(x[cut:], 5)])


def main() -> None:
    from faster_whisper import WhisperModel

    from omni.models import resolve
    from omni.tts import Speaker

    whisper = WhisperModel(str(resolve("whisper-base")), device="cpu", compute_type="int8")
    speaker = Speaker.load()
    rows = [("file", "kind", "text", "end_s", "pauses", "source", "held_out")]
    for name, (text, held_out) in HUMAN_COMPLETE.items():
        x = load_audio(HUMAN / name)
        rows.append(
            (f"../{name}", "complete", text, f"{bounds(x)[1] / SAMPLE_RATE:.3f}", "", "human", str(int(held_out)))
        )
    for seed, item in enumerate(ITEMS):
        kind, _, rest = item.source.partition(":")
        said = item.text.replace(" | ", " ")
        room = ROOM_DBFS
        if kind == "noise":
            speech = np.zeros(3 * SAMPLE_RATE // 2, np.float32)
        elif kind == "espeak":
            voice, wpm = rest.split(":")
            speech = espeak(item.text.replace("|", f'<break time="{item.pause_ms}ms"/>'), voice, int(wpm))
        elif kind == "piper":
            speech = piper(speaker, said, float(rest))
        else:
            speech = load_audio(HUMAN / rest)
            room = float(np.sort(db(speech))[:5].mean())  # the recording's own floor
        if kind in ("espeak", "piper"):
            speech = speech / np.abs(speech).max() * 10 ** (-6 / 20)  # peak -6 dBFS, like a close microphone
        if kind != "noise":
            a, b = bounds(speech)
            speech = speech[a:b]
            if "|" in item.text and kind != "espeak":
                cut = word_start(whisper, speech, item.text) if item.cut_s is None else int(item.cut_s * SAMPLE_RATE)
                speech = splice(speech, cut, item.pause_ms, room, seed)
        lead, tail = LEAD_MS * MS, TAIL_MS * MS
        if item.noise_snr_db is not None:
            tail = 600 * MS  # the noise goes on; bench.turn continues it with white noise of the same level
        x = np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(tail, np.float32)])
        x += noise(len(x), room, 1000 + seed)
        if item.noise_snr_db is not None:
            speech_db = 10 * np.log10(np.mean(speech[np.repeat(loud_frames(speech), HOP)] ** 2))
            x += noise(len(x), speech_db - item.noise_snr_db, 2000 + seed, pink=True)
        t = np.arange(len(x)) / SAMPLE_RATE
        if item.name == "no_knocks":  # pink noise and three knocks on a table
            x = noise(len(x), -40, seed, pink=True)
            knock = 0.3 * np.sin(2 * np.pi * 180 * t[: 60 * MS]) * np.exp(-t[: 60 * MS] / 0.012)
            for at in (0.3, 0.8, 1.2):
                x[int(at * SAMPLE_RATE) :][: len(knock)] += knock
        elif item.name == "no_fan_keys":  # a fan's hum and typing
            x = noise(len(x), -45, seed) + 0.01 * np.sin(2 * np.pi * 120 * t) + 0.005 * np.sin(2 * np.pi * 240 * t)
            click = noise(8 * MS, -22, seed) * np.exp(-np.arange(8 * MS) / (2 * MS))
            for at in np.random.default_rng(seed).uniform(0.1, 1.4, 10):
                x[int(at * SAMPLE_RATE) :][: len(click)] += click
        end = pauses = ""
        if kind != "noise":
            end = f"{(lead + bounds(speech)[1]) / SAMPLE_RATE:.3f}"
        if item.kind == "pause":
            found = [(lead + s, lead + e) for s, e in gaps(speech, min_ms=item.pause_ms - 200)]
            assert len(found) == 1, f"{item.name}: pauses {found}"
            pauses = ";".join(f"{s / SAMPLE_RATE:.3f}-{e / SAMPLE_RATE:.3f}" for s, e in found)
        write_wav(HERE / f"{item.name}.wav", to_int16(x.astype(np.float32)), SAMPLE_RATE)
        held_out = str(int(item.held_out))
        rows.append((f"{item.name}.wav", item.kind, item.text, end, pauses, item.source, held_out))
        print(*rows[-1], sep="\t")
    (HERE / "index.tsv").write_text("".join("\t".join(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
