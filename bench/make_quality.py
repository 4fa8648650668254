"""Regenerate the spoken questions of the quality benchmark (bench/prompts/quality/, index.tsv).

    python -m bench.make_quality

Voices: the project's piper voice at two speeds, four espeak-ng voices, and real human recordings (statements,
followed by a spoken question about them). A "|" in a text is a pause for breath (PAUSE_S of silence) in the
middle of the turn: the pause detector marks a phrase break there, so the app transcribes the turn phrase by
phrase. The WAVs are kept in the repository (piper samples noise, so every run gives slightly different audio).
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omni.audio import SAMPLE_RATE, load_audio, resample, to_int16
from omni.wav import write_wav

ROOT = Path(__file__).parent.parent
FOLDER = Path(__file__).parent / "prompts" / "quality"
HUMAN = ROOT / "tests" / "data"  # SpeechBrain test recordings (Apache-2.0), see ../shared/audio/README.md
PAUSE_S = 0.45  # a breath: longer than the pause detector's 190 ms, far shorter than an end of turn
EDGE_S = 0.15  # silence kept before and after the words (the files stay small)
# name -> espeak-ng voice and words per minute: the three Whisper base understood best of ten tried on 16 of
# these questions (8-13 % WER; others 15-27 %, far worse than a person would understand them)
ESPEAK = {"espeak-us-f2": ("en-us+f2", 150), "espeak-us-m3": ("en-us+m3", 140), "espeak-rp": ("en-gb-x-rp", 150)}
# name -> piper's length_scale and sox effects on its voice (another pitch, a room)
PIPER = {"piper": (1.0, []), "piper-slow": (1.2, []), "piper-high": (1.0, ["pitch", "350"]),
         "piper-room": (1.0, ["reverb", "60", "50", "80"])}  # fmt: skip
VOICES = ["piper", "espeak-us-f2", "piper-slow", "piper-high", "espeak-us-m3", "piper", "piper-room", "espeak-rp"]

# (text, accepted answer as a regex, held out). Held out: never looked at while tuning; reported on their own.
FACTS: list[tuple[str, str, bool]] = [
    ("What is the capital of Australia?", r"canberra", False),
    ("What is the capital of Canada?", r"ottawa", False),
    ("What is the capital city of Japan?", r"tokyo", True),
    ("What is the capital of Italy?", r"rome", False),
    ("What is the capital of Spain?", r"madrid", False),
    ("What is the capital of Egypt?", r"cairo", True),
    ("How many legs does an insect have?", r"\bsix\b|\b6\b", False),
    ("What is the largest animal | in the world?", r"blue whale", False),
    ("What is the fastest land animal?", r"cheetah", True),
    ("What is a baby kangaroo called?", r"joey", False),
    ("What is a group of lions called?", r"pride", False),
    ("What do you call a baby dog?", r"pupp(y|ies)", True),
    ("What is the largest ocean on Earth called?", r"pacific", False),
    ("Who painted the Mona Lisa?", r"leonardo|da vinci", False),
    ("Who painted The Starry Night?", r"van gogh", True),
    ("Who wrote Romeo and Juliet?", r"shakespeare", False),
    ("Who wrote Pride and Prejudice?", r"austen", False),
    ("Who composed the Moonlight Sonata?", r"beethoven", True),
    ("How many centimeters are there | in one meter?", r"\b100\b|hundred", False),
    ("How many minutes are in an hour?", r"\b60\b|sixty", False),
    ("How many days are there in a leap year?", r"\b366\b|three hundred (and )?sixty[- ]six", True),
    ("How many grams are in a kilogram?", r"\b1,?000\b|thousand", False),
    ("At what temperature does water boil | in degrees Celsius?", r"\b100\b|hundred", False),
    ("What is the chemical symbol for gold?", r"\bau\b", True),
    ("Which planet is closest to the sun?", r"mercury", False),
    ("What is the largest planet in our solar system?", r"jupiter", False),
    ("Which planet is known as the Red Planet?", r"mars", True),
    ("What is the tallest mountain | in the world?", r"everest", False),
    ("How many continents are there?", r"\bseven\b|\b7\b", False),
    ("What language do people speak in Brazil?", r"portuguese", True),
    ("What is the longest river in Africa?", r"nile", False),
    ("Who was the first person | to walk on the moon?", r"armstrong", False),
    ("How many sides does a hexagon have?", r"\bsix\b|\b6\b", True),
    ("Which gas do plants take in | from the air?", r"carbon dioxide|co2|co₂", False),
    ("What is the famous clock tower in London called?", r"big ben", False),
    ("How many players does a football team | have on the field?", r"\beleven\b|\b11\b", True),
]
ARITHMETIC: list[tuple[str, str, bool]] = [
    ("What is 7.25 minus 3.8?", r"\b3\.45\b|three point four five", False),
    ("What is twelve times eight?", r"\b96\b|ninety[- ]six", False),
    ("What is 144 divided by 12?", r"\b12\b|twelve", True),
    ("What is 15 plus 27?", r"\b42\b|forty[- ]two", False),
    ("What is 3.5 plus 2.75?", r"\b6\.25\b|six point two five", False),
    ("What is 9.6 minus 4.85?", r"\b4\.75\b|four point seven five", True),
    ("What is one hundred minus thirty seven?", r"\b63\b|sixty[- ]three", False),
    ("What is 6.5 times 4?", r"\b26\b|twenty[- ]six", False),
    ("What is 0.1 plus 0.2?", r"\b0?\.3\b(?!\d)|zero point three|point three", True),
    ("What is 1,000 divided by 8?", r"\b125\b|one hundred (and )?twenty[- ]five", False),
]
# Conversations: every turn but the last sets something up; the last one's answer is checked.
DIALOGS: list[tuple[list[str], str, bool]] = [
    (["Hi, my name is Priya.", "What is my name?"], r"priya", False),
    (["My favourite colour is green.", "I also like the sea.", "What is my favourite colour?"], r"green", False),
    (["I am travelling to Lisbon next week.", "No, I said Porto.", "Which city am I travelling to?"], r"porto", False),
    (["My sister is called Emma.", "What is my sister called?"], r"emma", True),
    (["I have two cats | and one dog.", "How many pets do I have?"], r"\bthree\b|\b3\b", False),
    (["My name is Tom, | and I live in Dublin.", "Which city do I live in?"], r"dublin", True),
]
# A real recording (a statement), then a spoken question about it.
HUMAN_DIALOGS: list[tuple[str, str, str, bool]] = [
    ("spk1_snt5.wav", "Which day did I say is the best?", r"sunday", False),
    ("spk1_snt1.wav", "Which animal did I mention?", r"\bdog", False),
    ("example1.wav", "What kind of boat did I talk about?", r"canoe", False),
    ("spk1_snt2.wav", "Which number did I say to drop?", r"\btwo\b|\b2\b", True),
    ("example5.wav", "What did the frosty air pass through?", r"coat", False),
    ("spk1_snt3.wav", "What did I say the air is like?", r"pure", True),
    ("spk1_snt4.wav", "What runs down the middle?", r"stripe", False),
]


@dataclass
class Row:
    id: str
    dialog: str  # turns with the same dialog are one conversation, in order
    file: str
    text: str  # what is said ("|": a pause), the reference for the word error rate
    answer: str  # regex the reply must match (case-insensitive); empty: not checked
    voice: str
    held_out: bool
    kind: str  # fact, arithmetic, memory, human


def espeak(text: str, voice: str, wpm: int) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", f.name, text], check=True)
        return load_audio(f.name)


def sox(audio: np.ndarray, effects: list[str]) -> np.ndarray:
    if not effects:
        return audio
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "in.wav", Path(folder) / "out.wav"
        write_wav(source, to_int16(audio), SAMPLE_RATE)
        subprocess.run(["sox", "-V1", str(source), str(target), "gain", "-3", *effects], check=True)
        return load_audio(target)


class Voices:
    def __init__(self) -> None:
        from piper import SynthesisConfig

        from omni.tts import Speaker

        self.speaker = Speaker.load()
        self.config = {name: SynthesisConfig(length_scale=scale) for name, (scale, _) in PIPER.items()}

    def say(self, text: str, voice: str) -> np.ndarray:
        """TEXT spoken by VOICE at 16 kHz, with PAUSE_S of silence at each "|"."""
        gap = np.zeros(int(PAUSE_S * SAMPLE_RATE), np.float32)
        pieces: list[np.ndarray] = []
        for piece in (p.strip() for p in text.split("|")):
            if voice in PIPER:
                chunks = self.speaker.voice.synthesize(piece, syn_config=self.config[voice])
                pcm = np.concatenate([c.audio_float_array for c in chunks])
                audio = sox(resample(pcm.astype(np.float32), self.speaker.sample_rate, SAMPLE_RATE), PIPER[voice][1])
            else:
                audio = espeak(piece, *ESPEAK[voice])
            pieces += [trim(audio, 0.02), gap]
        return pad(np.concatenate(pieces[:-1]))


def trim(audio: np.ndarray, edge_s: float) -> np.ndarray:
    """Cut leading and trailing silence down to EDGE_S."""
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    if loud.size == 0:
        return audio
    edge = int(edge_s * SAMPLE_RATE)
    return audio[max(0, loud[0] - edge) : loud[-1] + edge]


def pad(audio: np.ndarray) -> np.ndarray:
    edge = np.zeros(int(EDGE_S * SAMPLE_RATE), np.float32)
    return np.concatenate([edge, audio, edge])


def rows() -> list[tuple[Row, str]]:
    """Every row, with the voice it is spoken in ("human:<file>" for a recording)."""
    out: list[tuple[Row, str]] = []
    voice = iter(VOICES * 100)
    for kind, items in (("fact", FACTS), ("arithmetic", ARITHMETIC)):
        for i, (text, answer, held) in enumerate(items):
            name = f"{kind[:5]}{i:02d}"
            v = next(voice)
            out.append((Row(name, name, f"{name}.wav", text, answer, v, held, kind), v))
    for d, (texts, answer, held) in enumerate(DIALOGS):
        v = next(voice)
        for t, text in enumerate(texts):
            name = f"mem{d}_{t}"
            last = t == len(texts) - 1
            out.append((Row(name, f"mem{d}", f"{name}.wav", text, answer if last else "", v, held, "memory"), v))
    for d, (recording, question, answer, held) in enumerate(HUMAN_DIALOGS):
        name, v = f"human{d}", next(voice)
        text = references()[recording]
        out.append((Row(f"{name}_0", name, f"{name}_0.wav", text, "", "human", held, "human"), f"human:{recording}"))
        out.append((Row(f"{name}_1", name, f"{name}_1.wav", question, answer, v, held, "human"), v))
    return out


def references() -> dict[str, str]:
    with open(HUMAN / "references.tsv", newline="") as f:
        return {row["file"]: row["text"] for row in csv.DictReader(f, delimiter="\t")}


def main() -> None:
    voices = Voices()
    FOLDER.mkdir(parents=True, exist_ok=True)
    table = rows()
    for row, voice in table:
        if voice.startswith("human:"):
            shutil.copyfile(HUMAN / voice.split(":", 1)[1], FOLDER / row.file)
            continue
        audio = voices.say(row.text, voice)
        write_wav(FOLDER / row.file, to_int16(audio), SAMPLE_RATE)
    fields = list(Row.__dataclass_fields__)
    with open(FOLDER / "index.tsv", "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(fields)
        for row, _ in table:
            writer.writerow([int(v) if isinstance(v, bool) else v for v in (getattr(row, k) for k in fields)])
    size = sum(p.stat().st_size for p in FOLDER.glob("*.wav"))
    print(f"{len(table)} files, {size / 1e6:.1f} MB in {FOLDER}")


if __name__ == "__main__":
    main()
