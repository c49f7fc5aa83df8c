"""How the domain's changes reach the database: one definition, two executors.

A domain method describes a change as a `Change`: the conversation row it applies to, filtered
by the rules that must hold (a QuerySet), the values it sets, the audit records it writes and
the stream entry it appends under the next sequence number. Nothing else decides whether the
change is made.

- `apply` makes it through the ORM, in the caller's thread (both databases).
- `apply_async` makes it on PostgreSQL from the event loop, without a thread: the same QuerySet
  compiled by Django's own compiler into one statement (UPDATE … WHERE id IN (rules) RETURNING,
  then the INSERTs, as one CTE), with the values prepared by the models' own fields. Changes
  that arrive while others are at the database go together in one transaction and one round
  trip (a group commit).

Refusals are explained by the domain (advice.models.Rule), from the same rules, once a change
was not made.
"""

# Statements are composed from SQL that Django's compiler made and from the models' own table and
# column names; every value is a parameter.
# ruff: noqa: S608
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import connection as django_connection
from django.db import connections, models, transaction
from django.db.models import F

logger = logging.getLogger(__name__)

# The row's counter of its stream, and what an entry is numbered and linked by.
COUNTER = "last_seq"
ENTRY_SEQ = "seq"
PARENT = "conversation"

# Connections per event loop and kind; a statement takes about a millisecond.
POOL_SIZE = 4


def enabled() -> bool:
    """Whether changes go through the statements here (PostgreSQL), not the ORM's thread."""
    return getattr(settings, "MESSAGE_FAST_PATH", True) and django_connection.vendor == "postgresql"


# --- the ORM, off the shared thread ------------------------------------------------------------

# Channels runs every `database_sync_to_async` call of a process on one shared thread. What a
# surge makes by the hundred runs on worker threads instead, each with its own connection; an
# advisor's actions have threads of their own, so a take never waits behind visitors arriving.
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
    """`database_sync_to_async(function)` on the workers above; each call gives its connection
    back when it ends."""
    return _on(_workers, function)


def advisor_orm(function: Any) -> Any:
    """As `orm`, on the advisors' own workers."""
    return _on(_advisor_workers, function)


# --- a change ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Guard:
    """The rows of a change as a function of its inputs: `build(*shape, *values)` returns the
    QuerySet. Changes of one shape (the same `build`, `shape` and None-ness of `values`) differ
    only in values, so their SQL is compiled once, from stand-in values, and each change's
    values take the stand-ins' places: Django's compiler writes the rules, once per shape."""

    build: Callable[..., models.QuerySet]
    shape: tuple = ()
    values: tuple = ()
    model: Any = None  # what it selects, for reads (known without building the QuerySet)

    def queryset(self) -> models.QuerySet:
        return self.build(*self.shape, *self.values)


@dataclass
class Change:
    """One conversation's state change. `rows` is the conversation filtered by every rule the
    change needs (a QuerySet, or a `Guard` that builds it); `values` what it sets; `records`
    rows written beside it (their parent is set); `entry` a stream entry appended under the
    next sequence number."""

    pk: int
    rows: models.QuerySet | Guard
    values: dict[str, Any] = field(default_factory=dict)
    records: list[models.Model] = field(default_factory=list)
    entry: models.Model | None = None

    def queryset(self) -> models.QuerySet:
        return self.rows.queryset() if isinstance(self.rows, Guard) else self.rows


def _guard_sql(change: Change) -> tuple[str, list[Any]]:
    """The SELECT of the pks of the change's rows (its rules), compiled by Django."""
    return _compiled_sql(change.rows, pks=True)


def _compiled_sql(rows: models.QuerySet | Guard, pks: bool) -> tuple[str, list[Any]]:
    """The rows' SELECT (of their pks, or of whole rows), compiled by Django; a Guard's once
    per shape."""

    def compile_(queryset: models.QuerySet) -> tuple[str, list[Any]]:
        sql, params = (queryset.values("pk") if pks else queryset).query.sql_with_params()
        return sql, list(params)

    if not isinstance(rows, Guard):
        return compile_(rows)
    key = (rows.build, rows.shape, tuple(v is None for v in rows.values), pks)
    compiled = _compiled.get(key)
    if compiled is None:
        stand_ins = tuple(None if v is None else _stand_in(n, v) for n, v in enumerate(rows.values))
        sql, params = compile_(rows.build(*rows.shape, *stand_ins))
        # Where each stand-in went, and as what (the backend may wrap a value, psycopg's
        # Int4 for an integer column).
        places = {
            i: (stand_ins.index(p), type(p))
            for i, p in enumerate(params)
            if any(p is not None and isinstance(p, type(s)) and p == s for s in stand_ins)
        }
        if len({n for n, _kind in places.values()}) < sum(s is not None for s in stand_ins):
            # A value the compiler changed on its way (no stand-in found): compile each time.
            return compile_(rows.queryset())
        compiled = _compiled[key] = (sql, params, places)
    sql, params, places = compiled
    params = list(params)
    for i, (n, kind) in places.items():
        value = rows.values[n]
        params[i] = kind(value) if isinstance(value, int) and kind is not type(value) else value
    return sql, params


