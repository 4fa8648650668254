"""Conversations that last: every turn of every conversation, kept in a database and on disk.

SQLite by default (one file, `.cache/data/omni.db`, nothing to set up); the same code runs on PostgreSQL when a
URL is given (`OMNI_DB_URL=postgresql+psycopg://user:password@host/db`), for deployments with several app processes.
The audio files stay on disk under a media root (`.cache/recordings` by default); the database keeps their paths
relative to it.

Every call that names a conversation also names its owner (the browser's random id) and acts only on conversations
that owner created: another owner's conversation is `NotFound`, exactly like one that does not exist. Any failure of
the database itself (corrupt file, locked, unreachable server, newer schema) is a `StoreError` with a message meant
for a person; the app then runs with history off.

    store = Store.open()                                  # $OMNI_DB_URL, or the SQLite file
    chat = store.create_conversation(owner)
    store.add_turn(chat.id, owner, TurnRecord("Hi, I'm Anna.", "Hello, Anna!", user_audio="abc/001-user.wav"))
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import secrets
import sqlite3
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from typing import Self

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, RowMapping, make_url
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger("omni.store")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = ROOT / ".cache" / "data" / "omni.db"
DEFAULT_MEDIA_ROOT = ROOT / ".cache" / "recordings"
TRANSCRIPT_FILE = "transcript.json"  # inside an exported zip, beside audio/
_WRITE = "omni_write"  # execution option: this transaction will write (SQLite then takes the write lock at BEGIN)


class StoreError(RuntimeError):
    """The database cannot be used (corrupt, locked, unreachable, from a newer version): run with history off."""


class NotFound(LookupError):
    """No such conversation for this owner (it may exist for another owner: the caller is not told)."""


@dataclass(frozen=True)
class StoreOptions:
    busy_timeout_s: float = 2.0  # SQLite: how long a write waits for another process's lock before StoreError
    connect_timeout_s: int = 5  # PostgreSQL: how long to wait for the server
    # SQLite in WAL mode: NORMAL keeps every committed turn through an app crash; a power cut may lose the last
    # few turns (never corrupts the file). FULL loses none, but its fsync per turn measured 4 ms against 0.75 ms
    # here with the disk busy, most of the 5 ms a turn may add.
    sqlite_synchronous: str = "NORMAL"
    retention_days: float = 7.0  # delete_older_than's default: conversations untouched this long are deleted
    title_chars: int = 60  # an untitled conversation is named after the first words of its first turn


@dataclass(frozen=True)
class ConversationRecord:
    id: str
    title: str | None
    created_at: datetime  # UTC
    updated_at: datetime  # UTC: the last turn, rename or creation
    turn_count: int = 0


@dataclass(frozen=True)
class TurnRecord:
    """One exchange. The app fills the first six fields; `add_turn` assigns `index` and `created_at`."""

    transcript: str
    reply_text: str
    user_audio: str | None = None  # a path relative to the media root, "/"-separated
    reply_audio: str | None = None
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds, as in omni.speech_model.Turn
    interrupted: bool = False  # the reply was cut: reply_text holds only what the user heard
    index: int | None = None  # 0, 1, 2, ... within the conversation
    created_at: datetime | None = None  # UTC


metadata = MetaData()
schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True),  # one row per migration applied; the schema is at the highest
    Column("applied_at", DateTime(timezone=True), nullable=False),
)
conversations = Table(
    "conversations",
    metadata,
    Column("id", String(32), primary_key=True),
    # sha256 of the owner id, not the id itself: the browser's id is what proves ownership, so a copy of the
    # database must not hand it out.
    Column("owner", String(64), nullable=False),
    Column("title", Text),
    Column("turn_count", Integer, nullable=False, default=0),  # also the next turn's index
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("conversations_by_owner", "owner", "updated_at"),
    Index("conversations_by_age", "updated_at"),
)
turns = Table(
    "turns",
    metadata,
    Column("conversation_id", String(32), ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True),
    Column("index", Integer, primary_key=True),
    Column("transcript", Text, nullable=False),
    Column("reply_text", Text, nullable=False),
    Column("user_audio", Text),
    Column("reply_audio", Text),
    Column("timings", JSON, nullable=False),
    Column("interrupted", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


def _create_tables(conn: Connection) -> None:
    # Creates the tables as this version defines them. A later version that changes a table must first freeze
    # this migration (copy today's definitions into it) and then add its own migration for the change.
    metadata.create_all(conn, tables=[conversations, turns])


# Applied in order at open, each once, in one transaction with the version rows: migration N brings the schema
# from version N-1 to N. Append new ones; never edit or reorder those a database may already have run.
MIGRATIONS: list[Callable[[Connection], None]] = [_create_tables]
MIGRATION_LOCK_KEY = 0x6F6D6E69  # PostgreSQL advisory lock: one process migrates while the others wait


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_conversation_id() -> str:
    return secrets.token_urlsafe(16)  # 128 random bits: unguessable


def _owner_hash(owner: str) -> str:
    if not owner:
        raise ValueError("owner must be a non-empty id")
    return hashlib.sha256(owner.encode()).hexdigest()


def database_url(url: str | None = None) -> URL:
    """URL, else $OMNI_DB_URL, else the SQLite file; a bare postgresql:// gets the psycopg (3) driver."""
    parsed = make_url(url or os.environ.get("OMNI_DB_URL") or f"sqlite:///{DEFAULT_DB}")
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _utc(moment: datetime) -> datetime:
    # SQLite gives back naive datetimes (we only ever write UTC); PostgreSQL gives its session's zone.
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _title_from(transcript: str, limit: int) -> str | None:
    words = " ".join(transcript.split())
    if len(words) <= limit:
        return words or None
    return words[:limit].rsplit(" ", 1)[0].rstrip(",;:.") + "…"


