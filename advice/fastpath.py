# The SQL here is built from the models' own table and column names; every value is a parameter.
# ruff: noqa: S608
"""The hot path of the message stream: append a text, read what came after a seq.

`Conversation.post` (advice.models) defines the rules: a text is validated, stored encrypted
under the next gap-free sequence number while the conversation row is locked, only in an open
conversation, by its own advisor, and once per client id. Through the ORM it costs a thread hop
(`database_sync_to_async` runs every database call of the process on one shared thread) and six
round trips, and it collapses at 100 texts a second (docs/performance.md).

On PostgreSQL, web chats take this path instead: psycopg's native async connections (a small
set per event loop), and one statement that locks, numbers and inserts at once:

    WITH c AS (UPDATE conversation SET last_seq = last_seq + 1
               WHERE id = … AND channel = 'web' AND status IN (open) [AND advisor_id = …]
               RETURNING id, last_seq)
    INSERT INTO message (…) SELECT c.id, c.last_seq, … FROM c

The UPDATE takes the row lock, so concurrent texts of one conversation number gap-free in
commit order; the statement commits on its own (autocommit), so the ack that follows is after
commit. Whenever the statement does not store the text — the conversation is closed or not the
advisor's, the client id was used before (the unique constraint refuses it), or the
conversation is not a web chat (SMS texts must reach the outbox in the same transaction, through
the `message_posted` signal) — the call falls back to `Conversation.post`, which answers with
the rule's own error or the stored message. So the ORM path stays the one definition of the
rules, and this module only makes the common case fast. SQLite always uses the ORM path.

The same holds for what a surge makes by the hundred, each below with the ORM method that
defines it: a visitor's start (`Conversation.start_web`), the catch-up read after it
(`Conversation.messages_after`), an advisor's close (`Conversation.close`) and "next"
(`Conversation.take_next`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, NamedTuple

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection as django_connection
from django.db import connections
from django.utils import timezone

from advice import crypto, hours
from advice.choices import Channel
from advice.models import (
    TAKE_NEXT_CANDIDATES,
    AdvisorProfile,
    Conversation,
    ConversationEvent,
    Message,
    check_outcome,
    queue_changed,
    validate_text,
)

logger = logging.getLogger(__name__)

# Connections per process for the hot path; a statement takes about a millisecond, so a few
# carry thousands of texts a second.
POOL_SIZE = 4
# Advisors' takes and closes have connections of their own, as their ORM calls have threads of
# their own (below): they never wait behind the batches of a surge of visitors arriving.
ADVISOR_POOL_SIZE = 4
# Catch-up reads at most this many entries per query (as Conversation.messages_after).
PAGE = 500
# The largest seq a stream can hold (Message.seq is a PostgreSQL integer).
SEQ_MAX = 2**31 - 1


def enabled() -> bool:
    return getattr(settings, "MESSAGE_FAST_PATH", True) and django_connection.vendor == "postgresql"


# --- ORM calls off the shared thread ------------------------------------------------------------

# Channels runs every `database_sync_to_async` call of a process on one shared thread. Calls that
# a surge makes by the hundred (starting a chat, loading the queue) run on worker threads
# instead, each thread with its own connection; their races are settled by row locks in the
# database, not by a thread. Advisors' actions (taking, closing, opening a conversation) have
# threads of their own, so an advisor's take never waits in line behind hundreds of visitors
# arriving. The threads live as long as the process (threads that ended with each event loop
# held on to pooled connections in the tests).
_workers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="advice-orm")
_advisor_workers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="advice-advisor")


def _on(executor: ThreadPoolExecutor, function: Any) -> Any:
    @functools.wraps(function)
    def call_and_give_back(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        finally:
            connections.close_all()

    return database_sync_to_async(call_and_give_back, thread_sensitive=False, executor=executor)


def orm(function: Any) -> Any:
    """`database_sync_to_async(function)` on the workers above. Each call gives its pooled
    connection back when it ends, so idle workers hold none."""
    return _on(_workers, function)


def advisor_orm(function: Any) -> Any:
    """As `orm`, on the advisors' own workers."""
    return _on(_advisor_workers, function)


# --- connections --------------------------------------------------------------------------------

_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]] = (
    weakref.WeakKeyDictionary()
)
_keepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task] = (
    weakref.WeakKeyDictionary()
)


def _connection_params() -> dict[str, Any]:
    """Django's own parameters for the default database (the test database in tests), as
    psycopg's async connection takes them: Django's adapters (time zone, JSON as text), and
    autocommit, so each statement commits by itself."""
    params = django_connection.get_connection_params()
    params.pop("cursor_factory", None)
    params["autocommit"] = True
    # The statements here are few and run all the time: prepare them on the server.
    params["prepare_threshold"] = 0
    return params


