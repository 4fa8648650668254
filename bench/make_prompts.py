"""Regenerate the spoken benchmark prompts and test questions with the project's piper voice.

Run once; the WAVs are kept in the repository. piper samples noise while it speaks, so every run gives slightly
different audio: fixed files keep the benchmark and the tests repeatable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from omni.audio import SAMPLE_RATE, resample, to_int16
from omni.tts import Speaker
from omni.wav import write_wav

PROMPTS = Path(__file__).parent / "prompts"
QUESTIONS = Path(__file__).parent.parent / "tests" / "data" / "questions"
TEST_QUESTIONS = {
    "capital": "What is the capital of France?",
    "spider": "How many legs does a spider have?",
    "moon": "Tell me three interesting facts about the moon.",
    "name_anna": "Hello, my name is Anna.",
    "what_name": "What is my name?",
    "green": "My favourite colour is green.",
    "yours": "What is yours?",
    "how_are_you": "How are you today?",
    "dragon": "Tell me a long story about a dragon.",
    "my_name": "My name is Anna.",  # without "Hello," and its pause: one turn whatever ends turns
}
TEXTS = {
    "hello": "Hello there!",
    "capital": "What is the capital of France?",
    "spider": "How many legs does a spider have?",
    "book": "Can you recommend a good book for a long train journey?",
    "name_cat": "My name is Anna. What would be a nice name for a cat?",
    "japan": (
        "I am planning a trip to Japan in the spring, and I would love to see the cherry blossoms. "
        "Which city should I visit first, and how many days should I stay there?"
    ),
}


def speak_all(speaker: Speaker, texts: dict[str, str], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["file\ttext"]
    for name, text in texts.items():
        pcm = np.concatenate(list(speaker.synthesize(text))).astype(np.float32) / 32768
        write_wav(folder / f"{name}.wav", to_int16(resample(pcm, speaker.sample_rate, SAMPLE_RATE)), SAMPLE_RATE)
        lines.append(f"{name}.wav\t{text}")
    (folder / "index.tsv").write_text("\n".join(lines) + "\n")


def main() -> None:
    speaker = Speaker.load()
    speak_all(speaker, TEXTS, PROMPTS)
    speak_all(speaker, TEST_QUESTIONS, QUESTIONS)


if __name__ == "__main__":
    main()