class Store:
    """Conversations and their turns, for many owners. Thread-safe: each call takes a pooled connection."""

    def __init__(self, engine: Engine, media_root: Path, options: StoreOptions):
        self.engine = engine
        self.media_root = media_root.resolve()
        self.options = options
        self.where = engine.url.database if engine.dialect.name == "sqlite" else engine.url.render_as_string()

    @classmethod
    def open(
        cls, url: str | None = None, media_root: Path | str = DEFAULT_MEDIA_ROOT, options: StoreOptions = StoreOptions()
    ) -> Store:
        """Connect, check the database and bring its schema up to date; StoreError if it cannot be used."""
        parsed = database_url(url)
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(parsed, connect_args={"timeout": options.busy_timeout_s})
            _use_sqlite_transactions(engine, options)
        else:
            # pre_ping: a restarted server costs one failed connection, not one failed turn.
            engine = create_engine(
                parsed, pool_pre_ping=True, connect_args={"connect_timeout": options.connect_timeout_s}
            )
        store = cls(engine, Path(media_root), options)
        try:
            store._migrate()
        except BaseException:
            engine.dispose()
            raise
        return store

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- conversations -----------------------------------------------------------------------------------------

    def create_conversation(
        self, owner: str, title: str | None = None, conversation_id: str | None = None
    ) -> ConversationRecord:
        """A new, empty conversation. CONVERSATION_ID lets the caller choose its id (the app names a conversation's
        recordings folder after it before its first turn is written); by default 128 random bits."""
        with self._transaction(write=True) as conn:
            return self._insert_conversation(conn, owner, conversation_id or new_conversation_id(), title)

    def conversations(self, owner: str) -> list[ConversationRecord]:
        """OWNER's conversations, the most recently used first."""
        query = (
            select(conversations)
            .where(conversations.c.owner == _owner_hash(owner))
            .order_by(conversations.c.updated_at.desc(), conversations.c.created_at.desc())
        )
        with self._transaction() as conn:
            return [_conversation(row) for row in conn.execute(query).mappings()]

    def conversation(self, conversation_id: str, owner: str) -> ConversationRecord:
        with self._transaction() as conn:
            return _conversation(self._owned(conn, conversation_id, owner))

    def rename(self, conversation_id: str, owner: str, title: str) -> ConversationRecord:
        with self._transaction(write=True) as conn:
            renamed = (
                update(conversations)
                .where(conversations.c.id == conversation_id, conversations.c.owner == _owner_hash(owner))
                .values(title=title, updated_at=utcnow())
                .returning(*conversations.c)
            )
            row = conn.execute(renamed).mappings().first()
        if row is None:
            raise NotFound(conversation_id)
        return _conversation(row)

    def delete(self, conversation_id: str, owner: str) -> None:
        """Delete the conversation, its turns and its audio files."""
        with self._transaction(write=True) as conn:
            self._owned(conn, conversation_id, owner)
            files = self._audio_of(conn, [conversation_id])
            conn.execute(delete(conversations).where(conversations.c.id == conversation_id))
        # Files go after the commit: a crash in between leaves stray files, never turns that point at nothing.
        self._remove_files(files)

    def conversation_ids(self) -> set[str]:
        """Every owner's conversation ids (retention of the recordings keeps the folders named after them)."""
        with self._transaction() as conn:
            return set(conn.execute(select(conversations.c.id)).scalars())

    def delete_older_than(self, days: float | None = None) -> int:
        """Retention: delete every conversation untouched for DAYS (default: options.retention_days) and its
        audio files. Returns how many conversations went."""
        cutoff = utcnow() - timedelta(days=self.options.retention_days if days is None else days)
        with self._transaction(write=True) as conn:
            ids = list(conn.execute(select(conversations.c.id).where(conversations.c.updated_at < cutoff)).scalars())
            files = self._audio_of(conn, ids)
            conn.execute(delete(conversations).where(conversations.c.id.in_(ids)))
        self._remove_files(files)
        return len(ids)

    # -- turns -------------------------------------------------------------------------------------------------

    def add_turn(self, conversation_id: str, owner: str, turn: TurnRecord, create: bool = False) -> TurnRecord:
        """Append TURN in one transaction (all of it or none of it); returns it with its index and time.

        With CREATE, the conversation is new: it is created with this id in the same transaction, so that a crash
        never leaves an empty conversation behind (an id already taken fails, as StoreError)."""
        for path in (turn.user_audio, turn.reply_audio):
            if path is not None:
                self._media_file(path)  # refuse a path outside the media root before anything is written
        now = utcnow()
        with self._transaction(write=True) as conn:
            if create:
                self._insert_conversation(conn, owner, conversation_id, None, now)
            # One statement checks the owner, locks the conversation row (so two writers get distinct indexes),
            # counts the turn and names an untitled conversation.
            index = conn.execute(
                update(conversations)
                .where(conversations.c.id == conversation_id, conversations.c.owner == _owner_hash(owner))
                .values(
                    turn_count=conversations.c.turn_count + 1,
                    updated_at=now,
                    title=func.coalesce(conversations.c.title, _title_from(turn.transcript, self.options.title_chars)),
                )
                .returning(conversations.c.turn_count - 1)
            ).scalar()
            if index is None:
                raise NotFound(conversation_id)
            stored = replace(turn, index=index, created_at=now)
            conn.execute(insert(turns).values(conversation_id=conversation_id, **asdict(stored)))
        return stored

    def cut_turn(self, conversation_id: str, owner: str, index: int, reply_text: str) -> None:
        """The user talked over the reply of turn INDEX: keep REPLY_TEXT, the words they heard, and mark it
        interrupted (a reply is often cut while it plays, after its turn was written)."""
        with self._transaction(write=True) as conn:
            self._owned(conn, conversation_id, owner)
            cut = (
                update(turns)
                .where(turns.c.conversation_id == conversation_id, turns.c.index == index)
                .values(reply_text=reply_text, interrupted=True)
            )
            if conn.execute(cut).rowcount != 1:
                raise NotFound(f"{conversation_id} turn {index}")

    def turns(self, conversation_id: str, owner: str) -> list[TurnRecord]:
        """The conversation's turns in order; NotFound if OWNER has no such conversation."""
        with self._transaction() as conn:
            self._owned(conn, conversation_id, owner)
            rows = conn.execute(
                select(turns).where(turns.c.conversation_id == conversation_id).order_by(turns.c.index)
            ).mappings()
            return [_turn(row) for row in rows]

    def export_zip(self, conversation_id: str, owner: str) -> bytes:
        """A zip of the conversation: transcript.json (every turn, no owner id) and audio/NNN-user|reply.*.

        An audio file that is gone from disk is left out and its path in the JSON is null.
        """
        chat = self.conversation(conversation_id, owner)
        buffer = io.BytesIO()
        entries = []
        with zipfile.ZipFile(buffer, "w") as archive:
            for turn in self.turns(conversation_id, owner):
                entry = asdict(turn) | {"created_at": turn.created_at.isoformat()}
                for role in ("user", "reply"):
                    relative = entry[f"{role}_audio"]
                    source = self._media_file(relative) if relative else None
                    name = f"audio/{turn.index:03d}-{role}{source.suffix}" if source and source.is_file() else None
                    if name:
                        archive.write(source, name)  # stored as is: compressed audio does not shrink
                    entry[f"{role}_audio"] = name
                entries.append(entry)
            transcript = {
                "id": chat.id,
                "title": chat.title,
                "created_at": chat.created_at.isoformat(),
                "updated_at": chat.updated_at.isoformat(),
                "turns": entries,
            }
            archive.writestr(
                TRANSCRIPT_FILE, json.dumps(transcript, indent=2, ensure_ascii=False), zipfile.ZIP_DEFLATED
            )
        return buffer.getvalue()

    # -- internals ---------------------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, write: bool = False) -> Iterator[Connection]:
        try:
            with self.engine.connect().execution_options(**{_WRITE: write}) as conn, conn.begin():
                yield conn
        except SQLAlchemyError as error:
            raise StoreError(self._explain(error)) from error

    def _explain(self, error: Exception) -> str:
        detail = _detail(error)
        if "locked" in detail:
            return (
                f"the conversation database {self.where} is locked by another writer "
                f"(waited {self.options.busy_timeout_s:g} s): {detail}"
            )
        if "not a database" in detail or "malformed" in detail:
            return self._damaged(detail)
        return f"the conversation database {self.where} failed: {detail}"

    def _damaged(self, detail: str) -> str:
        return f"the conversation database {self.where} is damaged ({detail}): move it away to start afresh"

    def _migrate(self) -> None:
        with self._transaction(write=True) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            else:
                # Damage found now turns history off at start-up, not in the middle of a conversation.
                problems = list(conn.exec_driver_sql("PRAGMA quick_check").scalars())
                if problems != ["ok"]:
                    raise StoreError(self._damaged(" ".join(" ".join(problems[:3]).split())))
            schema_version.create(conn, checkfirst=True)
            version = conn.execute(select(func.max(schema_version.c.version))).scalar() or 0
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"the conversation database {self.where} has schema version {version}, newer than this app "
                    f"knows ({len(MIGRATIONS)}): update the app"
                )
            for number in range(version + 1, len(MIGRATIONS) + 1):
                log.info("conversation database %s: migration %d", self.where, number)
                try:
                    MIGRATIONS[number - 1](conn)
                except SQLAlchemyError as error:  # the whole upgrade rolls back: the database stays as it was
                    message = f"the conversation database {self.where}: migration {number} failed: {_detail(error)}"
                    raise StoreError(message) from error
                conn.execute(insert(schema_version).values(version=number, applied_at=utcnow()))

    def _insert_conversation(
        self, conn: Connection, owner: str, conversation_id: str, title: str | None, now: datetime | None = None
    ) -> ConversationRecord:
        now = now or utcnow()
        record = ConversationRecord(conversation_id, title, now, now)
        conn.execute(insert(conversations).values(owner=_owner_hash(owner), **asdict(record)))
        return record

    def _owned(self, conn: Connection, conversation_id: str, owner: str) -> RowMapping:
        mine = select(conversations).where(
            conversations.c.id == conversation_id, conversations.c.owner == _owner_hash(owner)
        )
        row = conn.execute(mine).mappings().first()
        if row is None:
            raise NotFound(conversation_id)
        return row

    def _audio_of(self, conn: Connection, conversation_ids: list[str]) -> list[str]:
        rows = conn.execute(
            select(turns.c.user_audio, turns.c.reply_audio).where(turns.c.conversation_id.in_(conversation_ids))
        )
        return [path for row in rows for path in row if path]

    def _media_file(self, relative: str) -> Path:
        """The file RELATIVE names under the media root; ValueError for a path that would leave it."""
        path = (self.media_root / PurePosixPath(relative)).resolve()
        if PurePosixPath(relative).is_absolute() or not path.is_relative_to(self.media_root):
            raise ValueError(f"audio path {relative!r} is not inside the media root {self.media_root}")
        return path

    def _remove_files(self, relatives: Iterable[str]) -> None:
        folders: set[Path] = set()
        for relative in relatives:
            try:
                path = self._media_file(relative)
            except ValueError:
                log.warning("not deleting %r: outside the media root", relative)
                continue
            path.unlink(missing_ok=True)
            folders.add(path.parent)
        # Folders left empty (a session's or a conversation's) go too; the media root stays.
        for deepest in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            for folder in (deepest, *deepest.parents):
                if folder == self.media_root or not folder.is_relative_to(self.media_root):
                    break
                try:
                    folder.rmdir()
                except OSError:  # not empty, or already gone
                    break