class _Connections:
    """A few autocommit connections of one event loop, taken one at a time per statement."""

    def __init__(self, params: dict[str, Any], size: int) -> None:
        self.params = params
        self.idle: list[Any] = []
        self.every: set[Any] = set()
        self.slots = asyncio.Semaphore(size)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        import psycopg

        async with self.slots:
            conn = self.idle.pop() if self.idle else None
            if conn is None:
                conn = await psycopg.AsyncConnection.connect(**self.params)
                self.every.add(conn)
            try:
                yield conn
            finally:
                idle = psycopg.pq.TransactionStatus.IDLE
                if not conn.closed and conn.info.transaction_status == idle:
                    self.idle.append(conn)
                else:
                    # Broken (the server went away) or left mid-transaction: never reused.
                    self.every.discard(conn)
                    await conn.close()

    async def close(self) -> None:
        self.idle.clear()
        for conn in list(self.every):
            await conn.close()
        self.every.clear()


def _pool(kind: str = "shared") -> _Connections:
    """This event loop's connections of a kind: "shared", or "advisors" (ADVISOR_POOL_SIZE)."""
    loop = asyncio.get_running_loop()
    pools = _pools.get(loop)
    if pools is None:
        pools = _pools[loop] = {}
        # Closed with their event loop: asyncio.Runner (and pytest-asyncio) cancel the tasks
        # left when a loop ends, so the connections never outlive it (a test database can
        # then be dropped).
        _keepers[loop] = loop.create_task(_close_with_loop(pools), name="advice-fastpath-pool")
    pool = pools.get(kind)
    if pool is None:
        size = ADVISOR_POOL_SIZE if kind == "advisors" else POOL_SIZE
        pool = pools[kind] = _Connections(_connection_params(), size)
    return pool


async def _close_with_loop(pools: dict[str, _Connections]) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        for pool in pools.values():
            await pool.close()


async def fetch_one(sql: str, params: list[Any]) -> tuple | None:
    """One statement on this event loop's connections (autocommit): its first row, if any.
    For other modules' hot paths (sms.webhooks); PostgreSQL only (see `enabled`)."""
    pool = _pool()
    async with pool.connection() as conn:
        cursor = await conn.execute(sql, params)
        return await cursor.fetchone()


# --- append -------------------------------------------------------------------------------------


def _append_sql(with_advisor: bool) -> str:
    conversation_table = Conversation._meta.db_table
    message_meta = Message._meta
    columns, expressions = [], []
    for f in message_meta.concrete_fields:
        if f.primary_key:
            continue
        columns.append(f'"{f.column}"')
        if f.attname == "conversation_id":
            expressions.append("c.id")
        elif f.attname == "seq":
            expressions.append("c.last_seq")
        else:
            expressions.append("%s")
    advisor_check = " AND advisor_id = %s" if with_advisor else ""
    # Identifiers come from the models' own metadata; every value is a parameter.
    parts = [
        f'WITH c AS (UPDATE "{conversation_table}" SET last_seq = last_seq + 1',
        f" WHERE id = %s AND channel = %s AND status = ANY(%s){advisor_check}",
        " RETURNING id, last_seq)",
        f' INSERT INTO "{message_meta.db_table}" ({", ".join(columns)})',
        f" SELECT {', '.join(expressions)} FROM c",
        f' RETURNING "{message_meta.pk.column}", seq',
    ]
    return "".join(parts)


_SQL: dict[bool, str] = {}


def _insert_fields(model: Any, *leave_out: str) -> list[Any]:
    return [
        f for f in model._meta.concrete_fields if not f.primary_key and f.attname not in leave_out
    ]


def _prepared(instance: Any, fields: list[Any]) -> list[Any]:
    """The instance's values for `fields` as an INSERT through the ORM would send them."""
    return [f.get_db_prep_save(f.pre_save(instance, True), django_connection) for f in fields]


def _values(message: Message) -> list[Any]:
    """The new row's values in column order (conversation and seq come from the statement),
    each prepared by its field (defaults included, so a column another module adds to Message
    is filled as the ORM would fill it)."""
    return _prepared(message, _insert_fields(Message, "conversation_id", "seq"))


async def post(
    conversation: Conversation,
    *,
    sender: str,
    text: str,
    client_id: str = "",
    advisor: Any = None,
) -> tuple[Message, bool, list[dict]]:
    """`Conversation.post`, awaitable: returns (message, created, events) the same way and
    raises the same errors."""
    if not enabled():
        return await database_sync_to_async(conversation.post)(
            sender=sender, text=text, client_id=client_id, advisor=advisor
        )
    validate_text(text)
    # The row to insert, as the ORM would build it (defaults and all).
    message = Message(
        conversation=conversation,
        sender=sender,
        body=crypto.encrypt(text),
        client_id=client_id,
        advisor=advisor,
        created_at=timezone.now(),
    )
    message.plaintext = text  # for the event: no need to decrypt what was just encrypted
    with_advisor = sender == Message.Sender.ADVISOR
    text_to_store = _Text(conversation.pk, with_advisor, getattr(advisor, "pk", None), message)
    row = await _batched("post", _append_texts, key=_conversation_of)(text_to_store)
    if row is None:
        return await database_sync_to_async(conversation.post)(
            sender=sender, text=text, client_id=client_id, advisor=advisor
        )
    message.pk, message.seq = row
    message._state.adding = False
    message._state.db = "default"
    conversation.last_seq = message.seq
    return message, True, [message.as_event()]


