"""The mini-omni backend: one end-to-end model hears the question and speaks the answer (gpt-omni/mini-omni).

Whisper-small's encoder turns the question into features, the 0.5B model writes the answer's text and its SNAC
audio codes in parallel, and SNAC turns the codes into 24 kHz speech while the model is still writing.

Limits of the model itself: one turn only (it was trained on single question -> answer pairs, so `respond`
ignores the history), English answers only, no system prompt or persona. See docs/mini-omni.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path

import numpy as np
import torch
from snac import SNAC
from tokenizers import Tokenizer

from omni.audio import SAMPLE_RATE, prepare
from omni.speech_model import Audio, Finished, Message, NoSpeechError, ReplyChunk, TextDelta, Transcript, Turn

from .checkpoint import (
    CheckpointMismatchError,
    MissingCheckpointError,
    check_files,
    load_gpt,
    load_snac,
    load_tokenizer,
    load_whisper,
    resolve_checkpoint_dir,
)
from .generate import GenerationSettings, generate
from .model import MiniOmniGPT
from .snac_stream import DelayedFrames, SnacStream
from .whisper import WhisperEncoder

__all__ = ["CheckpointMismatchError", "GenerationSettings", "MiniOmni", "MissingCheckpointError", "load"]

MIN_SPEECH_SECONDS = 0.1
SILENCE_PEAK = 1e-3  # a peak below -60 dBFS holds no words


class TextStream:
    """Token ids -> text deltas; holds back a delta that ends inside an incomplete UTF-8 character."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.sent = ""

    @property
    def text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True).lstrip()

    def add(self, token: int) -> str:
        self.ids.append(token)
        return self.flush(final=False)

    def flush(self, final: bool = True) -> str:
        text = self.text if final else self.text.rstrip("\ufffd")
        if not text.startswith(self.sent):  # the tokenizer rewrote earlier text: send nothing more than before
            return ""
        delta, self.sent = text[len(self.sent) :], text
        return delta


class MiniOmni:
    """Implements omni.speech_model.SpeechModel."""

    name = "mini-omni"
    sample_rate = 24_000
    reads_turn_end = False  # its answer starts from the audio: there is no transcript to read first

    def __init__(
        self,
        gpt: MiniOmniGPT,
        whisper: WhisperEncoder,
        snac: SNAC,
        tokenizer: Tokenizer,
        settings: GenerationSettings | None = None,
    ) -> None:
        self.gpt, self.whisper, self.snac, self.tokenizer = gpt, whisper, snac, tokenizer
        self.settings = settings or GenerationSettings()

    @property
    def device(self) -> torch.device:
        return self.gpt.lm_head.weight.device

    def session(self) -> MiniOmni:
        return self  # it keeps nothing between turns

    def listen(
        self, audio: np.ndarray, sample_rate: int, history: Sequence[Message] = (), breaks: Sequence[int] = ()
    ) -> None:
        """Nothing to do ahead: mini-omni decodes the transcript together with the answer."""

    def respond(
        self, audio: np.ndarray, sample_rate: int, history: Sequence[Message] = (), breaks: Sequence[int] = ()
    ) -> Iterator[ReplyChunk]:
        """Answers one question. `history` is ignored: mini-omni is single-turn; so are `breaks` (it hears the
        whole turn at once).

        The transcript comes from the model's own ASR task, decoded in the same batch as the answer; the answer's
        text and audio are held back until the transcript is complete, because the transcript chunk comes first.
        Raises NoSpeechError for silence, or when the model transcribes nothing.
        """
        started = time.perf_counter()
        timings: dict[str, float] = {}

        def stamp(name: str) -> None:
            timings.setdefault(name, (time.perf_counter() - started) * 1000)

        speech = prepare(audio, sample_rate)
        if speech.size < MIN_SPEECH_SECONDS * SAMPLE_RATE or np.abs(speech).max() < SILENCE_PEAK:
            raise NoSpeechError("no speech in the audio")
        settings = self.settings
        features = self.whisper.encode(speech).to(self.device)
        stamp("encoder_ms")

        frames = DelayedFrames(n_codes=self.gpt.config.eoa)
        speech_out = SnacStream(self.snac, stride=settings.stream_stride)
        reply = TextStream(self.tokenizer)
        heard = TextStream(self.tokenizer)
        transcript: str | None = None
        held: list[ReplyChunk] = []  # answer chunks made before the transcript was complete

        def finish_transcript() -> Transcript:
            nonlocal transcript
            transcript = heard.text.strip()
            if settings.transcribe and not transcript:
                raise NoSpeechError("mini-omni heard no words")
            stamp("asr_ms")
            return Transcript(transcript)

        def answer_chunks(text_delta: str, pcm: np.ndarray | None) -> list[ReplyChunk]:
            chunks: list[ReplyChunk] = [TextDelta(text_delta)] if text_delta else []
            return chunks + ([Audio(pcm)] if pcm is not None and pcm.size else [])

        def release(chunks: list[ReplyChunk]) -> Iterator[ReplyChunk]:
            if transcript is None:
                held.extend(chunks)
                return
            for chunk in chunks:
                stamp("first_token_ms" if isinstance(chunk, TextDelta) else "first_audio_ms")
                yield chunk

        if not settings.transcribe:
            yield finish_transcript()
        eot = self.gpt.config.eot  # ids from eot up are special, not text
        with closing(generate(self.gpt, features, settings)) as steps:
            for step in steps:
                if transcript is None and step.transcript is None:
                    yield finish_transcript()
                    yield from release(held)
                    held.clear()
                elif transcript is None and step.transcript < eot:
                    heard.add(step.transcript)
                delta = reply.add(step.text) if step.text is not None and step.text < eot else ""
                frames.add(step.audio)
                yield from release(answer_chunks(delta, speech_out.pop(frames, final=frames.finished)))
                if frames.finished:
                    break
        if transcript is None:  # the context ran out before the transcript ended
            yield finish_transcript()
            yield from release(held)
        yield from release(answer_chunks(reply.flush(), speech_out.pop(frames, final=True)))
        stamp("total_ms")
        yield Finished(Turn(transcript=transcript, reply_text=reply.sent.strip(), timings=timings))


def load(checkpoint_dir: Path | str | None = None, device: str | None = None) -> MiniOmni:
    """Loads mini-omni from `checkpoint_dir` (default: $MINI_OMNI_CHECKPOINT, else <repo>/checkpoints/mini-omni/).

    device: "cuda" when available, else "cpu". Raises MissingCheckpointError (a FileNotFoundError) naming the
    absent files and the commands that fetch them, CheckpointMismatchError (a ValueError) for files that do not
    hold the released model.
    """
    checkpoint_dir = resolve_checkpoint_dir(checkpoint_dir)
    check_files(checkpoint_dir)
    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpt = load_gpt(checkpoint_dir, torch_device)
    whisper = load_whisper(checkpoint_dir, gpt.config, torch_device)
    snac = load_snac(checkpoint_dir, gpt.config, torch_device)
    return MiniOmni(gpt, whisper, snac, load_tokenizer(checkpoint_dir))
