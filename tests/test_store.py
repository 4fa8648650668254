"""The conversation store: the same tests on SQLite (a temporary file) and on a real PostgreSQL server.

The PostgreSQL server is Debian's (`./setup.sh --test` installs it), started in a temporary folder on a free
loopback port for this test session and stopped after it; without it these tests are skipped, or fail under CI.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import event, func, inspect, select, text, update

from omni import store as store_module
from omni.store import (
    DEFAULT_DB,
    NotFound,
    Store,
    StoreError,
    StoreOptions,
    TurnRecord,
    conversations,
    database_url,
    schema_version,
    turns,
    utcnow,
)

ALICE, BOB = "alice-browser-id", "bob-browser-id"
POSTGRES_BINARIES = Path("/usr/lib/postgresql")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL server: its URL (the `postgres` database of superuser `omni`)."""
    pg_ctls = sorted(POSTGRES_BINARIES.glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if not pg_ctls:
        message = f"PostgreSQL is missing from {POSTGRES_BINARIES} (./setup.sh --test installs it)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    bin_dir = pg_ctls[-1].parent
    # PostgreSQL refuses to run as root: as root, run it as the `postgres` user in a folder it owns.
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="omni-postgres-"))
    password = secrets.token_hex(16)
    (root / "password").write_text(password)
    if as_postgres:
        for path in (root, root / "password"):
            shutil.chown(path, "postgres", "postgres")
    port = free_port()

    def pg(tool: str, *args: str) -> None:
        subprocess.run([*as_postgres, str(bin_dir / tool), *args], check=True, capture_output=True, timeout=120)

    superuser = ["-U", "omni", f"--pwfile={root}/password", "--auth=scram-sha-256"]
    pg("initdb", "-D", f"{root}/data", *superuser, "--no-sync", "--no-locale", "-E", "UTF8")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
    pg("pg_ctl", "-D", f"{root}/data", "-l", f"{root}/log", "-o", options, "-w", "-t", "60", "start")
    try:
        yield f"postgresql+psycopg://omni:{password}@127.0.0.1:{port}/postgres"
    finally:
        pg("pg_ctl", "-D", f"{root}/data", "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database for one test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'omni.db'}"
        return
    server = database_url(request.getfixturevalue("postgres_server"))
    name = f"test_{secrets.token_hex(6)}"
    admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield server.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "recordings"
    root.mkdir()
    return root


@pytest.fixture
def store(db_url: str, media: Path) -> Iterator[Store]:
    with Store.open(db_url, media) as opened:
        yield opened


def recorded_turn(media: Path, folder: str, number: int, **fields) -> TurnRecord:
    """A turn whose two audio files exist under MEDIA/FOLDER."""
    (media / folder).mkdir(parents=True, exist_ok=True)
    user, reply = f"{folder}/turn-{number:03d}-user.wav", f"{folder}/turn-{number:03d}-reply.mp3"
    (media / user).write_bytes(f"user audio {number}".encode())
    (media / reply).write_bytes(f"reply audio {number}".encode())
    turn = TurnRecord(
        f"Question {number}?", f"Answer {number}.", user, reply, {"asr_ms": 264.0, "first_audio_ms": 986.1}
    )
    return replace(turn, **fields)


def test_round_trip(store: Store, media: Path) -> None:
    older = store.create_conversation(ALICE, "Trip to Paris")
    chat = store.create_conversation(ALICE)
    assert len(chat.id) >= 22 and chat.id != older.id
    assert [c.id for c in store.conversations(ALICE)] == [chat.id, older.id]  # newest first

    first = store.add_turn(chat.id, ALICE, recorded_turn(media, "s1", 1, transcript="Hi, I'm Anna. How are you?"))
    second = store.add_turn(chat.id, ALICE, recorded_turn(media, "s1", 2, interrupted=True, reply_text="Well,"))
    assert (first.index, second.index) == (0, 1)
    assert store.turns(chat.id, ALICE) == [first, second]
    assert second.interrupted and second.timings == {"asr_ms": 264.0, "first_audio_ms": 986.1}
    assert second.created_at.tzinfo is not None and second.created_at >= first.created_at

    listed = store.conversations(ALICE)
    assert [c.id for c in listed] == [chat.id, older.id]
    assert listed[0].title == "Hi, I'm Anna. How are you?"  # named after its first turn
    assert listed[0].turn_count == 2 and listed[0].updated_at == second.created_at

    assert store.rename(older.id, ALICE, "Paris").title == "Paris"
    assert [c.title for c in store.conversations(ALICE)] == ["Paris", "Hi, I'm Anna. How are you?"]

    archive = zipfile.ZipFile(io.BytesIO(store.export_zip(chat.id, ALICE)))
    transcript = json.loads(archive.read("transcript.json"))
    assert "owner" not in transcript and ALICE not in archive.read("transcript.json").decode()
    assert [t["transcript"] for t in transcript["turns"]] == ["Hi, I'm Anna. How are you?", "Question 2?"]
    assert transcript["turns"][1]["interrupted"] is True
    assert transcript["turns"][1]["reply_audio"] == "audio/001-reply.mp3"
    assert archive.read("audio/000-user.wav") == b"user audio 1"
    assert archive.read("audio/001-reply.mp3") == b"reply audio 2"

    store.delete(chat.id, ALICE)
    assert [c.id for c in store.conversations(ALICE)] == [older.id]
    with pytest.raises(NotFound):
        store.turns(chat.id, ALICE)
    assert not (media / "s1").exists()  # its audio and the folder it left empty
    assert media.is_dir()
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(turns)).scalar() == 0


