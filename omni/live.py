"""Live reply audio: each reply is one continuous mp3 stream, served from the app's own route to its owner only.

The reply handler opens a `LiveReply` when the turn ends and hands its URL to the page (web/player.js), which starts
fetching at once; mp3 frames go out as piper speaks each clause (one LAME encoder per reply, so the joins are
seamless), and the response ends when the reply does or is cancelled. Another browser, or a URL after its reply is
over, gets 404.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import StreamingResponse

from omni.media import new_id, owner_of
from omni.mp3 import Mp3Stream

ROUTE = "/omni/live"
KEEP_S = 60.0  # a finished reply's stream can still be fetched this long (a slow page), then it is gone


class LiveReply:
    """One reply's mp3 bytes, written by the reply's thread and read by one HTTP response."""

    def __init__(self, owner: str, sample_rate: int):
        self.id, self.owner = new_id(), owner
        self.url = f"{ROUTE}/{self.id}"
        self._mp3 = Mp3Stream(sample_rate)
        self._chunks: list[bytes] = []
        self._encoded = self._closed = False
        self._lock = threading.Lock()
        self._wakers: list = []  # for each reader: wakes its event loop when bytes come (from the reply's thread)

    @property
    def data(self) -> bytes:
        """Everything written so far (the whole reply once it is closed): the Chatbot keeps it as the reply's file."""
        with self._lock:
            return b"".join(self._chunks)

    def _wake(self) -> None:
        for wake in self._wakers:
            wake()

    def write(self, pcm: np.ndarray) -> None:
        self._encoded = True
        self._put(self._mp3.encode(pcm))

    def close(self) -> None:
        """The reply is over (finished or cancelled): send the encoder's tail and end the response."""
        if not self._closed:
            if self._encoded:  # lameenc refuses to flush an encoder that never encoded
                self._put(self._mp3.flush())
            with self._lock:
                self._closed = True
                self._wake()

    def _put(self, data: bytes) -> None:
        if data:
            with self._lock:
                self._chunks.append(data)
                self._wake()

    async def body(self) -> AsyncIterator[bytes]:
        """The response body: what was written so far, then each new piece the moment it is written.

        The reply's thread wakes this coroutine's event loop directly (no thread of the loop's pool polling: under
        load, that added 300-500 ms before the first bytes)."""
        loop, written = asyncio.get_running_loop(), asyncio.Event()
        with self._lock:
            self._wakers.append(lambda: loop.call_soon_threadsafe(written.set))
        sent = 0
        while True:
            with self._lock:
                chunks, closed = self._chunks[sent:], self._closed
            for chunk in chunks:
                yield chunk
            sent += len(chunks)
            if closed and not chunks:
                return
            if not chunks:
                await written.wait()
                written.clear()


class LiveReplies:
    """The open (and recently finished) reply streams of every session, and the route that serves them."""

    def __init__(self) -> None:
        self._replies: dict[str, LiveReply] = {}
        self._lock = threading.Lock()

    def open(self, owner: str, sample_rate: int) -> LiveReply:
        reply = LiveReply(owner, sample_rate)
        with self._lock:
            self._replies[reply.id] = reply
        drop = threading.Timer(KEEP_S, self._drop, args=(reply.id,))  # long after any page fetched it
        drop.daemon = True
        drop.start()
        return reply

    def get(self, url: str) -> LiveReply | None:
        """The reply streamed at URL (with or without the server's origin), while it is kept."""
        with self._lock:
            return self._replies.get(url.rsplit("/", 1)[-1])

    def _drop(self, reply_id: str) -> None:
        with self._lock:
            reply = self._replies.pop(reply_id, None)
        if reply is not None:
            reply.close()

    def add_routes(self, app: FastAPI) -> None:
        @app.get(ROUTE + "/{reply_id}")
        def live(reply_id: str, request: Request) -> StreamingResponse:
            reply = self.get(reply_id)
            if reply is None or owner_of(request.headers.get("cookie")) != reply.owner:
                raise HTTPException(404)
            return StreamingResponse(
                reply.body(), media_type="audio/mpeg", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
            )