_compiled: dict[Any, tuple[str, list[Any], dict[int, tuple[int, type]]]] = {}


def _model_of(change: Change) -> type[models.Model]:
    # Every change is a conversation's (PARENT of the records and entry); a Guard's QuerySet
    # is not built to learn it.
    if isinstance(change.rows, Guard):
        return _parent_model()
    return change.rows.model


@functools.cache
def _parent_model() -> type[models.Model]:
    from django.apps import apps

    return apps.get_model("advice", "Conversation")


def _stand_in(n: int, value: Any) -> Any:
    """A value of the same type no real input has."""
    if isinstance(value, bool):
        raise TypeError("a bool changes a statement's shape: pass it in `shape`")
    if isinstance(value, int):
        return 2_147_480_000 + n  # within every integer column's range, which Django checks
    if isinstance(value, str):
        return f"\x00stand-in {n}"
    if isinstance(value, datetime):
        return datetime(1901, 1, 1, tzinfo=UTC) + timedelta(microseconds=n)
    raise TypeError(f"no stand-in for {type(value).__name__}")


def apply(change: Change) -> models.Model | None:
    """Make the change through the ORM: the row as stored after it, or None when a rule did
    not hold (nothing is written)."""
    rows = change.queryset()
    model = rows.model
    values = dict(change.values)
    if change.entry is not None:
        values[COUNTER] = F(COUNTER) + 1
    with transaction.atomic():
        # The row is locked first, so the rules below read what committed before the lock, as
        # the statement of `apply_async` does (SQLite's transactions take turns instead).
        list(model.objects.select_for_update().filter(pk=change.pk).values_list("pk"))
        if not rows.update(**values):
            return None
        row = model.objects.get(pk=change.pk)
        for record in change.records:
            setattr(record, PARENT, row)
            record.save(force_insert=True)
        if change.entry is not None:
            setattr(change.entry, PARENT, row)
            setattr(change.entry, ENTRY_SEQ, getattr(row, COUNTER))
            change.entry.save(force_insert=True)
    return row


async def apply_async(change: Change) -> models.Model | None:
    """`apply`, on PostgreSQL without a thread (see `enabled`)."""
    return _finish(change, await _batched("change", _apply_together, key=_pk_of)(change))


async def apply_after(
    lock: tuple[str, Any], change: Change
) -> tuple[list[tuple], models.Model | None]:
    """`lock` (a SELECT … FOR UPDATE), then the change, in one transaction and one round trip:
    the locked rows, and the row as stored after the change (None: its rules did not hold)."""
    sql, params = _statement(change)
    async with (await _pool("advisors")).connection() as conn:
        async with conn.pipeline():
            await conn.execute("BEGIN")
            locked = await conn.execute(*lock)
            # Not prepared: a plan made for a short queue is wrong for a long one.
            cursor = await conn.execute(sql, params, prepare=False)
            await conn.execute("COMMIT")
        return await locked.fetchall(), _finish(change, await cursor.fetchone())


def locking(queryset: models.QuerySet) -> tuple[str, Any]:
    """The queryset's SELECT with FOR UPDATE."""
    return _locking(queryset)


class Locked(models.Subquery):
    """A subquery whose row is locked as it is read, skipping rows others have locked:
    SELECT … FOR UPDATE SKIP LOCKED (Django's compiler adds the clause only inside its own
    transaction, which the statements here are not)."""

    def as_sql(self, compiler: Any, connection: Any, *args: Any, **kwargs: Any) -> Any:
        sql, params = super().as_sql(compiler, connection, *args, **kwargs)
        clause = connection.ops.for_update_sql(skip_locked=True)
        # The subquery comes in parentheses: the clause goes inside them.
        return f"{sql[:-1]} {clause})", params


def _finish(change: Change, row: tuple | None) -> models.Model | None:
    if row is None:
        return None
    instance = _from_row(_model_of(change), row[1:])
    if change.entry is not None:
        setattr(change.entry, PARENT, instance)
        setattr(change.entry, ENTRY_SEQ, getattr(instance, COUNTER))
        change.entry.pk = row[0]
        change.entry._state.adding = False
        change.entry._state.db = "default"
    for record in change.records:
        setattr(record, PARENT, instance)
    return instance


