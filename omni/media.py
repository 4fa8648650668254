"""Each browser's recordings: where they are kept, who may fetch them, and when they are deleted.

A browser is known by a random owner id in an HttpOnly cookie (`OwnerCookie`), set on its first request; the same id
owns its stored conversations (omni/history.py). A conversation's files live under `<root>/<owner key>/<conversation
id>/` (the key is a hash of the owner id, so no folder name reveals it), and `/omni/media/<owner key>/<conversation
id>/<file>` serves a file only to a request carrying that owner's cookie: another browser, or a bare URL, gets 404.
Folders older than `retention_days` are deleted (at start-up, then hourly), unless a stored conversation keeps them.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shutil
import time
from collections.abc import Container
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse

COOKIE = "omni_owner"
ROUTE = "/omni/media"
_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")
_FILE = re.compile(r"turn-(\d{3,})-(user\.wav|reply\.mp3)")
# Browsers keep a cookie for 400 days at most. Each visit to the page renews it, so it always outlives the
# retention of what it owns: a reload or a server restart finds the browser's conversations again.
MAX_AGE_S = 400 * 86400


def new_id() -> str:
    return secrets.token_urlsafe(16)  # 128 random bits


def owner_key(owner: str) -> str:
    """The folder name for an owner's files: a hash, so that no path or URL carries the cookie's secret."""
    return hashlib.sha256(owner.encode()).hexdigest()[:32]


def owner_of(cookie_header: str | None) -> str | None:
    if not cookie_header:
        return None
    morsel = SimpleCookie(cookie_header).get(COOKIE)
    return morsel.value if morsel and _ID.fullmatch(morsel.value) else None


class OwnerCookie:
    """ASGI middleware: every browser gets a random owner id in an HttpOnly cookie on its first request.

    The request that sets it already carries it (added to its headers), so the page and its first events agree.
    Loading the page renews it (`MAX_AGE_S` from the latest visit). It is HttpOnly, so no script in the page can
    read it (unlike `gr.BrowserState`'s localStorage), and it is never shown in a URL or a folder name.
    Over https (a Hugging Face Space shows the app in an iframe of another site) the cookie is SameSite=None,
    Secure and Partitioned, so that it is sent inside the iframe; over http, SameSite=Lax.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        existing = headers.get(b"cookie", b"").decode("latin-1")
        owner = owner_of(existing)
        page = scope["type"] == "http" and scope.get("method") == "GET" and scope["path"] == "/"
        if owner and not page:
            return await self.app(scope, receive, send)
        if not owner:
            owner = new_id()
            scope = dict(scope, headers=[(k, v) for k, v in scope["headers"] if k != b"cookie"])
            scope["headers"].append((b"cookie", f"{existing}; {COOKIE}={owner}".lstrip("; ").encode("latin-1")))
        cookie = f"{COOKIE}={owner}"
        https = scope.get("scheme") in ("https", "wss") or headers.get(b"x-forwarded-proto", b"").startswith(b"https")
        attributes = "; Secure; SameSite=None; Partitioned" if https else "; SameSite=Lax"
        set_cookie = f"{cookie}; Path=/; Max-Age={MAX_AGE_S}; HttpOnly{attributes}".encode("latin-1")

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []), (b"set-cookie", set_cookie)])
            await send(message)

        await self.app(scope, receive, send_with_cookie)


@dataclass
class MediaStore:
    """The recordings folder: one sub-folder per owner and session."""

    root: Path
    retention_days: float = 7.0

    def folder(self, owner: str, session: str) -> Path:
        folder = self.root / owner_key(owner) / session
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def url(self, path: Path) -> str:
        """The route path (without the server's origin) that serves PATH to its owner."""
        return f"{ROUTE}/{path.relative_to(self.root).as_posix()}"

    def delete(self, owner: str, session: str) -> None:
        if not _ID.fullmatch(session):  # never the owner's whole folder
            raise ValueError(f"not a session id: {session!r}")
        shutil.rmtree(self.root / owner_key(owner) / session, ignore_errors=True)

    def last_turn(self, owner: str, session: str) -> int:
        """The highest turn number in SESSION's file names (0: none yet): a reopened conversation goes on after it."""
        names = (_FILE.fullmatch(p.name) for p in (self.root / owner_key(owner) / session).glob("turn-*"))
        return max((int(name[1]) for name in names if name), default=0)

    def sweep(self, keep: Container[str] = ()) -> int:
        """Delete every session folder untouched for `retention_days`, except those named in KEEP (the stored
        conversations: their retention is the store's, by the same rule); returns how many."""
        cutoff, removed = time.time() - self.retention_days * 86400, 0
        for folder in (f for f in self.root.glob("*/*") if f.is_dir() and f.name not in keep):
            newest = max((f.stat().st_mtime for f in folder.iterdir()), default=folder.stat().st_mtime)
            if newest < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        for owner in self.root.glob("*"):
            if owner.is_dir() and not any(owner.iterdir()):
                owner.rmdir()  # its last session is gone
        return removed

    def add_routes(self, app: FastAPI) -> None:
        @app.get(ROUTE + "/{key}/{session}/{name}")
        def media(key: str, session: str, name: str, request: Request) -> FileResponse:
            owner = owner_of(request.headers.get("cookie"))
            path = self.root / key / session / name
            # 404, not 403, for someone else's file: nothing tells a stranger that it exists.
            if not (owner and key == owner_key(owner) and _ID.fullmatch(session) and _FILE.fullmatch(name)):
                raise HTTPException(404)
            if not path.is_file():
                raise HTTPException(404)
            return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})