# --- batches -----------------------------------------------------------------------------------


class _Batches:
    """Calls of one kind that arrive while the last is at the database go there together, as
    one statement: a group commit. Under a surge the event loop is slow to come round, and a
    connection is held for a few of its turns per statement, however quick the statement; one
    statement per arrival then queued for the few connections by the second (measured in
    docs/performance.md). One batch at a time per kind and event loop; its size follows the
    backlog, from one (no waiting when idle) to `limit`."""

    def __init__(self, run: Any, limit: int = 200, key: Any = None) -> None:
        # run(items) -> one result per item, in order
        self.run = run
        self.limit = limit
        # Items of one key go one per batch, in the order they came (the rest wait).
        self.key = key
        self.waiting: list[tuple[Any, asyncio.Future]] = []
        self.draining = False
        self.drainers: set[asyncio.Task] = set()

    async def __call__(self, item: Any) -> Any:
        if not self.draining:
            # Nothing at the database: this call goes at once, in its own task (a task of its
            # own and a future would cost two turns of a busy event loop); what arrives
            # meanwhile waits, and goes together once it is back.
            self.draining = True
            try:
                (result,) = await self.run([item])
            finally:
                if self.waiting:
                    self._start_draining()
                else:
                    self.draining = False
            return result
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((item, future))
        return await future

    def _start_draining(self) -> None:
        task = asyncio.get_running_loop().create_task(self._drain(), name="advice-fastpath-batch")
        self.drainers.add(task)
        task.add_done_callback(self.drainers.discard)

    async def _drain(self) -> None:
        batch: list[tuple[Any, asyncio.Future]] = []
        try:
            while self.waiting:
                batch, self.waiting = self._next_batch()
                try:
                    results = await self.run([item for item, _future in batch])
                except Exception as e:
                    for _item, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    continue
                for (_item, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self.draining = False
            # Cancelled (the event loop is going away): nobody waits for ever.
            for _item, future in batch + self.waiting:
                if not future.done():
                    future.cancel()
            self.waiting.clear()

    def _next_batch(self) -> tuple[list, list]:
        if self.key is None:
            return self.waiting[: self.limit], self.waiting[self.limit :]
        batch, rest, keys = [], [], set()
        for entry in self.waiting:
            key = self.key(entry[0])
            if key in keys or len(batch) >= self.limit:
                rest.append(entry)
            else:
                keys.add(key)
                batch.append(entry)
        return batch, rest


_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Batches]] = (
    weakref.WeakKeyDictionary()
)


def _batched(kind: str, run: Any, key: Any = None) -> _Batches:
    per_loop = _batches.setdefault(asyncio.get_running_loop(), {})
    batches = per_loop.get(kind)
    if batches is None:
        batches = per_loop[kind] = _Batches(run, key=key)
    return batches


def _arrays(fields: list[Any], name: str | None = None) -> str:
    """unnest() arguments: one array parameter per column, cast to the column's type
    (positional, or named `name0`, `name1`, …)."""
    return ", ".join(
        f"{_placeholder(name, i)}::{f.db_type(django_connection)}[]" for i, f in enumerate(fields)
    )


def _typed_parameters(fields: list[Any], name: str) -> str:
    """Parameters named `name0`, `name1`, …, cast to their columns' types: a SELECT list gives
    PostgreSQL nothing to infer a parameter's type from."""
    return ", ".join(f"%({name}{i})s::{f.db_type(django_connection)}" for i, f in enumerate(fields))


def _placeholder(name: str | None, i: int) -> str:
    return "%s" if name is None else f"%({name}{i})s"


def _columns(fields: list[Any], prefix: str = "") -> str:
    return ", ".join(f'{prefix}"{f.column}"' for f in fields)


# --- texts, many at once ------------------------------------------------------------------------


class _Text(NamedTuple):
    conversation_id: int
    by_advisor: bool  # the conversation must be this advisor's
    advisor_id: int | None
    message: Message


def _conversation_of(text: _Text) -> int:
    return text.conversation_id


async def _append_texts(texts: list[_Text]) -> list[tuple[int, int] | None]:
    """Store texts that arrived together, at most one per conversation (`_Batches` keeps the
    others of a conversation for the next round, in order): in one transaction and one round
    trip, a group commit, where each text had been a statement and a commit of its own (the
    largest share of the process's CPU at 1,000 texts a second, docs/performance.md, item
    31). Each one's (id, seq), or None where its conversation refused it (the ORM path then
    gives the rule's error). Should the statement fail (a client id used before: the unique
    constraint refuses the whole statement), each text goes again on its own."""
    import psycopg

    if len(texts) == 1:
        return [await _append_one(texts[0])]
    try:
        return await _append_many(texts)
    except psycopg.Error:
        return [await _append_one(text) for text in texts]


