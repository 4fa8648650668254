"""Speech to text with faster-whisper (CTranslate2), on the CPU, offline.

Whisper normally encodes a 30 s window whatever the length of the speech, which costs ~0.55 s (tiny.en) to
~0.85 s (base) on two cores for a two-second question. CTranslate2 accepts shorter mel inputs, so a short turn
is encoded in a window of WINDOW_STEP_S steps instead: 10 s costs ~0.07 s (tiny.en) / ~0.2 s (base) with the same
words on our recordings. Turns that do not fit in 30 s take faster-whisper's ordinary long-form path.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from omni.audio import SAMPLE_RATE
from omni.memory import release_freed_memory
from omni.models import resolve
from omni.threads import OwnThread

FRAMES_PER_SECOND = 100  # Whisper's mel hop is 10 ms
MAX_WINDOW_S = 30  # Whisper's receptive field
WINDOW_STEP_S = 10  # shorter windows lose words in noise; 10 s matched 30 s on our noisy recordings
MAX_TOKENS = 224  # half of Whisper's text context: far more than 30 s of speech needs


@dataclass
class AsrOptions:
    language: str | None = "en"
    # Greedy. Beam 5 on bench.quality: WER 5.5 -> 4.9 % held in but 4.5 -> 10.3 % held out, +80 ms a turn.
    beam_size: int = 1
    # One thread. CTranslate2's OpenMP threads spin at their barriers, so next to one busy process (a browser) two
    # were slower than one: 284 vs 262 ms for a 3 s phrase, 481 vs 450 ms for 8.4 s of speech, 1027 vs 895 ms for
    # 17 s. Quiet, two gained nothing on a phrase (232 vs 231 ms) and ~11 % on long speech (416 vs 468 ms).
    threads: int = 1
    # Whisper invents words on noise ("Thank you.", "the", "Ch-ch-ch-ch..."). Its own rules, kept here:
    no_speech_threshold: float = 0.6  # unsure there is speech ...
    min_avg_logprob: float = -1.0  # ... and unsure of the words: silence
    gibberish_logprob: float = -2.0  # this unsure of the words (reversed speech scores -5, clear speech -0.1)
    compression_ratio_threshold: float = 2.4  # text this repetitive is a decoding loop, not speech

    def is_hallucination(self, text: str, no_speech_prob: float, avg_logprob: float) -> bool:
        data = text.encode()
        repetitive = len(data) / max(1, len(zlib.compress(data))) > self.compression_ratio_threshold
        silence = no_speech_prob > self.no_speech_threshold and avg_logprob < self.min_avg_logprob
        return repetitive or silence or avg_logprob < self.gibberish_logprob


class Transcriber:
    """Whisper through faster-whisper. `transcribe` takes mono float32 at 16 kHz and returns plain text."""

    def __init__(self, key: str, options: AsrOptions | None = None):
        from faster_whisper import WhisperModel

        self.options = options or AsrOptions()
        self.name = key
        self._thread = OwnThread("whisper")
        self.model = self._thread.call(
            WhisperModel,
            str(resolve(key)),
            device="cpu",
            compute_type="int8",
            cpu_threads=self.options.threads,
            local_files_only=True,
        )
        release_freed_memory()  # the float16 weights it just converted to int8
        if not self.model.model.is_multilingual:
            self.options.language = "en"
        tokenizer = self.model.hf_tokenizer
        prompt = ["<|startoftranscript|>"]
        if self.model.model.is_multilingual:
            prompt += [f"<|{self.options.language or 'en'}|>", "<|transcribe|>"]
        self._prompt = [tokenizer.token_to_id(t) for t in [*prompt, "<|notimestamps|>"]]

    def transcribe(self, audio: np.ndarray) -> str:
        return self._thread.call(self._transcribe, audio)

    def _transcribe(self, audio: np.ndarray) -> str:
        if audio.size < SAMPLE_RATE // 10:  # under 100 ms: nothing a person could have said
            return ""
        window_s = WINDOW_STEP_S * math.ceil((audio.size / SAMPLE_RATE + 0.5) / WINDOW_STEP_S)
        if window_s <= MAX_WINDOW_S:
            return self._transcribe_window(audio, window_s)
        return self._transcribe_long(audio)

    def _transcribe_window(self, audio: np.ndarray, window_s: int) -> str:
        import ctranslate2

        padded = np.zeros(window_s * SAMPLE_RATE, dtype=np.float32)
        padded[: audio.size] = audio
        mel = self.model.feature_extractor(padded)[:, : window_s * FRAMES_PER_SECOND]
        encoded = self.model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None])))
        result = self.model.model.generate(
            encoded,
            [self._prompt],
            max_length=MAX_TOKENS,
            beam_size=self.options.beam_size,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
        )[0]
        text = self.model.hf_tokenizer.decode(result.sequences_ids[0]).strip()
        return "" if self.options.is_hallucination(text, result.no_speech_prob, result.scores[0]) else text

    def _transcribe_long(self, audio: np.ndarray) -> str:
        segments, _ = self.model.transcribe(
            audio,
            language=self.options.language,
            beam_size=self.options.beam_size,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,  # our own VAD already cut the turn
        )
        words = [s.text.strip() for s in segments if not self.options.is_hallucination(s.text, s.no_speech_prob, s.avg_logprob)]
        return " ".join(w for w in words if w)
