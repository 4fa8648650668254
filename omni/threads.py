"""One thread per native library: where llama.cpp and CTranslate2 are called from."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class OwnThread:
    """Makes every call to a native model from one thread of its own, whichever thread asks.

    llama.cpp's and CTranslate2's OpenMP thread teams belong to the thread that calls them. Called from a new thread
    for every reply, idle teams kept spinning and took the cores: llama.cpp fell from ~28 to ~17 tokens/s on 2 cores.
    """

    def __init__(self, name: str):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """FN(*ARGS, **KWARGS) on this thread; waits for it and returns (or raises) what it did."""
        return self._pool.submit(fn, *args, **kwargs).result()