async def _append_one(text: _Text) -> tuple[int, int] | None:
    import psycopg

    sql = _SQL.get(text.by_advisor) or _SQL.setdefault(
        text.by_advisor, _append_sql(text.by_advisor)
    )
    params: list[Any] = [text.conversation_id, Channel.WEB, list(Conversation.OPEN_STATUSES)]
    if text.by_advisor:
        params.append(text.advisor_id)
    params += _values(text.message)
    try:
        async with _pool().connection() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchone()
    except psycopg.errors.UniqueViolation:
        return None  # the client id was used before: the ORM path returns the stored text


@functools.cache
def _append_many_statements() -> tuple[str, str]:
    """(lock, append): lock the conversations' rows in id order (so that two processes'
    batches never wait for each other crosswise), then append one text to each, under the
    same rules as `_append_sql`."""
    table = Conversation._meta.db_table
    message = Message._meta
    fields = _insert_fields(Message, "conversation_id", "seq")
    names = [f"m_{f.column}" for f in fields]
    columns = ", ".join(f'"{f.column}"' for f in fields)
    advisor_type = Message._meta.get_field("advisor").rel_db_type(django_connection)
    lock = f'SELECT 1 FROM "{table}" WHERE id = ANY(%(ids)s) ORDER BY id FOR UPDATE'
    append = "".join(
        [
            "WITH v AS (SELECT * FROM unnest(%(ids)s::bigint[], %(by_advisor)s::boolean[],",
            f" %(advisors)s::{advisor_type}[], {_arrays(fields, 'm')})",
            f" AS v(conversation, by_advisor, advisor, {', '.join(names)})),",
            f' c AS (UPDATE "{table}" SET last_seq = last_seq + 1 FROM v',
            f' WHERE "{table}".id = v.conversation AND channel = %(channel)s',
            " AND status = ANY(%(open)s)",
            f' AND (NOT v.by_advisor OR "{table}".advisor_id = v.advisor)',
            f' RETURNING "{table}".id, "{table}".last_seq)',
            f' INSERT INTO "{message.db_table}" ("conversation_id", "seq", {columns})',
            f" SELECT c.id, c.last_seq, {', '.join(f'v.{n}' for n in names)}",
            " FROM c JOIN v ON v.conversation = c.id",
            f' RETURNING conversation_id, "{message.pk.column}", seq',
        ]
    )
    return lock, append


async def _append_many(texts: list[_Text]) -> list[tuple[int, int] | None]:
    lock, append = _append_many_statements()
    rows = [_values(text.message) for text in texts]
    params: dict[str, Any] = {
        "ids": [text.conversation_id for text in texts],
        "by_advisor": [text.by_advisor for text in texts],
        "advisors": [text.advisor_id for text in texts],
        "channel": Channel.WEB,
        "open": list(Conversation.OPEN_STATUSES),
    }
    params.update((f"m{i}", list(column)) for i, column in enumerate(zip(*rows, strict=True)))
    async with _pool().connection() as conn:
        # One round trip, as a take's (take_next_in_one_go).
        async with conn.pipeline():
            await conn.execute("BEGIN")
            await conn.execute(lock, params)
            cursor = await conn.execute(append, params)
            await conn.execute("COMMIT")
        stored = {conversation: (pk, seq) for conversation, pk, seq in await cursor.fetchall()}
    return [stored.get(text.conversation_id) for text in texts]


# --- a visitor's start ----------------------------------------------------------------------------


@functools.cache
def _start_statement() -> tuple[str, list[Any], list[Any]]:
    """Many starts in one statement, each with its `created` entry. Returns (token_hash, id)
    of the rows inserted."""
    conversation, event = Conversation._meta, ConversationEvent._meta
    conversation_fields = _insert_fields(Conversation)
    event_fields = _insert_fields(ConversationEvent, "conversation_id")
    # Each row's conversation and event columns side by side, named apart.
    names = [f"c_{f.column}" for f in conversation_fields] + [f"e_{f.column}" for f in event_fields]
    pk = conversation.pk.column

    sql = "".join(
        [
            f"WITH v AS (SELECT * FROM unnest({_arrays(conversation_fields)},",
            f" {_arrays(event_fields)}) AS v({', '.join(names)})),",
            f' c AS (INSERT INTO "{conversation.db_table}" ({_columns(conversation_fields)})',
            f" SELECT {', '.join(names[: len(conversation_fields)])} FROM v",
            f' RETURNING "{pk}", token_hash),',
            f' e AS (INSERT INTO "{event.db_table}" ("conversation_id", {_columns(event_fields)})',
            f' SELECT c."{pk}", {", ".join(names[len(conversation_fields) :])}',
            " FROM c JOIN v ON v.c_token_hash = c.token_hash)",
            f' SELECT token_hash, "{pk}" FROM c',
        ]
    )
    return sql, conversation_fields, event_fields


async def _insert_starts(starts: list[Conversation]) -> list[int | None]:
    """Store the conversations; each one's new id."""
    sql, conversation_fields, event_fields = _start_statement()
    rows = [
        _prepared(conversation, conversation_fields)
        + _prepared(conversation.created_event(), event_fields)
        for conversation in starts
    ]
    columns = [list(column) for column in zip(*rows, strict=True)]
    pool = _pool()
    async with pool.connection() as conn:
        cursor = await conn.execute(sql, columns)
        stored = dict(await cursor.fetchall())
    return [stored.get(conversation.token_hash) for conversation in starts]


