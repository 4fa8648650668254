"""Token-level decoding of one spoken question, the original's batch-parallel "A1-T2" way.

The batch holds the same question several times, each row asking for a different task:
  row 0, A1->A2: answer in speech; only its audio streams are sampled;
  row 1, A1->T2: answer in text; only its text stream is sampled, and that text is fed to row 0 as well, so the
         text row leads and the audio row voices it (text-guided speech, faster than writing and speaking alone);
  row 2, A1->T1: transcribe the question (the model's ASR task), optional; dropped from the batch once done.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .model import AUDIO_STREAMS, MiniOmniConfig, MiniOmniGPT, sample

SPEECH_ROW, TEXT_ROW, TRANSCRIPT_ROW = 0, 1, 2


@dataclass
class GenerationSettings:
    temperature: float = 0.9  # the original's defaults; with top_k=1 decoding is greedy
    top_k: int | None = 1
    max_new_tokens: int = 2048  # steps; also bounded by block_size minus the prompt
    stream_stride: int = 4  # SNAC frames per audio chunk (4 = 341 ms, as the original streams)
    transcribe: bool = True  # run the ASR task alongside for the transcript (else the transcript is "")
    max_transcript_tokens: int = 96


@dataclass
class Step:
    """The tokens of one decoding step."""

    audio: list[int]  # one token per audio stream (stream j is j + 1 steps late, see snac_stream)
    text: int | None  # the next reply text token; None from the end of text (eot) on
    transcript: int | None  # the next transcript token; None once it ended, or when not transcribing


def prompt_tokens(config: MiniOmniConfig, n_features: int, transcribe: bool) -> Tensor:
    """(rows, 8, n_features + 3) ids: markers around n_features positions the Whisper features will fill."""
    c = config
    audio = [c.input_a] + [c.pad_a] * n_features + [c.eoa]
    text = [c.input_t] + [c.pad_t] * n_features + [c.eot]
    rows = [
        [audio + [c.answer_a]] * AUDIO_STREAMS + [text + [c.answer_t]],
        [audio + [c.pad_a]] * AUDIO_STREAMS + [text + [c.answer_t]],
        [audio + [c.pad_a]] * AUDIO_STREAMS + [text + [c.asr]],
    ]
    return torch.tensor(rows[: 3 if transcribe else 2])


@torch.inference_mode()
def generate(gpt: MiniOmniGPT, features: Tensor, settings: GenerationSettings) -> Iterator[Step]:
    """Yields one Step per position until max_new_tokens (or the context) runs out; the caller stops earlier.

    features: (n, whisper_adapter_dim) Whisper encoder output of the question, on the model's device.
    """
    c = gpt.config
    device = features.device
    prompt = prompt_tokens(c, features.size(0), settings.transcribe).to(device)
    rows, _, prompt_length = prompt.shape
    steps = min(settings.max_new_tokens, c.block_size - prompt_length)
    if steps < 1:
        raise ValueError(f"a prompt of {prompt_length} positions leaves no room in block_size {c.block_size}")
    # The rows differ only in their last position: run the shared prefix once, then the last position per row.
    cache = gpt.new_cache(1, prompt_length + steps)
    gpt(prompt[:1, :, :-1], cache, features.unsqueeze(0))
    cache.repeat_rows(rows)
    text_logits, audio_logits = gpt(prompt[:, :, -1:], cache)
    pad_audio = torch.full((AUDIO_STREAMS,), c.pad_a, device=device)
    text_ended, transcript_tokens = False, 0

    def draw(logits: Tensor) -> Tensor:
        return sample(logits, settings.temperature, settings.top_k)

    for step in range(steps):
        audio = draw(audio_logits[SPEECH_ROW])
        texts = draw(text_logits[TEXT_ROW:]).tolist()
        text = None if text_ended or texts[0] == c.eot else texts[0]
        transcript = None
        if rows > TRANSCRIPT_ROW:
            transcript_tokens += 1
            if texts[1] != c.eot and transcript_tokens <= settings.max_transcript_tokens:
                transcript = texts[1]
            else:
                rows = TRANSCRIPT_ROW
                cache.keep_rows(rows)
        yield Step(audio=audio.tolist(), text=text, transcript=transcript)
        if step == steps - 1:
            break
        # The end of text is fed once, then padding (as the original does).
        text_input = c.pad_t if text_ended else texts[0]
        text_ended = text_ended or texts[0] == c.eot
        text_column = torch.tensor([text_input], device=device)
        next_tokens = [torch.cat((audio, text_column)), torch.cat((pad_audio, text_column))]
        if rows > TRANSCRIPT_ROW:
            next_tokens.append(torch.cat((pad_audio, torch.tensor([texts[1]], device=device))))
        text_logits, audio_logits = gpt(torch.stack(next_tokens).unsqueeze(-1), cache)