def test_delete_keeps_the_other_files_of_a_shared_folder(store: Store, media: Path) -> None:
    first, second = store.create_conversation(ALICE), store.create_conversation(ALICE)
    store.add_turn(first.id, ALICE, recorded_turn(media, "session", 1))  # one browser session, two conversations
    store.add_turn(second.id, ALICE, recorded_turn(media, "session", 2))
    store.delete(first.id, ALICE)
    assert sorted(p.name for p in (media / "session").iterdir()) == ["turn-002-reply.mp3", "turn-002-user.wav"]


def test_export_leaves_out_missing_audio(store: Store, media: Path) -> None:
    chat = store.create_conversation(ALICE)
    store.add_turn(chat.id, ALICE, recorded_turn(media, "s1", 1))
    store.add_turn(chat.id, ALICE, TurnRecord("Typed?", "Yes."))
    (media / "s1" / "turn-001-reply.mp3").unlink()
    archive = zipfile.ZipFile(io.BytesIO(store.export_zip(chat.id, ALICE)))
    saved = json.loads(archive.read("transcript.json"))["turns"]
    assert [(t["user_audio"], t["reply_audio"]) for t in saved] == [("audio/000-user.wav", None), (None, None)]
    assert sorted(archive.namelist()) == ["audio/000-user.wav", "transcript.json"]


def test_owners_see_only_their_own(store: Store, media: Path) -> None:
    chat = store.create_conversation(ALICE, "Alice's")
    store.add_turn(chat.id, ALICE, recorded_turn(media, "alice", 1))
    mine = store.create_conversation(BOB)

    assert [c.id for c in store.conversations(BOB)] == [mine.id]
    assert store.conversations("someone else") == []
    for attempt in (
        lambda: store.turns(chat.id, BOB),
        lambda: store.conversation(chat.id, BOB),
        lambda: store.add_turn(chat.id, BOB, TurnRecord("Mine now", "No")),
        lambda: store.rename(chat.id, BOB, "Bob's"),
        lambda: store.export_zip(chat.id, BOB),
        lambda: store.delete(chat.id, BOB),
        lambda: store.turns("no-such-conversation", ALICE),  # the same answer as for someone else's
    ):
        with pytest.raises(NotFound):
            attempt()
    with pytest.raises(ValueError):
        store.create_conversation("")

    assert store.conversation(chat.id, ALICE).title == "Alice's"
    assert [t.transcript for t in store.turns(chat.id, ALICE)] == ["Question 1?"]
    assert (media / "alice" / "turn-001-user.wav").is_file()


