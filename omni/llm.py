"""The chat language model: llama.cpp on a GGUF file, streaming text deltas, prompt prefix kept in the KV cache."""

from __future__ import annotations

import codecs
import ctypes
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import llama_cpp

from omni.arithmetic import with_note
from omni.cpu import others_busy
from omni.models import ModelError, resolve
from omni.speech_model import Message, WordsEnd
from omni.threads import OwnThread

SYSTEM_PROMPT = (
    "You are a friendly voice assistant in a spoken conversation. You hear the user through speech recognition, "
    "which sometimes gets a word wrong: if a word seems out of place, go by what the user most likely said, a word "
    "that sounds like it. Your words are read aloud, so answer in one to three short sentences of plain, natural "
    "speech: no lists, no markdown, no emoji, no code. Answer questions directly, the answer first. Remember what "
    "the user tells you, such as their name or their plans, and use it when it helps; when they correct something "
    "they said, the correction counts. A line from the calculator after the user's words is exact: give that result."
)


@dataclass
class LlmOptions:
    system_prompt: str = field(default_factory=lambda: os.environ.get("OMNI_SYSTEM_PROMPT", SYSTEM_PROMPT))
    max_tokens: int = 160  # about three spoken sentences
    # Greedy: on bench.quality as right as 0.3 (50/59 both), the same answer every time, and a question that 0.3
    # answered wrong was answered right greedily (issue 14).
    temperature: float = 0.0
    top_p: float = 0.9
    n_ctx: int = 4096
    # Tokens evaluated per step. A turn adds a few dozen, but a long conversation's prompt is evaluated again when
    # its oldest exchange is dropped: at llama.cpp's default of 512 that touches a 306 MB compute buffer (76 MB at
    # 128), and 128 evaluates as fast (16, 64 and 200 tokens: within 10%).
    batch: int = 128
    # Threads, chosen at every step from what other processes keep busy (omni/cpu.py), since with every core in use
    # llama.cpp's threads stall each other. Measured here (1.5B model; a 6-token template tail, then 30 tokens) on
    # 2 threads against 1, next to a process busy part of the time, by `others_busy()`:
    #   0:    tail 122 vs 213 ms, writing 22.6 vs 20.3 tokens/s (bench: 29 vs 21)
    #   0.18: tail 161 vs 210 ms, writing 20.2 vs 20.8
    #   0.26: tail 167 vs 212 ms, writing 18.3 vs 20.6
    #   0.48: tail 199 vs 211 ms, writing 16.4 vs 20.8
    #   0.96: tail 230 vs 211 ms, writing 17.3 vs 21.0
    # So a prompt (compute-bound) is evaluated on all threads until `busy_elsewhere`, and the reply (one token at a
    # time, bound by memory) is written on all only below `quiet_elsewhere`: a browser on the machine keeps 0.2-0.4
    # busy, and one writing thread holds its speed whatever else runs. OMNI_LLM_ADAPT_THREADS=0: `threads` always.
    threads: int = min(2, os.cpu_count() or 1)
    busy_elsewhere: float = 0.6
    quiet_elsewhere: float = 0.1
    adapt_threads: bool = field(default_factory=lambda: os.environ.get("OMNI_LLM_ADAPT_THREADS", "1") != "0")
    exact_arithmetic: bool = True  # a spoken calculation's exact result is noted in the prompt (omni/arithmetic.py)


def build_prompt(options: LlmOptions, history: Sequence[Message], user_text: str) -> list[dict[str, str]]:
    """System prompt + as much recent history as fits + the new user turn (for a local or a remote model)."""
    budget = (options.n_ctx - options.max_tokens) * 3  # ~3 characters per token, with a margin
    messages = [{"role": m["role"], "content": m["content"]} for m in history if m["role"] != "system"]
    messages.append({"role": "user", "content": user_text})
    if options.exact_arithmetic:  # every user turn alike, so that earlier turns stay the cached prompt prefix
        messages = [{**m, "content": with_note(m["content"])} if m["role"] == "user" else m for m in messages]
    while len(messages) > 1 and sum(len(m["content"]) for m in messages) > budget:
        messages = messages[2:]  # forget the oldest exchange first
    return [{"role": "system", "content": options.system_prompt}, *messages]


EVAL_STEP = 16  # prompt tokens evaluated per step (~0.3 s on 2 cores): another conversation waits at most that


@dataclass(eq=False)
class ChatSlot:
    """One conversation's prompt cache. While another conversation uses the model, its KV cache waits here.

    Saving llama.cpp's sequence state costs ~6 ms and restoring it ~1.4 ms for 271 tokens (7.8 MB, 1.5B model);
    evaluating those tokens again would take ~5 s on 2 cores."""

    tokens: list[int] = field(default_factory=list)  # what the saved cache holds
    kv: bytes | None = None  # llama.cpp's sequence state for `tokens` (None: in the model now, or new)