async def start_web(options: dict[str, Any]) -> tuple[Any, Any] | None:
    """`Conversation.start_web(**options)` while the line is open, batched with the other
    starts of the moment into one statement on this loop's connections: (the line's status,
    what start_web returns, or None while the line is closed). None when this path cannot
    tell (not PostgreSQL): the caller takes the ORM path, which decides. Whether the line is
    open comes from the process's cache (advice.hours.cached_line_status)."""
    if not enabled():
        return None
    county = options.get("county", "")
    status = hours.fresh_line_status(county) or await orm(hours.cached_line_status)(county)
    if not status.open:
        return status, None
    conversation, token = Conversation.new_web(**options)
    pk = await _batched("start", _insert_starts)(conversation)
    if pk is None:
        return None
    conversation.pk = pk
    conversation._state.adding = False
    conversation._state.db = "default"
    return status, (conversation, token, [queue_changed()])


# --- catch-up -------------------------------------------------------------------------------------


@functools.cache
def _pages_sql() -> str:
    """A page of the stream after a seq, for each of many (conversation, seq) at once."""
    meta = Message._meta
    columns = ", ".join(f'm."{f.column}"' for f in meta.concrete_fields)
    return (
        f"SELECT w.n, {columns}"
        " FROM unnest(%s::bigint[], %s::integer[]) WITH ORDINALITY AS w(id, after, n)"
        f' CROSS JOIN LATERAL (SELECT * FROM "{meta.db_table}"'
        "  WHERE conversation_id = w.id AND seq > w.after ORDER BY seq LIMIT %s) AS m"
        " ORDER BY w.n, m.seq"
    )


def _entries_orm(conversation_id: int, after: int, limit: int) -> list[dict[str, Any]]:
    conversation = Conversation.objects.get(pk=conversation_id)
    return [m.as_event() for m in conversation.messages_after(after, limit)]


async def _read_pages(wanted: list[tuple[Conversation, int]]) -> list[list[dict[str, Any]]]:
    pool = _pool()
    async with pool.connection() as conn:
        cursor = await conn.execute(
            _pages_sql(),
            # A client may claim any seq: past the column's range there is nothing after it.
            [[c.pk for c, _after in wanted], [min(after, SEQ_MAX) for _c, after in wanted], PAGE],
        )
        rows = await cursor.fetchall()
    fields = Message._meta.concrete_fields
    converters = [(i, f.from_db_value) for i, f in enumerate(fields) if hasattr(f, "from_db_value")]
    names = [f.attname for f in fields]
    pages: list[list[dict[str, Any]]] = [[] for _ in wanted]
    for n, *values in rows:
        for i, convert in converters:
            values[i] = convert(values[i], None, django_connection)
        entry = Message.from_db("default", names, values)
        entry.conversation = wanted[n - 1][0]
        pages[n - 1].append(entry.as_event())
    return pages


async def entries_after(conversation: Conversation, after: int) -> list[dict[str, Any]]:
    """The stream's entries after seq `after`, at most PAGE of them, as events (what
    `messages_after` gives). On PostgreSQL, read together with the other catch-ups of the
    moment: in a surge every arriving visitor catches up once."""
    if not enabled():
        return await database_sync_to_async(_entries_orm)(conversation.pk, after, PAGE)
    return await _batched("catch-up", _read_pages)((conversation, after))


# --- an advisor's close -------------------------------------------------------------------------


@functools.cache
def _close_statement() -> tuple[str, list[Any], list[Any], list[Any]]:
    """`Conversation.close` as one statement: end the conversation if it is still active and
    the advisor's, record the close and append the "closed" entry under the next seq; the
    entry's id and the whole conversation row come back (nothing, when it was not the
    advisor's active conversation). Returns (statement, conversation fields, event fields,
    entry fields)."""
    conversation, event, entry = Conversation._meta, ConversationEvent._meta, Message._meta
    table, pk = conversation.db_table, conversation.pk.column
    closing = list(Conversation().closing_fields(""))
    conversation_fields = list(conversation.concrete_fields)
    event_fields = _insert_fields(ConversationEvent, "conversation_id")
    entry_fields = _insert_fields(Message, "conversation_id", "seq")

    setting = ", ".join(
        f'"{conversation.get_field(name).column}" = %(set_{name})s' for name in closing
    )
    sql = "".join(
        [
            f'WITH c AS (UPDATE "{table}" SET {setting}, last_seq = last_seq + 1',
            f"  WHERE \"{pk}\" = %(id)s AND status = '{Conversation.Status.ACTIVE}'",
            "  AND advisor_id = %(advisor)s",
            f"  RETURNING {_columns(conversation_fields)}),",
            f' e AS (INSERT INTO "{event.db_table}" (conversation_id, {_columns(event_fields)})',
            f'  SELECT c."{pk}", {_typed_parameters(event_fields, "e")} FROM c),',
            f' m AS (INSERT INTO "{entry.db_table}"',
            f"  (conversation_id, seq, {_columns(entry_fields)})",
            f'  SELECT c."{pk}", c.last_seq, {_typed_parameters(entry_fields, "m")} FROM c',
            f'  RETURNING "{entry.pk.column}")',
            f' SELECT m."{entry.pk.column}", {_columns(conversation_fields, "c.")} FROM c, m',
        ]
    )
    return sql, conversation_fields, event_fields, entry_fields