def _pk_of(change: Change) -> int:
    return change.pk


async def _apply_together(changes: list[Change]) -> list[tuple | None]:
    """Changes of different conversations in one transaction, their rows locked in id order
    (so that two processes' batches never wait for each other crosswise). Should one fail, each
    goes again alone, and only the one that failed fails."""
    import psycopg

    jobs = [_job(change) for change in changes]
    # A change whose rules no row can meet (Django's compiler says so) is refused here.
    order = sorted((i for i, job in enumerate(jobs) if job), key=lambda i: changes[i].pk)
    results: list[tuple | None] = [None] * len(jobs)
    if not order:
        return results
    try:
        rows = await run_together([jobs[i] for i in order])
    except psycopg.Error:
        if len(order) == 1:
            raise
        rows = [await _alone(jobs[i]) for i in order]
    for i, row in zip(order, rows, strict=True):
        results[i] = row
    return results


async def _alone(job: list[tuple[str, Any]]) -> tuple | None:
    (row,) = await run_together([job])
    return row


def _job(change: Change) -> list[tuple[str, Any]]:
    """The change as statements (none when no row can meet its rules): one, whose rules are
    read with the row's lock."""
    try:
        return [_statement(change, lock=True)]
    except EmptyResultSet:
        return []


def _locking(queryset: models.QuerySet, skip_locked: bool = False) -> tuple[str, Any]:
    # Django's compiler refuses FOR UPDATE outside its own transaction (it asks its own
    # connection); the clause is the backend's own.
    sql, params = queryset.query.sql_with_params()
    clause = django_connection.ops.for_update_sql(skip_locked=skip_locked)
    return f"{sql} {clause}", params


def _statement(change: Change, lock: bool = False) -> tuple[str, list[Any]]:
    """UPDATE the row where the rules hold, RETURNING it; INSERT the records and the entry from
    what it returned; SELECT (entry id, the row). With `lock`, the rules are read with the
    row's lock (SELECT … FOR UPDATE): should another transaction change the row first,
    PostgreSQL reads them again on what it committed."""
    model = _model_of(change)
    guard, guard_params = _guard_sql(change)
    if lock:
        guard = f"{guard} {django_connection.ops.for_update_sql()}"
    head, tail, fields = _update_sql(model, tuple(change.values), change.entry is not None)
    params = []
    for f, value in zip(fields, change.values.values(), strict=True):
        if f.is_relation and value is not None:
            value = value.pk  # a row's key, as the ORM's update() takes it
        params.append(f.get_db_prep_save(value, django_connection))
    params += guard_params
    parts = [head, guard, tail]
    for n, record in enumerate(change.records):
        sql, record_fields = _insert_from_c(type(record), f"r{n}", model, False)
        parts.append(sql)
        params += _prepared(record, record_fields)
    entry_id = "NULL"
    if change.entry is not None:
        sql, entry_fields = _insert_from_c(type(change.entry), "m", model, True)
        parts.append(sql)
        params += _prepared(change.entry, entry_fields)
        entry_id = "(SELECT id FROM m)"
    parts.append(f" SELECT {entry_id}, c.* FROM c")
    return "".join(parts), params


@functools.cache
def _update_sql(
    model: type[models.Model], names: tuple[str, ...], counted: bool
) -> tuple[str, str, list[Any]]:
    """The UPDATE … WHERE pk IN ( and ) RETURNING … around a guard, and the fields set."""
    meta = model._meta
    table = _quote(meta.db_table)
    fields = [meta.get_field(name) for name in names]
    sets = [f"{_quote(f.column)} = %s" for f in fields]
    if counted:
        counter = _quote(meta.get_field(COUNTER).column)
        sets.append(f"{counter} = {table}.{counter} + 1")
    columns = ", ".join(f"{table}.{_quote(f.column)}" for f in meta.concrete_fields)
    pk = _quote(meta.pk.column)
    head = f"WITH c AS (UPDATE {table} SET {', '.join(sets)} WHERE {table}.{pk} IN ("
    return head, f") RETURNING {columns})", fields


