"""Conversations that last, as the app uses them: the store or, when the database cannot be used, history off.

The browser's owner id (its HttpOnly cookie, omni/media.py) is the owner in the store, so one identity keeps both
the recordings and the conversations. One retention rule covers both: a conversation untouched for the retention
period goes with its recordings, and a recordings folder that no stored conversation keeps goes once it is as old.
A conversation's recordings folder is named after its id, so the two agree by name.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request, Response

from omni.media import MediaStore, owner_of
from omni.store import NotFound, Store, StoreError

log = logging.getLogger(__name__)

EXPORT = "/omni/export"  # + /<conversation id>: the conversation as a zip, for its owner only


@dataclass
class History:
    """The conversation store, or None with the reason it is off (shown to every visitor while it is)."""

    store: Store | None = None
    off_because: str = ""

    @classmethod
    def open(cls, media_root: Path, url: str | None = None) -> History:
        """URL, else $OMNI_DB_URL, else the SQLite file, with audio paths kept relative to MEDIA_ROOT; history off
        (and why) if the database cannot be used."""
        try:
            store = Store.open(url, media_root)
        except StoreError as error:
            log.warning("history is off: %s", error)
            return cls(None, str(error))
        log.info("conversations are kept in %s", store.where)
        return cls(store)

    def sweep(self, media: MediaStore) -> tuple[int, int]:
        """Retention, one rule for both: (conversations, recordings folders) deleted after `media.retention_days`."""
        conversations, keep = 0, set()
        if self.store is not None:
            try:
                conversations = self.store.delete_older_than(media.retention_days)
                keep = self.store.conversation_ids()
            except StoreError as error:
                # Without the list of kept conversations no folder can be told apart from a stray one: wait.
                log.warning("retention skipped: %s", error)
                return 0, 0
        return conversations, media.sweep(keep)

    def sweep_every(self, media: MediaStore, seconds: float = 3600.0) -> None:
        """Sweep now and then every SECONDS, in a daemon thread."""

        def loop() -> None:
            while True:
                conversations, folders = self.sweep(media)
                if conversations or folders:
                    log.info(
                        "retention (%g days): deleted %d conversations and %d recordings folders",
                        media.retention_days, conversations, folders,
                    )
                time.sleep(seconds)

        threading.Thread(target=loop, name="retention", daemon=True).start()

    def add_routes(self, app: FastAPI) -> None:
        @app.get(EXPORT + "/{conversation_id}")
        def export(conversation_id: str, request: Request) -> Response:
            owner = owner_of(request.headers.get("cookie"))
            if self.store is None:
                raise HTTPException(503, f"history is off: {self.off_because}")
            if not owner:
                raise HTTPException(404)  # as for another owner's conversation: nothing tells that it exists
            try:
                chat = self.store.conversation(conversation_id, owner)
                archive = self.store.export_zip(conversation_id, owner)
            except NotFound:
                raise HTTPException(404) from None
            except StoreError as error:
                raise HTTPException(503, str(error)) from None
            name = f"conversation-{chat.created_at:%Y-%m-%d-%H%M}-{slug(chat.title or '')}".rstrip("-")
            disposition = f'attachment; filename="{name}.zip"'
            headers = {"Content-Disposition": disposition, "Cache-Control": "private, no-store"}
            return Response(archive, media_type="application/zip", headers=headers)


def slug(title: str, limit: int = 40) -> str:
    """A file name's worth of TITLE: ASCII letters and digits joined by dashes."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:limit].rstrip("-")