def test_the_app_names_a_conversation_and_creates_it_with_its_first_turn(store: Store, media: Path) -> None:
    """The app names a conversation's recordings folder after it before anything is written: the id is its own."""
    first = store.add_turn("chosen-id-0001", ALICE, recorded_turn(media, "chosen-id-0001", 1), create=True)
    assert first.index == 0
    (chat,) = store.conversations(ALICE)
    assert (chat.id, chat.title, chat.turn_count) == ("chosen-id-0001", "Question 1?", 1)
    with pytest.raises(StoreError):  # the id is taken (by anyone): nothing is written
        store.add_turn("chosen-id-0001", BOB, TurnRecord("Mine?", "No."), create=True)
    assert store.conversations(BOB) == [] and len(store.turns(chat.id, ALICE)) == 1
    named = store.create_conversation(ALICE, "Named first", conversation_id="chosen-id-0002")
    assert named.id == "chosen-id-0002" and store.conversation_ids() == {"chosen-id-0001", "chosen-id-0002"}


def test_a_reply_cut_after_its_turn_was_written(store: Store, media: Path) -> None:
    chat = store.create_conversation(ALICE)
    store.add_turn(chat.id, ALICE, recorded_turn(media, "s1", 1))
    store.add_turn(chat.id, ALICE, recorded_turn(media, "s1", 2))
    store.cut_turn(chat.id, ALICE, 0, "Ans")
    first, second = store.turns(chat.id, ALICE)
    assert (first.reply_text, first.interrupted) == ("Ans", True)
    assert (second.reply_text, second.interrupted) == ("Answer 2.", False)
    for attempt in (lambda: store.cut_turn(chat.id, BOB, 1, ""), lambda: store.cut_turn(chat.id, ALICE, 7, "")):
        with pytest.raises(NotFound):
            attempt()
    assert not store.turns(chat.id, ALICE)[1].interrupted


def test_audio_paths_must_stay_in_the_media_root(store: Store) -> None:
    chat = store.create_conversation(ALICE)
    for path in ("../../etc/passwd", "/etc/passwd", "s1/../../outside.wav"):
        with pytest.raises(ValueError, match="media root"):
            store.add_turn(chat.id, ALICE, TurnRecord("Hi", "Hello", user_audio=path))
    assert store.turns(chat.id, ALICE) == []


def test_a_failed_turn_write_leaves_nothing(store: Store, media: Path) -> None:
    chat = store.create_conversation(ALICE)
    store.add_turn(chat.id, ALICE, recorded_turn(media, "s1", 1))
    before = store.conversation(chat.id, ALICE)

    def fail_on_turn_insert(conn, cursor, statement: str, *args) -> None:
        # After the conversation row was updated: the failure falls in the middle of the write.
        if statement.lstrip().upper().startswith("INSERT INTO TURNS"):
            raise RuntimeError("disk pulled out mid-write")

    event.listen(store.engine, "before_cursor_execute", fail_on_turn_insert)
    try:
        with pytest.raises(RuntimeError, match="mid-write"):
            store.add_turn(chat.id, ALICE, recorded_turn(media, "s1", 2))
    finally:
        event.remove(store.engine, "before_cursor_execute", fail_on_turn_insert)

    assert [t.index for t in store.turns(chat.id, ALICE)] == [0]
    assert store.conversation(chat.id, ALICE) == before  # no count, time or title from the failed turn
    assert store.add_turn(chat.id, ALICE, recorded_turn(media, "s1", 2)).index == 1


