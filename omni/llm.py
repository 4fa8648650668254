"""The chat language model: llama.cpp on a GGUF file, streaming text deltas, prompt prefix kept in the KV cache."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from omni.models import resolve
from omni.speech_model import Message

SYSTEM_PROMPT = (
    "You are a friendly voice assistant in a spoken conversation. Your words are read aloud, so answer in one to "
    "three short sentences of plain, natural speech: no lists, no markdown, no emoji, no code. "
    "Remember what the user tells you, such as their name, and use it when it helps."
)


@dataclass
class LlmOptions:
    system_prompt: str = field(default_factory=lambda: os.environ.get("OMNI_SYSTEM_PROMPT", SYSTEM_PROMPT))
    max_tokens: int = 160  # about three spoken sentences
    temperature: float = 0.3  # low: small models wander at higher temperatures
    top_p: float = 0.9
    n_ctx: int = 4096
    threads: int = min(2, os.cpu_count() or 1)


class ChatModel:
    """A llama.cpp chat model. `stream` yields reply text deltas for a list of messages."""

    def __init__(self, key: str, options: LlmOptions | None = None):
        from llama_cpp import Llama

        self.options = options or LlmOptions()
        self.name = key
        path = resolve(key)
        self.llm = Llama(
            model_path=str(path),
            n_ctx=self.options.n_ctx,
            n_threads=self.options.threads,
            n_threads_batch=self.options.threads,
            seed=0,
            verbose=False,
        )

    def prompt(self, history: Sequence[Message], user_text: str) -> list[dict[str, str]]:
        """System prompt + as much recent history as fits + the new user turn."""
        budget = (self.options.n_ctx - self.options.max_tokens) * 3  # ~3 characters per token, with a margin
        messages = [{"role": m["role"], "content": m["content"]} for m in history if m["role"] != "system"]
        messages.append({"role": "user", "content": user_text})
        while len(messages) > 1 and sum(len(m["content"]) for m in messages) > budget:
            messages = messages[2:]  # forget the oldest exchange first
        return [{"role": "system", "content": self.options.system_prompt}, *messages]

    def stream(self, history: Sequence[Message], user_text: str) -> Iterator[str]:
        """Text deltas of the reply. llama.cpp reuses the cached prefix (system prompt + earlier turns)."""
        for chunk in self.llm.create_chat_completion(
            self.prompt(history, user_text),
            stream=True,
            max_tokens=self.options.max_tokens,
            temperature=self.options.temperature,
            top_p=self.options.top_p,
        ):
            delta = chunk["choices"][0]["delta"].get("content")
            if delta:
                yield delta

    def warm_up(self) -> None:
        """Evaluate the system prompt once so the first real turn only pays for its own words."""
        for _ in self.stream([], "Hello"):
            break