@functools.cache
def _insert_from_c(
    model: type[models.Model], name: str, parent: type[models.Model], numbered: bool
) -> tuple[str, list[Any]]:
    """`, name AS (INSERT INTO … SELECT …, the instance's values, FROM c)`: its parent and (for
    an entry, `numbered`, its number and RETURNING its id) from the updated row, every other
    value a parameter; and the fields of those parameters."""
    meta = model._meta
    parent_field = meta.get_field(PARENT)
    leave_out = {parent_field.attname, ENTRY_SEQ if numbered else None}
    fields = [f for f in meta.concrete_fields if not f.primary_key and f.attname not in leave_out]
    columns = [_quote(parent_field.column)]
    expressions = [f"c.{_quote(parent._meta.pk.column)}"]
    if numbered:
        columns.append(_quote(meta.get_field(ENTRY_SEQ).column))
        expressions.append(f"c.{_quote(parent._meta.get_field(COUNTER).column)}")
    columns += [_quote(f.column) for f in fields]
    # A SELECT list gives PostgreSQL nothing to infer a parameter's type from.
    expressions += [f"%s::{f.db_type(django_connection)}" for f in fields]
    sql = (
        f", {name} AS (INSERT INTO {_quote(meta.db_table)} ({', '.join(columns)})"
        f" SELECT {', '.join(expressions)} FROM c"
    )
    sql += f" RETURNING {_quote(meta.pk.column)} AS id)" if numbered else ")"
    return sql, fields


def _prepared(instance: models.Model, fields: Sequence[Any]) -> list[Any]:
    """The instance's values for `fields` as an INSERT through the ORM would send them."""
    return [f.get_db_prep_save(f.pre_save(instance, True), django_connection) for f in fields]


def _quote(name: str) -> str:
    return django_connection.ops.quote_name(name)


def _from_row(model: type[models.Model], values: Sequence[Any]) -> models.Model:
    """An instance from a row of the model's concrete columns, converted as the ORM does."""
    fields = model._meta.concrete_fields
    converted = [
        f.from_db_value(v, None, django_connection) if hasattr(f, "from_db_value") else v
        for f, v in zip(fields, values, strict=True)
    ]
    return model.from_db("default", [f.attname for f in fields], converted)


# --- inserts and reads ---------------------------------------------------------------------------


def insert_statement(instance: models.Model, returning: str = "pk") -> tuple[str, list[Any]]:
    """INSERT of one new row, with its values prepared by its fields; RETURNING its pk."""
    meta = instance._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    columns = ", ".join(_quote(f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    sql = (
        f"INSERT INTO {_quote(meta.db_table)} ({columns}) VALUES ({placeholders})"
        f" RETURNING {_quote(meta.pk.column)}"
    )
    return sql, _prepared(instance, fields)


async def insert_async(instance: models.Model, *children: models.Model) -> None:
    """Store a new row and rows that belong to it (their PARENT is set to it) in one
    statement; new rows of the same kind that arrive meanwhile go together."""
    await _batched("insert", _insert_together)((instance, children))


async def _insert_together(items: list[tuple[models.Model, tuple]]) -> list[None]:
    rows = await run_together([[_insert_with_children(*item)] for item in items])
    for (instance, children), (pk,) in zip(items, rows, strict=True):
        instance.pk = pk
        instance._state.adding = False
        instance._state.db = "default"
        for child in children:
            setattr(child, PARENT, instance)
    return [None] * len(items)


def _insert_with_children(instance: models.Model, children: tuple) -> tuple[str, list[Any]]:
    sql, params = insert_statement(instance)
    parts = [f"WITH c AS ({sql})"]
    for n, child in enumerate(children):
        child_sql, child_fields = _insert_from_c(type(child), f"r{n}", type(instance), False)
        parts.append(child_sql)
        params += _prepared(child, child_fields)
    parts.append(f" SELECT c.{_quote(instance._meta.pk.column)} FROM c")
    return "".join(parts), params


async def select_async(rows: models.QuerySet | Guard) -> list[models.Model]:
    """The rows' model instances (a QuerySet's, or a Guard's, compiled once per shape), read
    on this event loop's connections."""
    try:
        sql, params = _compiled_sql(rows, pks=False)
    except EmptyResultSet:
        return []
    async with (await _pool()).connection() as conn:
        cursor = await conn.execute(sql, params)
        found = await cursor.fetchall()
    model = (rows.model or rows.queryset().model) if isinstance(rows, Guard) else rows.model
    return [_from_row(model, row) for row in found]


async def fetch_one(sql: str, params: list[Any]) -> tuple | None:
    """One statement on this event loop's connections, committed on its own: its first row.
    For an adapter's own tables (sms.webhooks' inbox)."""
    async with (await _pool()).connection() as conn:
        cursor = await conn.execute(sql, params)
        return await cursor.fetchone()


async def fetch_async(statements: list[tuple[str, Any]]) -> list[list[tuple]]:
    """Read-only statements in one transaction and one round trip: each one's rows."""
    async with (await _pool()).connection() as conn, conn.transaction():
        cursors = []
        async with conn.pipeline():
            for sql, params in statements:
                cursors.append(await conn.execute(sql, params, prepare=False))
        return [await cursor.fetchall() for cursor in cursors]


async def run_together(jobs: list[list[tuple[str, Any]]], kind: str = "shared") -> list[Any]:
    """Jobs (each a list of statements) in one transaction and one round trip: BEGIN, every
    statement and COMMIT go to the server together. Each job's last statement's first row."""
    async with (await _pool(kind)).connection() as conn:
        if len(jobs) == 1 and len(jobs[0]) == 1:
            # One statement is a transaction of its own (the connection autocommits), without
            # the pipeline's work.
            ((sql, params),) = jobs[0]
            cursor = await conn.execute(sql, params)
            return [await cursor.fetchone()]
        cursors = []
        async with conn.pipeline():
            await conn.execute("BEGIN")
            for job in jobs:
                for sql, params in job:
                    cursor = await conn.execute(sql, params)
                cursors.append(cursor)
            await conn.execute("COMMIT")
        return [await cursor.fetchone() for cursor in cursors]


# --- connections ---------------------------------------------------------------------------------

_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]] = (
    weakref.WeakKeyDictionary()
)
_keepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task] = (
    weakref.WeakKeyDictionary()
)
_every: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, weakref.WeakSet] = (
    weakref.WeakKeyDictionary()
)