async def close(conversation: Conversation, advisor: Any, outcome: str) -> list[dict]:
    """`Conversation.close(advisor, outcome)`, awaitable: the same rows, the same events, the
    same errors. On PostgreSQL one statement on the advisors' connections, instead of seven
    round trips on a thread (a twelfth of the surge's CPU, docs/performance.md, item 30);
    whenever it closes nothing, the ORM path answers with its own error."""
    if not enabled():
        return await advisor_orm(conversation.close)(advisor, outcome)
    check_outcome(outcome)
    sql, conversation_fields, event_fields, entry_fields = _close_statement()
    event, entry = conversation.close_records(advisor, outcome)
    params: dict[str, Any] = {"id": conversation.pk, "advisor": advisor.pk}
    for name, value in conversation.closing_fields(outcome).items():
        field = Conversation._meta.get_field(name)
        params[f"set_{name}"] = field.get_db_prep_save(value, django_connection)
    params.update((f"e{i}", v) for i, v in enumerate(_prepared(event, event_fields)))
    params.update((f"m{i}", v) for i, v in enumerate(_prepared(entry, entry_fields)))
    async with _pool("advisors").connection() as conn:
        cursor = await conn.execute(sql, params)
        row = await cursor.fetchone()
    if row is None:
        return await advisor_orm(conversation.close)(advisor, outcome)
    entry_pk, *row_of_conversation = row
    closed = _from_row(Conversation, conversation_fields, row_of_conversation)
    # The caller's instance is the one the socket keeps: it takes the stored state.
    for field in conversation_fields:
        setattr(conversation, field.attname, getattr(closed, field.attname))
    event.conversation = entry.conversation = conversation
    entry.pk, entry.seq = entry_pk, conversation.last_seq
    entry._state.adding = False
    entry._state.db = "default"
    return conversation.closed_events(entry)


# --- an advisor's "next" -------------------------------------------------------------------------


@functools.cache
def _take_next_statements() -> tuple[str, str, list[Any], list[Any], list[Any]]:
    """`Conversation.take_next` as two statements in one transaction:

    1. lock the advisor's profile, so concurrent takes by one advisor count their active
       conversations one after the other (as `_check_capacity` does);
    2. under that lock (with a snapshot taken after it: READ COMMITTED), choose among the
       first TAKE_NEXT_CANDIDATES of the queue by take_next's preference, lock the first that
       nobody else is taking (SKIP LOCKED), make it the advisor's, record the take and append
       the "advisor joined" entry under the next seq; the whole conversation row comes back,
       after the entry's id.

    Returns (lock, take, conversation fields, event fields, entry fields)."""
    conversation, profile = Conversation._meta, AdvisorProfile._meta
    event, entry = ConversationEvent._meta, Message._meta
    table, pk = conversation.db_table, conversation.pk.column
    conversation_fields = list(conversation.concrete_fields)
    event_fields = _insert_fields(ConversationEvent, "conversation_id")
    entry_fields = _insert_fields(Message, "conversation_id", "seq")
    waiting, active = Conversation.Status.WAITING, Conversation.Status.ACTIVE

    lock = f'SELECT 1 FROM "{profile.db_table}" WHERE user_id = %(advisor)s FOR UPDATE'
    # Conversation.fit_for, the preference lapsing for the overdue (take_next); `languages`
    # as AdvisorProfile.spoken reads it (anything but a JSON array speaks nothing).
    needed = "CASE WHEN c.interpreter_needed THEN c.interpreter_language ELSE c.language END"
    fit = (
        "CASE WHEN c.created_at <= %(overdue)s THEN 0"
        f" WHEN jsonb_typeof(p.languages) = 'array' AND p.languages ? ({needed}) THEN 0"
        " WHEN c.interpreter_needed THEN 2 ELSE 1 END"
    )
    take = "".join(
        [
            f'WITH p AS (SELECT capacity, languages FROM "{profile.db_table}"',
            " WHERE user_id = %(advisor)s),",
            f' pick AS (SELECT c."{pk}" FROM "{table}" c, p',
            # The head of the queue as an array, read once: as `IN (SELECT …)`, a plan made
            # while the table was small (a statement is prepared once per connection) read the
            # head again for every waiting row, 20-60 ms a take with a thousand waiting.
            f' WHERE c."{pk}" = ANY (ARRAY(SELECT "{pk}" FROM "{table}"',
            f"  WHERE status = '{waiting}'",
            f'  ORDER BY urgent DESC, created_at, "{pk}" LIMIT {TAKE_NEXT_CANDIDATES}))',
            f" AND c.status = '{waiting}'",
            f' AND (SELECT count(*) FROM "{table}" WHERE advisor_id = %(advisor)s',
            f"  AND status = '{active}') < p.capacity",
            f' ORDER BY c.urgent DESC, {fit}, c.created_at, c."{pk}"',
            " LIMIT 1 FOR UPDATE OF c SKIP LOCKED),",
            f" claim AS (UPDATE \"{table}\" SET status = '{active}', advisor_id = %(advisor)s,",
            "  taken_at = %(taken_at)s, last_seq = last_seq + 1",
            f'  FROM pick WHERE "{table}"."{pk}" = pick."{pk}"',
            f"  RETURNING {_columns(conversation_fields, f'"{table}".')}),",
            f' e AS (INSERT INTO "{event.db_table}"',
            f"  (conversation_id, {_columns(event_fields)})",
            f'  SELECT claim."{pk}", {_typed_parameters(event_fields, "e")} FROM claim),',
            f' m AS (INSERT INTO "{entry.db_table}"',
            f"  (conversation_id, seq, {_columns(entry_fields)})",
            f'  SELECT claim."{pk}", claim.last_seq, {_typed_parameters(entry_fields, "m")}',
            "  FROM claim",
            f'  RETURNING "{entry.pk.column}")',
            f' SELECT m."{entry.pk.column}", {_columns(conversation_fields, "claim.")}',
            " FROM claim, m",
        ]
    )
    return lock, take, conversation_fields, event_fields, entry_fields