@pytest.mark.parametrize("processes", [1, 2], ids=["one-store", "store-per-session"])
def test_two_sessions_write_at_once_without_loss(db_url: str, media: Path, processes: int) -> None:
    """Two sessions write as fast as they can, through the app's one Store or each through its own (as two app
    processes would), to a conversation of their own and to one they share (one owner in two browser tabs)."""
    per_session = 25
    options = StoreOptions(busy_timeout_s=30)
    app_store = Store.open(db_url, media, options)
    shared = app_store.create_conversation(ALICE)
    own = {name: app_store.create_conversation(name) for name in ("tab-1", "tab-2")}
    start = threading.Barrier(2, timeout=60)
    errors: list[BaseException] = []

    def session(name: str) -> None:
        try:
            store = app_store if processes == 1 else Store.open(db_url, media, options)
            start.wait()
            for number in range(per_session):
                store.add_turn(shared.id, ALICE, TurnRecord(f"{name} {number}", "ok"))
                store.add_turn(own[name].id, name, TurnRecord(f"{name} {number}", "ok"))
            if store is not app_store:
                store.close()
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=session, args=(name,)) for name in own]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors

    with app_store as store:
        written = store.turns(shared.id, ALICE)
        assert [t.index for t in written] == list(range(2 * per_session))
        for name, chat in own.items():
            mine = [t.transcript for t in written if t.transcript.startswith(name)]
            assert mine == [f"{name} {n}" for n in range(per_session)]  # each session's turns, in its order
            assert len(store.turns(chat.id, name)) == per_session
        assert store.conversation(shared.id, ALICE).turn_count == 2 * per_session


def test_retention_deletes_old_conversations_and_their_audio(store: Store, media: Path) -> None:
    old, older, fresh = (store.create_conversation(ALICE) for _ in range(3))
    for number, chat in enumerate((old, older, fresh), start=1):
        store.add_turn(chat.id, ALICE, recorded_turn(media, f"s{number}", number))
    with store.engine.begin() as conn:
        for chat, age in ((old, 8), (older, 30)):
            last_used = utcnow() - timedelta(days=age)
            conn.execute(update(conversations).where(conversations.c.id == chat.id).values(updated_at=last_used))

    assert store.delete_older_than(7) == 2
    assert [c.id for c in store.conversations(ALICE)] == [fresh.id]
    assert sorted(p.name for p in media.iterdir()) == ["s3"]
    assert len(list((media / "s3").iterdir())) == 2
    assert store.delete_older_than() == 0  # the default period (7 days) keeps the fresh one


def test_migrations_upgrade_an_old_database(db_url: str, media: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store.open(db_url, media) as store:
        chat = store.create_conversation(ALICE)
        store.add_turn(chat.id, ALICE, TurnRecord("Before the upgrade", "Noted."))
    ran: list[str] = []

    def add_language(conn) -> None:  # what a later version might add
        ran.append("language")
        conn.execute(text("ALTER TABLE turns ADD COLUMN language VARCHAR(8)"))

    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, add_language])
    for _ in range(2):  # the second open finds nothing left to do
        with Store.open(db_url, media) as store:
            assert [t.transcript for t in store.turns(chat.id, ALICE)] == ["Before the upgrade"]
            with store.engine.connect() as conn:
                assert conn.execute(select(func.max(schema_version.c.version))).scalar() == 2
                assert "language" in {c["name"] for c in inspect(conn).get_columns("turns")}
    assert ran == ["language"]


def test_a_failed_migration_changes_nothing(db_url: str, media: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Store.open(db_url, media).close()

    def half_done(conn) -> None:
        conn.execute(text("ALTER TABLE turns ADD COLUMN language VARCHAR(8)"))
        conn.execute(text("ALTER TABLE no_such_table ADD COLUMN x INTEGER"))

    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, half_done])
    with pytest.raises(StoreError, match="migration 2 failed"):
        Store.open(db_url, media)
    monkeypatch.undo()
    with Store.open(db_url, media) as store, store.engine.connect() as conn:
        assert conn.execute(select(func.max(schema_version.c.version))).scalar() == 1
        assert "language" not in {c["name"] for c in inspect(conn).get_columns("turns")}