def _use_sqlite_transactions(engine: Engine, options: StoreOptions) -> None:
    """SQLite settings on every new connection, and BEGIN IMMEDIATE for transactions that write.

    pysqlite's own transaction handling begins lazily (a read, then a write, can fail to upgrade its lock with
    "database is locked" at once, without waiting). SQLAlchemy's documented recipe: pysqlite does nothing, we BEGIN.
    """

    @event.listens_for(engine, "connect")
    def configure(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.isolation_level = None
        for pragma in ("journal_mode=WAL", f"synchronous={options.sqlite_synchronous}", "foreign_keys=ON"):
            dbapi_connection.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")


def _detail(error: Exception) -> str:
    """The driver's own words, first line (SQLAlchemy appends the SQL and a link)."""
    return str(getattr(error, "orig", None) or error).strip().splitlines()[0]


def _conversation(row: RowMapping) -> ConversationRecord:
    return ConversationRecord(
        id=row["id"],
        title=row["title"],
        created_at=_utc(row["created_at"]),
        updated_at=_utc(row["updated_at"]),
        turn_count=row["turn_count"],
    )


def _turn(row: RowMapping) -> TurnRecord:
    return TurnRecord(
        transcript=row["transcript"],
        reply_text=row["reply_text"],
        user_audio=row["user_audio"],
        reply_audio=row["reply_audio"],
        timings=row["timings"],
        interrupted=row["interrupted"],
        index=row["index"],
        created_at=_utc(row["created_at"]),
    )