def _from_row(model: Any, fields: list[Any], values: list[Any]) -> Any:
    """A model instance from a row of `fields`' columns, converted as the ORM converts them."""
    values = [
        f.from_db_value(v, None, django_connection) if hasattr(f, "from_db_value") else v
        for f, v in zip(fields, values, strict=True)
    ]
    return model.from_db("default", [f.attname for f in fields], values)


async def take_next(advisor: Any) -> tuple[Conversation, list[dict]]:
    """`Conversation.take_next(advisor)`, awaitable: the same choice, the same rows, the same
    events; on PostgreSQL without a thread (a take then waits neither for a worker thread nor
    for turns of the interpreter lock, which a surge of arriving visitors keeps busy).
    Whenever nothing is taken here (nobody waiting, the advisor at capacity or without a
    profile yet) the ORM path answers, with its own error or, had the queue moved meanwhile,
    a take."""
    taken = await take_next_in_one_go(advisor) if enabled() else None
    if taken is None:
        return await advisor_orm(Conversation.take_next)(advisor)
    return taken


async def take_next_in_one_go(advisor: Any) -> tuple[Conversation, list[dict]] | None:
    """take_next's statements (PostgreSQL): what take_next returns, or None when they took
    nothing."""
    conversation_fields = _take_next_statements()[2]
    # The rows the take writes beside the conversation's, built as the ORM path builds them.
    event, entry = Conversation().take_records(advisor)
    row = await _take_line()(_take_parameters(advisor, event, entry))
    if row is None:
        return None
    entry_pk, *row_of_conversation = row
    conversation = _from_row(Conversation, conversation_fields, row_of_conversation)
    conversation.advisor = advisor
    event.conversation = entry.conversation = conversation
    entry.pk, entry.seq = entry_pk, conversation.last_seq
    entry._state.adding = False
    entry._state.db = "default"
    return conversation, conversation.taken_events(entry)


def _take_parameters(advisor: Any, event: ConversationEvent, entry: Message) -> dict[str, Any]:
    *_statements, event_fields, entry_fields = _take_next_statements()
    taken_at = timezone.now()
    params = {
        "advisor": advisor.pk,
        "taken_at": taken_at,
        "overdue": taken_at - timedelta(minutes=settings.TAKE_NEXT_PREFERENCE_MINUTES),
    }
    params.update((f"e{i}", v) for i, v in enumerate(_prepared(event, event_fields)))
    params.update((f"m{i}", v) for i, v in enumerate(_prepared(entry, entry_fields)))
    return params


# A take that never ran: one before it in the same round trip failed, and the server skipped
# the rest of the round trip. Nothing of it was done; the ORM path takes over.
_SKIPPED = object()


async def _run_takes(conn: Any, takes: list[dict[str, Any]]) -> list[Any]:
    """Each take in a transaction of its own, all in one round trip: BEGIN, the statements and
    COMMIT of every take go to the server together and come back at the pipeline's end
    (conn.transaction() would wait for the server at BEGIN and at COMMIT).

    Each take's outcome, in order: its row (None: it took nothing) once its COMMIT is
    confirmed; the error, for the take that failed; _SKIPPED for those after it, which the
    server did not run. Should the connection fail instead, a take whose COMMIT was not
    confirmed may or may not have been made, and gets the error. A connection left in a failed
    transaction is closed by the pool."""
    import psycopg

    lock, take = _take_next_statements()[:2]
    steps: list[tuple[Any, Any]] = []
    failure: psycopg.Error | None = None
    try:
        async with conn.pipeline():
            for params in takes:
                await conn.execute("BEGIN")
                await conn.execute(lock, params)
                steps.append((await conn.execute(take, params), await conn.execute("COMMIT")))
    except psycopg.Error as e:
        failure = e
    connection_lost = isinstance(failure, psycopg.OperationalError) or conn.closed
    outcomes: list[Any] = []
    failed = False
    for n in range(len(takes)):
        if n < len(steps) and steps[n][1].statusmessage == "COMMIT":
            outcomes.append(await steps[n][0].fetchone())
        elif connection_lost or not failed:
            failed = True
            outcomes.append(failure)
        else:
            outcomes.append(_SKIPPED)
    return outcomes