class ChatModel:
    """A llama.cpp chat model shared by several conversations, each with its own `ChatSlot`.

    `stream` and `prefill_steps` are generators in which every step is one short piece of work (up to EVAL_STEP
    prompt tokens, or one new token), so that a caller can let another conversation use the model in between.
    """

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
        if not template:
            raise ModelError(f"{path} has no chat template: it is not a chat model")
        eos, bos = (self._token_text(t) for t in (self.llm.token_eos(), self.llm.token_bos()))
        self._formatter = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm._model.model)
        self._loaded: ChatSlot | None = None  # whose tokens llama.cpp's cache holds now
        self._logits_of: tuple[ChatSlot, int] | None = None  # the slot and length whose last logits are current
        self.threads = (self.options.threads, self.options.threads)  # (writing, evaluating a prompt): _pick_threads
        self._beside = 0  # blocks of `beside_other_work` open now
        self._fresh = ChatSlot()  # the system prompt alone, where every new conversation starts (after warm_up)
        self.default_slot = ChatSlot()

    def _token_text(self, token: int) -> str:
        return self.llm._model.token_get_text(token) if token != -1 else ""

    def prompt(self, history: Sequence[Message], user_text: str) -> list[dict[str, str]]:
        return build_prompt(self.options, history, user_text)

    def _tokens(self, history: Sequence[Message], user_text: str) -> list[int]:
        formatted = self._formatter(messages=self.prompt(history, user_text))
        return self.llm.tokenize(formatted.prompt.encode(), add_bos=not formatted.added_special, special=True)

    # --- whose cache is in the model (these run on the model's thread) --------------------------------------

    def _save(self, slot: ChatSlot) -> None:
        ctx = self.llm._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, buffer, size, 0)
        slot.tokens, slot.kv = self.llm.input_ids[: self.llm.n_tokens].tolist(), bytes(buffer)[:written]

    def _use(self, slot: ChatSlot) -> None:
        """Put SLOT's cache into llama.cpp, saving the one that is there."""
        if self._loaded is slot:
            return
        if self._loaded is not None:
            self._save(self._loaded)
        source = slot if slot.kv is not None else self._fresh
        ctx = self.llm._ctx.ctx
        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(ctx), -1, 0, -1)
        self.llm.n_tokens = 0
        if source.kv is not None:
            data = (ctypes.c_uint8 * len(source.kv)).from_buffer_copy(source.kv)
            if llama_cpp.llama_state_seq_set_data(ctx, data, len(source.kv), 0) == len(source.kv):
                self.llm.input_ids[: len(source.tokens)] = source.tokens
                self.llm.n_tokens = len(source.tokens)
        slot.kv = None  # the model holds it now: no second copy
        self._loaded = slot

    @contextmanager
    def beside_other_work(self) -> Iterator[None]:
        """Steps taken in this block run beside other heavy work of this process (Whisper on a core of its own):
        count that core as busy when choosing threads (see LlmOptions)."""
        self._beside += 1
        try:
            yield
        finally:
            self._beside -= 1

    def _pick_threads(self) -> None:
        """Threads for writing and for evaluating a prompt, from what other processes keep busy (see LlmOptions)."""
        o = self.options
        busy = others_busy() + (1.0 if self._beside else 0.0) if o.adapt_threads and o.threads > 1 else 0.0
        threads = (o.threads if busy < o.quiet_elsewhere else 1, o.threads if busy <= o.busy_elsewhere else 1)
        if threads != self.threads:
            llama_cpp.llama_set_n_threads(self.llm._ctx.ctx, *threads)
            self.threads = threads

    def _eval(self, slot: ChatSlot, tokens: Sequence[int]) -> None:
        self._use(slot)
        self._pick_threads()
        self.llm.eval(tokens)
        self._logits_of = (slot, self.llm.n_tokens)

    def _next_token(self, slot: ChatSlot, sampler, tokens: list[int]) -> int:
        """Bring SLOT's cache to TOKENS (the prompt and the reply so far) and sample the next token."""
        self._logits_after(slot, tokens)
        return sampler.sample(self.llm._ctx, -1)

    def _logits_after(self, slot: ChatSlot, tokens: list[int]) -> None:
        """Make llama.cpp's last logits those after TOKENS in SLOT's cache.

        Normally nothing (or only the token sampled last) is left to evaluate. But another generation on the same
        slot may have run in between (a speculative answer that was cancelled but not yet closed, or listening
        ahead): then the cache is brought back to TOKENS from where they agree, never continued from someone else's
        tokens, and at least the last token is evaluated again for its logits."""
        self._use(slot)
        cached = self.llm.longest_token_prefix(self.llm.input_ids[: self.llm.n_tokens].tolist(), tokens)
        if cached < len(tokens) or self._logits_of != (slot, len(tokens)):
            self.llm.n_tokens = min(cached, len(tokens) - 1)
            self._eval(slot, tokens[self.llm.n_tokens :])

    def forget(self, slot: ChatSlot) -> None:
        """The conversation is over: drop its cache."""
        slot.kv, slot.tokens = None, []
        if self._loaded is slot:
            self._loaded = None

    # --- the steps -----------------------------------------------------------------------------------------

    def _eval_steps(self, slot: ChatSlot, tokens: list[int]) -> Iterator[int]:
        """Bring SLOT's cache to TOKENS, reusing the longest cached prefix; each step evaluates up to EVAL_STEP
        new tokens and yields how many. The prefix is found again at every step (another generation on the same
        slot may have run in between); what that undid is evaluated again in the same step, so progress is never
        lost twice over."""
        reached = 0
        while reached < len(tokens):
            reached, evaluated = self._thread.call(self._eval_next, slot, tokens, reached)
            yield evaluated

    def _eval_next(self, slot: ChatSlot, tokens: list[int], reached: int) -> tuple[int, int]:
        """Evaluate TOKENS up to EVAL_STEP past REACHED (and whatever of them the cache lost); returns how far the
        cache now holds them, and how many were evaluated."""
        self._use(slot)
        cached = self.llm.longest_token_prefix(self.llm.input_ids[: self.llm.n_tokens].tolist(), tokens)
        self.llm.n_tokens = cached  # eval drops whatever the cache held after this
        end = min(len(tokens), max(reached, cached) + EVAL_STEP)
        if end > cached:
            self._eval(slot, tokens[cached:end])
        return end, end - cached

    def prefill_steps(self, history: Sequence[Message], user_text: str, slot: ChatSlot | None = None) -> Iterator[int]:
        """Evaluate the prompt for answering USER_TEXT into SLOT's cache, without answering yet; each step yields
        the tokens it evaluated.

        Called with what the user has said so far: if that was the whole turn, the reply starts at once; if they
        said more, the reply reuses the cached prefix up to where the words differ."""
        if user_text:
            yield from self._eval_steps(slot or self.default_slot, self._tokens(history, user_text))

    def prefill(self, history: Sequence[Message], user_text: str, slot: ChatSlot | None = None) -> int:
        """`prefill_steps` in one go; returns the tokens evaluated (0 when the whole prompt was cached)."""
        return sum(self.prefill_steps(history, user_text, slot))

    def stream(self, history: Sequence[Message], user_text: str, slot: ChatSlot | None = None) -> Iterator[str]:
        """Text deltas of the reply, one step each ("" while the prompt is evaluated or a character is incomplete).

        Closing the generator stops the work at once."""
        slot = slot or self.default_slot
        prompt = self._tokens(history, user_text)
        for _ in self._eval_steps(slot, prompt):
            yield ""
        o = self.options
        # Sampling as create_chat_completion did it (top-k 40, min-p 0.05, seed 0).
        sampler = self.llm._init_sampler(top_k=40, top_p=o.top_p, min_p=0.05, temp=o.temperature)
        text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        tokens = list(prompt)
        for _ in range(o.max_tokens):
            token = self._thread.call(self._next_token, slot, sampler, tokens)
            if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                return
            tokens.append(token)
            yield text.decode(self.llm._model.detokenize([token]))

    def read_steps(
        self, history: Sequence[Message], user_text: str, slot: ChatSlot | None = None
    ) -> Iterator[WordsEnd | None]:
        """Read whether the user has finished: P(their words end where USER_TEXT does), and whether they ask
        something (`utils.turn`).

        The prompt up to the words is evaluated into SLOT's cache one step at a time (each yields None); the last
        step yields the reading. The cache then holds the prompt up to the words: a reply to USER_TEXT only
        evaluates the template's tail, and if the user goes on, the new words are evaluated after them."""
        from utils.turn import policy_reading, words_prompt

        slot = slot or self.default_slot
        messages = self.prompt(history, user_text)
        messages[-1] = {"role": "user", "content": user_text}  # the words alone: no calculator line after them
        tokens, ends = self._thread.call(words_prompt, self.llm, messages)
        # All of the words in one go, the last step's logits read as they are (evaluating the last word again on
        # its own for them cost a pass of 40-67 ms per reading).
        for _ in self._eval_steps(slot, tokens):
            yield None
        yield policy_reading(user_text, self._thread.call(self._read_end, slot, tokens, ends))

    def _read_end(self, slot: ChatSlot, tokens: list[int], ends: list[int]) -> float:
        from utils.turn import end_probability

        self._logits_after(slot, tokens)
        return end_probability(self.llm, ends)

    def warm_up(self) -> None:
        """Evaluate the system prompt once, kept as where every new conversation starts; then one reply step."""
        a, b = self._tokens([], "Hello"), self._tokens([], "Bye")
        self._thread.call(self._keep_fresh, a[: self.llm.longest_token_prefix(a, b)])
        for _ in self.stream([], "Hello"):
            break

    def _keep_fresh(self, system_prompt: list[int]) -> None:
        self._loaded = None  # whatever is in the model is dropped
        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self.llm._ctx.ctx), -1, 0, -1)
        self.llm.n_tokens = 0
        self.llm.eval(system_prompt)
        self._save(self._fresh)
