"""Recordings are private: each browser gets an owner cookie, and the media route serves only the owner's files."""

from __future__ import annotations

import os
import time

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from omni.media import COOKIE, MAX_AGE_S, MediaStore, OwnerCookie, owner_key


def server(tmp_path) -> tuple[TestClient, MediaStore]:
    media = MediaStore(tmp_path / "recordings", retention_days=7)
    app = FastAPI()
    app.add_middleware(OwnerCookie)
    media.add_routes(app)

    @app.get("/whoami")
    def whoami(request: Request) -> dict:
        return {"cookie": request.headers.get("cookie")}

    return TestClient(app), media


def test_each_browser_gets_its_own_http_only_owner_cookie(tmp_path):
    client, _ = server(tmp_path)
    first = client.get("/whoami")
    set_cookie = first.headers["set-cookie"]
    assert set_cookie.startswith(f"{COOKIE}=") and "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie
    owner = client.cookies[COOKIE]
    assert first.json()["cookie"] == f"{COOKIE}={owner}"  # the first request already carries it
    assert "set-cookie" not in client.get("/whoami").headers  # kept, not renewed
    other, _ = server(tmp_path)
    other.get("/whoami")
    assert other.cookies[COOKIE] != owner


def test_loading_the_page_renews_the_cookie(tmp_path):
    """It must outlive the retention of what it owns, for a browser that keeps coming back: each visit renews it."""
    client, _ = server(tmp_path)

    @client.app.get("/")
    def page() -> dict:
        return {}

    client.get("/")
    owner = client.cookies[COOKIE]
    renewed = client.get("/").headers["set-cookie"]
    assert renewed.startswith(f"{COOKIE}={owner};") and f"Max-Age={MAX_AGE_S}" in renewed and "HttpOnly" in renewed
    assert MAX_AGE_S >= 400 * 86400


def test_over_https_the_cookie_works_inside_a_space_iframe(tmp_path):
    client, _ = server(tmp_path)
    set_cookie = client.get("/whoami", headers={"x-forwarded-proto": "https"}).headers["set-cookie"]
    assert "Secure" in set_cookie and "SameSite=None" in set_cookie and "Partitioned" in set_cookie


def test_only_the_owner_can_fetch_a_recording(tmp_path):
    alice, media = server(tmp_path)
    alice.get("/whoami")
    owner = alice.cookies[COOKIE]
    wav = media.folder(owner, "session-aaaa") / "turn-001-user.wav"
    wav.write_bytes(b"RIFF....WAVE")
    url = media.url(wav)
    assert owner not in url and owner_key(owner) in url  # no URL carries the secret

    assert alice.get(url).status_code == 200 and alice.get(url).content == b"RIFF....WAVE"
    bob, _ = server(tmp_path)
    bob.get("/whoami")
    assert bob.get(url).status_code == 404  # another browser
    bare = TestClient(alice.app)
    assert bare.get(url).status_code == 404  # a bare URL, no cookie
    assert alice.get(url.replace("turn-001-user.wav", "../../x")).status_code == 404
    assert alice.get(url.replace("user.wav", "user.txt")).status_code == 404


def test_clear_and_retention_delete_recordings(tmp_path):
    _client, media = server(tmp_path)
    old = media.folder("owner-aaaaaaaa", "old-session")
    (old / "turn-001-user.wav").write_bytes(b"x")
    week_ago = time.time() - 8 * 86400
    os.utime(old / "turn-001-user.wav", (week_ago, week_ago))
    fresh = media.folder("owner-aaaaaaaa", "new-session")
    (fresh / "turn-001-user.wav").write_bytes(b"x")
    kept = media.folder("owner-aaaaaaaa", "stored-conversation")
    (kept / "turn-001-user.wav").write_bytes(b"x")
    os.utime(kept / "turn-001-user.wav", (week_ago, week_ago))
    assert media.sweep(keep={"stored-conversation"}) == 1  # the store keeps that one, by the same rule
    assert not old.exists() and fresh.exists() and kept.exists()
    media.delete("owner-aaaaaaaa", "new-session")
    assert not fresh.exists()
    with pytest.raises(ValueError):
        media.delete("owner-aaaaaaaa", "")  # never the owner's whole folder


def test_a_reopened_conversation_numbers_its_files_after_the_last(tmp_path):
    media = MediaStore(tmp_path / "recordings")
    assert media.last_turn("owner-aaaaaaaa", "no-such-session") == 0
    folder = media.folder("owner-aaaaaaaa", "conversation")
    for name in ("turn-001-user.wav", "turn-001-reply.mp3", "turn-012-user.wav", "turn-999-notes.txt"):
        (folder / name).write_bytes(b"x")
    assert media.last_turn("owner-aaaaaaaa", "conversation") == 12
