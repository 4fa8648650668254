"""Recordings are private: each browser gets an owner cookie, and the media route serves only the owner's files."""

from __future__ import annotations

import os
import time

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from omni.media import COOKIE, MediaStore, OwnerCookie, owner_key


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
    assert media.sweep() == 1
    assert not old.exists() and fresh.exists()
    media.delete("owner-aaaaaaaa", "new-session")
    assert not fresh.exists()