def _connection_params() -> dict[str, Any]:
    """Django's own parameters for the default database (the test database in tests): its
    adapters (time zone, JSON as text), autocommit, statements prepared on the server."""
    params = django_connection.get_connection_params()
    params.pop("cursor_factory", None)
    params["autocommit"] = True
    params["prepare_threshold"] = 0
    return params


async def _pool(kind: str = "shared") -> Any:
    """This event loop's psycopg pool of a kind ("shared", "advisors"), closed with the loop."""
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

    loop = asyncio.get_running_loop()
    pools = _pools.get(loop)
    if pools is None:
        pools = _pools[loop] = {}
        # asyncio.Runner (and pytest-asyncio) cancel the tasks left when a loop ends: the
        # connections never outlive it, so a test database can be dropped.
        _keepers[loop] = loop.create_task(_close_with_loop(pools), name="advice-store-pools")
    opened = pools.get(kind)
    if opened is None:
        every = _every.setdefault(loop, weakref.WeakSet())

        async def remember(connection: Any) -> None:
            every.add(connection)

        pool = AsyncConnectionPool(
            kwargs=_connection_params(),
            connection_class=AsyncConnection,
            configure=remember,
            min_size=1,
            max_size=POOL_SIZE,
            open=False,
            name=f"advice-{kind}",
        )
        opened = pools[kind] = loop.create_task(_opened(pool))
    return await asyncio.shield(opened)


async def _opened(pool: Any) -> Any:
    await pool.open()
    return pool


async def _close_with_loop(pools: dict[str, Any]) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        # The loop is ending and has cancelled the pools' own tasks with this one, so a pool
        # cannot close itself in order: its connections are closed here.
        for connection in list(_every.get(asyncio.get_running_loop(), ())):
            with contextlib.suppress(Exception):
                await connection.close()


# --- group commit --------------------------------------------------------------------------------


class Batches:
    """Calls of one kind that arrive while the last is at the database go there together: a
    group commit. Under a surge a statement per arrival queued for the few connections; one
    statement for what waits keeps up. Its size follows the backlog, from one (no waiting when
    idle) to `limit`; items of one `key` go one per batch, in the order they came."""

    def __init__(self, run: Callable, limit: int = 200, key: Callable | None = None) -> None:
        self.run = run  # run(items) -> one result per item, in order
        self.limit = limit
        self.key = key
        self.waiting: list[tuple[Any, asyncio.Future]] = []
        self.draining = False
        self.drainers: set[asyncio.Task] = set()

    async def __call__(self, item: Any) -> Any:
        if not self.draining:
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
        task = asyncio.get_running_loop().create_task(self._drain(), name="advice-store-batch")
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


_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Batches]] = (
    weakref.WeakKeyDictionary()
)


def _batched(kind: str, run: Callable, key: Callable | None = None) -> Batches:
    per_loop = _batches.setdefault(asyncio.get_running_loop(), {})
    batches = per_loop.get(kind)
    if batches is None:
        batches = per_loop[kind] = Batches(run, key=key)
    return batches
