"""Fair use of the cores by several conversations: one heavy step at a time, the most urgent first.

On 2 cores, two heavy jobs at once each run at less than half speed (llama.cpp fell from ~24 to ~11 tokens/s next
to piper), so the model does one step at a time: a transcription, a prompt evaluation, one token, one spoken
clause. Between steps the next one goes to the conversation whose listener is closest to silence: a reply that has
not been heard yet before one that is seconds ahead of its playback. A reply writing a clause keeps the model
between its tokens for a moment (`keep=True`), so that two replies take turns clause by clause, not token by
token (each switch swaps a conversation's prompt cache in and out of llama.cpp); but not against someone more
urgent: a listener who has heard nothing yet goes before a clause for one who has more than `RUNWAY_S` of audio
in hand; within it, they are served in the order they asked.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

URGENT = 0.0  # a reply the listener is waiting for: nothing of it heard yet
# A reply whose listener runs out of audio within this many seconds is as urgent as one not heard yet (first come,
# first served between them): its next clause (a few tokens, then piper: 0.6-0.9 s with two people on 2 cores)
# must start before the audio in hand runs out. Ranked by the audio in hand alone, a reply lost to every step of
# another person's first answer (Whisper alone 0.3-1.5 s there), and 2-4 of 16 replies per two-person run went
# silent for up to 2.2 s after their first clause. With this runway (bench.browser --sessions 2, three runs): one
# gap of 0.55-1.2 s per run, where both turns ended within 0.6 s, and the first answers' p90 1.6-2.0 s (1.9-2.3).
RUNWAY_S = 1.0
LISTENING = 1.0  # work ahead for a user still talking: before a reply with more than RUNWAY_S + 1 s in hand


def reply_priority(in_hand_s: float | None) -> float:
    """A reply's priority from the seconds of its audio that its listener has in hand (None: none heard yet; played
    out: 0 or less)."""
    return URGENT if in_hand_s is None else max(URGENT, in_hand_s - RUNWAY_S)


class ComputeQueue:
    """Hands out the right to run a heavy step to one caller at a time, lowest priority value first.

    PRIORITY is, for a reply, how many seconds of its audio its listener has in hand beyond `RUNWAY_S`
    (`reply_priority`; `URGENT` = none); ties go to whoever asked first. `keep_s` is how long a caller that
    released with `keep=True` keeps its turn for its next step, so that a clause is written without switching
    conversations.
    """

    def __init__(self, keep_s: float = 0.05):
        self.keep_s = keep_s
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._waiting: dict[int, tuple[float, object]] = {}  # ticket -> (priority, owner)
        self._holder: object | None = None
        self._holder_priority = URGENT
        self._kept_for: object | None = None
        self._kept_until = 0.0
        self._kept_priority = URGENT  # only a more urgent caller (a lower value) may step in while it is kept

    @contextmanager
    def step(self, owner: object, priority: float = URGENT, keep: bool = False) -> Iterator[None]:
        """Run the body as OWNER's turn; with KEEP, OWNER's next step (within `keep_s`) goes before anyone else's."""
        ticket = self.ask(owner, priority)
        self.wait(ticket)
        try:
            yield
        finally:
            self.release(owner, keep)

    def ask(self, owner: object, priority: float = URGENT) -> int:
        """Get in line; returns a ticket to `wait` with (or to `withdraw`)."""
        with self._cond:
            ticket = next(self._seq)
            self._waiting[ticket] = (priority, owner)
            return ticket

    def wait(self, ticket: int, timeout: float | None = None, priority: float | None = None) -> bool:
        """Wait up to TIMEOUT for TICKET's turn (True: it is the caller's now; `release` it). PRIORITY, if given,
        replaces the ticket's (its place among equals stays)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            owner = self._waiting[ticket][1]
            if priority is not None and priority != self._waiting[ticket][0]:
                self._waiting[ticket] = (priority, owner)
                self._cond.notify_all()  # the order changed: someone else may be first now
            while True:
                now = time.monotonic()
                kept = self._kept_for if now < self._kept_until else None
                first = min(self._waiting, key=lambda t: (self._waiting[t][0], t))
                free = kept is None or self._waiting[ticket][0] < self._kept_priority
                if self._holder is None and (kept is owner or (free and ticket == first)):
                    self._holder_priority = self._waiting.pop(ticket)[0]
                    self._holder, self._kept_for = owner, None
                    return True
                if deadline is not None and now >= deadline:
                    return False
                until = [t for t in (deadline, self._kept_until if kept is not None else None) if t is not None]
                self._cond.wait(min(until) - now if until else None)

    def withdraw(self, ticket: int) -> None:
        """Leave the line without a turn."""
        with self._cond:
            self._waiting.pop(ticket, None)
            self._cond.notify_all()

    def release(self, owner: object, keep: bool = False) -> None:
        """End OWNER's turn; with KEEP, its next step (within `keep_s`) goes before anyone else's."""
        with self._cond:
            self._holder = None
            if keep:
                self._kept_for, self._kept_until = owner, time.monotonic() + self.keep_s
                self._kept_priority = self._holder_priority
            self._cond.notify_all()

    def waiting(self, owner: object) -> int:
        """0 when OWNER is not waiting; else its place in the queue (1: next)."""
        with self._cond:
            order = sorted(self._waiting, key=lambda t: (self._waiting[t][0], t))
            mine = [i for i, t in enumerate(order) if self._waiting[t][1] is owner]
            if not mine:
                return 0
            return 1 + sum(1 for t in order[: mine[0]] if self._waiting[t][1] is not owner)

    def replying(self, than: object) -> bool:
        """Is a reply someone waits for (priority below `LISTENING`) running or waiting, other than THAN's?"""
        with self._cond:
            if self._holder is not None and self._holder is not than and self._holder_priority < LISTENING:
                return True
            return any(p < LISTENING and owner is not than for p, owner in self._waiting.values())

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._holder is not None or bool(self._waiting)
