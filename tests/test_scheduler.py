"""The compute queue that shares the model between conversations: fast, no models."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from omni.scheduler import LISTENING, RUNWAY_S, URGENT, ComputeQueue, reply_priority


def in_order_asked(
    requests: list[tuple[str, float]], lined_up: Callable[[ComputeQueue], None] | None = None
) -> list[str]:
    """While one holder has the queue, REQUESTS (owner, priority) line up one after the other (LINED_UP(queue) is
    called then); returns the order they got it."""
    queue, order = ComputeQueue(), []

    def ask(owner: str, priority: float) -> None:
        with queue.step(owner, priority):
            order.append(owner)

    with queue.step("holder"):
        for owner, priority in requests:
            threading.Thread(target=ask, args=(owner, priority)).start()
            while queue.waiting(owner) == 0:
                time.sleep(0.001)
        if lined_up:
            lined_up(queue)
    while len(order) < len(requests):
        time.sleep(0.001)
    return order


def test_the_most_urgent_goes_first():
    order = in_order_asked([("ahead", 3.0), ("listening", LISTENING), ("unheard", URGENT)])
    assert order == ["unheard", "listening", "ahead"]


def test_a_reply_about_to_run_dry_is_as_urgent_as_one_not_heard_yet():
    about_to_run_dry, well_ahead = reply_priority(RUNWAY_S / 2), reply_priority(RUNWAY_S + 2.0)
    assert about_to_run_dry == reply_priority(None) == reply_priority(-0.5) == URGENT  # -0.5: played out a while ago
    # It asked first, so it goes first; a reply well ahead of its playback waits for the other person's first answer.
    order = in_order_asked([("running dry", about_to_run_dry), ("ahead", well_ahead), ("unheard", URGENT)])
    assert order == ["running dry", "unheard", "ahead"]
    assert reply_priority(RUNWAY_S + 0.5) < LISTENING < well_ahead  # listening ahead waits for a reply near its runway


def test_equal_priority_is_first_come_first_served():
    def places(queue: ComputeQueue) -> None:
        assert [queue.waiting(o) for o in "abc"] == [1, 2, 3]

    assert in_order_asked([(owner, URGENT) for owner in "abc"], places) == ["a", "b", "c"]


def clause_while_another_waits(writer_priority: float, waiter_priority: float) -> list[str]:
    """A writer keeps the model for a clause of three tokens while another caller asks; the order of their steps."""
    queue = ComputeQueue(keep_s=0.5)
    order: list[str] = []

    def wait() -> None:
        with queue.step("waiter", waiter_priority):
            order.append("waiter")

    with queue.step("writer", writer_priority, keep=True):
        other = threading.Thread(target=wait)
        other.start()
        while queue.waiting("waiter") == 0:
            time.sleep(0.001)
    for _ in range(3):  # the rest of the clause
        time.sleep(0.01)  # the waiter has time to step in, if it may
        with queue.step("writer", writer_priority, keep=True):
            order.append("writer")
    with queue.step("writer", writer_priority):  # the clause is spoken: the turn is given up
        order.append("writer spoke")
    other.join(2)
    return order


def test_a_kept_turn_finishes_its_clause_before_others():
    """Two replies nobody has heard yet take turns clause by clause, not token by token."""
    assert clause_while_another_waits(URGENT, URGENT) == ["writer"] * 3 + ["writer spoke", "waiter"]
    assert clause_while_another_waits(2.0, 2.0) == ["writer"] * 3 + ["writer spoke", "waiter"]


def test_someone_more_urgent_steps_into_a_kept_turn():
    """A listener who has heard nothing yet does not wait for a clause for one who has 2 s of audio in hand."""
    assert clause_while_another_waits(2.0, URGENT)[0] == "waiter"


def test_a_kept_turn_lapses_when_its_owner_does_not_come_back():
    """A reply held by a barge-in stops asking: others must not wait for it."""
    queue = ComputeQueue(keep_s=0.05)
    with queue.step("held", keep=True):
        pass
    start = time.monotonic()
    with queue.step("other"):
        waited = time.monotonic() - start
    assert waited < 0.5


def test_a_waiter_whose_priority_changes_does_not_strand_the_others():
    """A reply waiting with a growing lead gives way; the one that becomes first must be woken, not left asleep."""
    queue = ComputeQueue()
    with queue.step("holder"):
        first = queue.ask("ahead", URGENT)
        got: list[str] = []

        def take_turn() -> None:
            with queue.step("next", 1.0):
                got.append("next")

        other = threading.Thread(target=take_turn)
        other.start()
        while queue.waiting("next") == 0:
            time.sleep(0.001)
    assert queue.wait(first, timeout=1.0, priority=5.0)  # "next" is first now: woken, it went before
    assert got == ["next"]
    queue.release("ahead")
    other.join(1)
    assert not queue.busy


def test_replying_tells_whether_someone_waits_for_a_reply():
    queue = ComputeQueue()
    assert not queue.replying(than="me")
    with queue.step("me", URGENT):
        assert not queue.replying(than="me")  # my own reply does not count
        assert queue.replying(than="other")
    with queue.step("other", LISTENING):  # work ahead is no reply
        assert not queue.replying(than="me")
    with queue.step("holder", 5.0):
        ticket = queue.ask("other", 0.5)
        assert queue.replying(than="me") and not queue.replying(than="other")
        queue.withdraw(ticket)