class _TakeLine:
    """Takes that wait for a connection go to the database together: a connection that comes
    free runs its share of what waits then, in one round trip (`_run_takes`). Twenty advisors
    pressing "next" at once otherwise queued for four connections five deep, a round trip
    through a busy event loop each (docs/performance.md, item 28).

    One runner per take that finds every runner busy, at most ADVISOR_POOL_SIZE waiting for a
    connection; when a runner gets one, it takes its part of the takes then waiting, sharing
    them with the runners still waiting (the database works on a few connections side by
    side)."""

    def __init__(self) -> None:
        self.pool = _pool("advisors")
        self.waiting: list[tuple[dict[str, Any], asyncio.Future]] = []
        self.unserved = 0  # runners that have not taken their share yet
        self.runners: set[asyncio.Task] = set()
        self.warming: asyncio.Task | None = None
        self.wanted = 0  # connections to have open ahead (warm_takes)

    async def __call__(self, params: dict[str, Any]) -> tuple | None:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.append((params, future))
        if self.unserved < ADVISOR_POOL_SIZE:
            self.unserved += 1
            runner = loop.create_task(self._run(), name="advice-fastpath-takes")
            self.runners.add(runner)
            runner.add_done_callback(self.runners.discard)
        return await future

    def _share(self) -> list[tuple[dict[str, Any], asyncio.Future]]:
        share = -(-len(self.waiting) // self.unserved)  # rounded up
        self.unserved -= 1
        batch, self.waiting = self.waiting[:share], self.waiting[share:]
        return batch

    async def _run(self) -> None:
        batch = None
        try:
            async with self.pool.connection() as conn:
                batch = self._share()
                if not batch:
                    return  # the runners before this one took them all
                outcomes = await _run_takes(conn, [params for params, _future in batch])
        except BaseException as e:
            if batch is None:  # no connection: this runner's share fails with it
                batch = self._share()
            for _params, future in batch:
                if not future.done():
                    if isinstance(e, Exception):
                        future.set_exception(e)
                    else:
                        future.cancel()
            if not isinstance(e, Exception):
                raise
            return
        for (_params, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(None if outcome is _SKIPPED else outcome)

    async def warm(self, count: int) -> None:
        """Have `count` connections open ahead of the takes (at most ADVISOR_POOL_SIZE), each
        with take_next's statements prepared and the tables they touch in its caches (run for
        nobody, they take nothing): the first takes after a start were the slowest of a
        surge."""
        from django.contrib.auth import get_user_model

        # Parameters of the same types as a real take's (psycopg prepares a statement per
        # query and parameter types), for an advisor who does not exist.
        nobody = get_user_model()(pk=0)
        params = _take_parameters(nobody, *Conversation().take_records(nobody))

        async def open_one() -> None:
            async with self.pool.connection() as conn:
                await _run_takes(conn, [params])

        # All at once: a connection already open is taken by one of them (and run again, for
        # nothing), the others open new ones.
        await asyncio.gather(*(open_one() for _ in range(min(count, ADVISOR_POOL_SIZE))))


_take_lines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _TakeLine] = (
    weakref.WeakKeyDictionary()
)


def _take_line() -> _TakeLine:
    loop = asyncio.get_running_loop()
    line = _take_lines.get(loop)
    if line is None:
        line = _take_lines[loop] = _TakeLine()
    return line


def warm_takes(advisors: int) -> None:
    """`advisors` are connected to this process: have a connection ready for each of their
    takes, up to ADVISOR_POOL_SIZE (in the background; PostgreSQL only). One per advisor,
    not the pool's size at once: tests run many event loops side by side, each with its
    connections, where a server has one."""
    if not enabled():
        return
    line = _take_line()
    line.wanted = min(advisors, ADVISOR_POOL_SIZE)
    if len(line.pool.every) < line.wanted and line.warming is None:
        line.warming = asyncio.get_running_loop().create_task(
            _warm(line), name="advice-fastpath-warm"
        )


async def _warm(line: _TakeLine) -> None:
    try:
        # Advisors who connected meanwhile count too (a few rounds at most: a connection
        # that does not stay open is not opened again and again).
        for _round in range(3):
            if len(line.pool.every) >= line.wanted:
                break
            await line.warm(line.wanted)
    except Exception:
        logger.warning("could not open the takes' connections ahead", exc_info=True)
    finally:
        line.warming = None