def test_a_newer_schema_is_refused(db_url: str, media: Path) -> None:
    with Store.open(db_url, media) as store, store.engine.begin() as conn:
        conn.execute(schema_version.insert().values(version=99, applied_at=utcnow()))
    with pytest.raises(StoreError, match="schema version 99, newer than this app"):
        Store.open(db_url, media)


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "omni.db"
    path.write_bytes(b"this is not SQLite, just some bytes " * 200)
    with pytest.raises(StoreError, match=f"{path} is damaged"):
        Store.open(f"sqlite:///{path}", tmp_path)


def test_a_database_with_damaged_pages(tmp_path: Path) -> None:
    path = tmp_path / "omni.db"
    with Store.open(f"sqlite:///{path}", tmp_path) as store:
        chat = store.create_conversation(ALICE)
        for number in range(200):
            store.add_turn(chat.id, ALICE, TurnRecord(f"Question {number}? " * 20, "Answer. " * 20))
    page = 4096
    data = bytearray(path.read_bytes())
    assert len(data) > 8 * page  # checkpointed into the file when the store closed
    data[2 * page : 6 * page] = secrets.token_bytes(4 * page)  # the header is intact, the tables are not
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="is damaged"):
        Store.open(f"sqlite:///{path}", tmp_path)


def test_a_locked_database(tmp_path: Path) -> None:
    url, options = f"sqlite:///{tmp_path / 'omni.db'}", StoreOptions(busy_timeout_s=0.2)
    with Store.open(url, tmp_path, options) as store:
        chat = store.create_conversation(ALICE)
        other_program = sqlite3.connect(tmp_path / "omni.db", isolation_level=None)
        other_program.execute("BEGIN EXCLUSIVE")  # holds the write lock
        try:
            started = time.monotonic()
            with pytest.raises(StoreError, match="is locked by another writer"):
                store.add_turn(chat.id, ALICE, TurnRecord("Hello?", "Hi."))
            assert time.monotonic() - started < 2  # waits the busy timeout, not forever
            with pytest.raises(StoreError, match="locked"):
                Store.open(url, tmp_path, options)
            assert store.turns(chat.id, ALICE) == []  # reading still works (WAL)
        finally:
            other_program.rollback()
            other_program.close()
        assert store.add_turn(chat.id, ALICE, TurnRecord("Hello?", "Hi.")).index == 0


def test_an_unreachable_postgres_server(tmp_path: Path) -> None:
    url = f"postgresql://omni:secret@127.0.0.1:{free_port()}/omni"
    with pytest.raises(StoreError, match="failed") as raised:
        Store.open(url, tmp_path, StoreOptions(connect_timeout_s=2))
    assert "secret" not in str(raised.value)  # the password stays out of the message


def test_where_the_database_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMNI_DB_URL", raising=False)
    assert database_url().database == str(DEFAULT_DB)
    assert DEFAULT_DB.parts[-3:] == (".cache", "data", "omni.db")
    monkeypatch.setenv("OMNI_DB_URL", "postgresql://u:p@db.example/omni")
    assert database_url().drivername == "postgresql+psycopg"
    assert database_url("sqlite:///elsewhere.db").database == "elsewhere.db"


def time_turn_writes(store: Store, conversation_id: str, count: int) -> list[float]:
    """Milliseconds for each of COUNT add_turn calls with a realistic turn."""
    turn = TurnRecord(
        "What is the capital of France?",
        "The capital of France is Paris.",
        user_audio="s/turn-001-user.wav",
        reply_audio="s/turn-001-reply.mp3",
        timings={"asr_ms": 264.0, "first_token_ms": 516.9, "first_audio_ms": 986.1, "total_ms": 986.1},
    )
    times = []
    for _ in range(count):
        started = time.perf_counter()
        store.add_turn(conversation_id, ALICE, turn)
        times.append((time.perf_counter() - started) * 1000)
    return times


def test_writing_a_turn_is_fast(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'omni.db'}", tmp_path) as store:
        chat = store.create_conversation(ALICE)
        times = time_turn_writes(store, chat.id, 100)
    median, p90 = statistics.median(times), statistics.quantiles(times, n=10)[-1]
    print(f"\nSQLite add_turn: median {median:.2f} ms, p90 {p90:.2f} ms (100 turns)")
    assert median < 5
