"""The chat language model: llama.cpp on a GGUF file, streaming text deltas, prompt prefix kept in the KV cache."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from omni.models import resolve
from omni.speech_model import Message
from omni.threads import OwnThread

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
    # Tokens evaluated per step. A turn adds a few dozen, but a long conversation's prompt is evaluated again when
    # its oldest exchange is dropped: at llama.cpp's default of 512 that touches a 306 MB compute buffer (76 MB at
    # 128), and 128 evaluates as fast (16, 64 and 200 tokens: within 10%).
    batch: int = 128
    threads: int = min(2, os.cpu_count() or 1)


def build_prompt(options: LlmOptions, history: Sequence[Message], user_text: str) -> list[dict[str, str]]:
    """System prompt + as much recent history as fits + the new user turn (for a local or a remote model)."""
    budget = (options.n_ctx - options.max_tokens) * 3  # ~3 characters per token, with a margin
    messages = [{"role": m["role"], "content": m["content"]} for m in history if m["role"] != "system"]
    messages.append({"role": "user", "content": user_text})
    while len(messages) > 1 and sum(len(m["content"]) for m in messages) > budget:
        messages = messages[2:]  # forget the oldest exchange first
    return [{"role": "system", "content": options.system_prompt}, *messages]


class ChatModel:
    """A llama.cpp chat model. `stream` yields reply text deltas for a list of messages."""

    def __init__(self, key: str, options: LlmOptions | None = None):
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.options = options or LlmOptions()
        self.name = key
        path = resolve(key)
        self._thread = OwnThread("llama")
        self.llm = self._thread.call(
            Llama,
            model_path=str(path),
            n_ctx=self.options.n_ctx,
            n_batch=self.options.batch,
            n_ubatch=self.options.batch,
            n_threads=self.options.threads,
            n_threads_batch=self.options.threads,
            # llama.cpp repacks most weights into a faster layout in memory of its own; a memory-mapped file
            # would keep the original pages resident as well (measured 1.87 -> 1.29 GB RSS for the 1.5B model).
            use_mmap=False,
            seed=0,
            verbose=False,
        )
        template = self.llm.metadata.get("tokenizer.chat_template")
        # The same template create_chat_completion uses, to build prompt prefixes for `prefill`.
        eos, bos = (self._token_text(t) for t in (self.llm.token_eos(), self.llm.token_bos()))
        self._formatter = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos) if template else None

    def _token_text(self, token: int) -> str:
        return self.llm._model.token_get_text(token) if token != -1 else ""

    def prompt(self, history: Sequence[Message], user_text: str) -> list[dict[str, str]]:
        return build_prompt(self.options, history, user_text)

    def prefill(self, history: Sequence[Message], user_text: str) -> int:
        """Evaluate the prompt for answering USER_TEXT into the KV cache, without answering yet.

        Called with what the user has said so far: if that was the whole turn, the reply starts at once; if they
        said more, the reply reuses the cached prefix up to where the words differ. Returns the tokens evaluated.
        """
        if self._formatter is None or not user_text:
            return 0
        formatted = self._formatter(messages=self.prompt(history, user_text))
        # Tokenized exactly as create_chat_completion does, so that its prefix match finds these tokens.
        tokens = self.llm.tokenize(formatted.prompt.encode(), add_bos=not formatted.added_special, special=True)
        cached = self.llm.longest_token_prefix(self.llm._input_ids.tolist(), tokens)
        self.llm.n_tokens = cached  # eval drops whatever the cache held after this
        self._thread.call(self.llm.eval, tokens[cached:])
        return len(tokens) - cached

    def stream(self, history: Sequence[Message], user_text: str) -> Iterator[str]:
        """Text deltas of the reply. llama.cpp reuses the cached prefix (system prompt + earlier turns)."""
        chunks = self.llm.create_chat_completion(
            self.prompt(history, user_text),
            stream=True,
            max_tokens=self.options.max_tokens,
            temperature=self.options.temperature,
            top_p=self.options.top_p,
        )  # a generator: nothing runs until it is stepped, on the model's thread
        try:
            while (chunk := self._thread.call(next, chunks, None)) is not None:
                delta = chunk["choices"][0]["delta"].get("content")
                if delta:
                    yield delta
        finally:
            self._thread.call(chunks.close)

    def warm_up(self) -> None:
        """Evaluate the system prompt once so the first real turn only pays for its own words."""
        for _ in self.stream([], "Hello"):
            break
