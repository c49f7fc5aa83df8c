"""The advisor's socket, /ws/advisor/: the live queue and the advisor's conversations.

Only an OTP-verified session that has not run out gets in; anything else is refused during the
handshake. The socket lives no longer than its session: it closes (code 4401) when the session
is logged out, revoked, or runs out (console.auth), and what the advisor does on it counts as
activity for the session's idle limit."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from django.db.models import Q

from advice import store, streams
from advice.choices import INTERPRETER_LANGUAGES, Channel, Outcome
from advice.contacts import with_contacts
from advice.models import AdvisorProfile, Conversation, DomainError, Message, QueueSnapshot
from console.auth import (
    LAST_ACTIVE_AT,
    record_socket_activity,
    session_deadline,
    session_ended_because,
    session_fingerprint,
    start_missing_session_clock,
    valid_session_deadline,
    verified_advisor_from_scope,
)
from console.frames import InterpreterAndNoteFrames
from realtime.sockets import (
    JsonSocket,
    ProtocolError,
    client_id_field,
    encode_frame,
    field,
    seq_field,
)

MAX_RESUME_CONVERSATIONS = 100
# The socket writes its activity into the session at most this often (seconds).
ACTIVITY_WRITE_INTERVAL = 60
# Close code for "your session has ended": the console goes to the login page.
SESSION_ENDED = 4401

logger = logging.getLogger(__name__)

Handler = Callable[[Any, dict[str, Any]], Awaitable[None]]


def advisor_action(handler: Handler) -> Handler:
    """A frame the advisor sends on purpose (not the heartbeat, not an automatic resume): it
    keeps the session from idling out.

    The activity is written once the action has answered, before the socket's next frame
    (`receive`), so that no take waits for a session write.
    That the session is still running was checked when the frame arrived; a logout ends the
    socket through its own event."""

    @wraps(handler)
    async def wrapper(self: AdvisorConsumer, frame: dict[str, Any]) -> None:
        self.acted = True
        await handler(self, frame)

    return wrapper


class AdvisorConsumer(InterpreterAndNoteFrames, JsonSocket):
    # The frame being handled was an advisor_action: it counts as activity.
    acted = False
    frame_types = (
        frozenset(
            {
                "resume",
                "take",
                "take_next",
                "send",
                "typing",
                "mark_urgent",
                "set_interpreter",
                "close",
                "ping",
            }
        )
        | InterpreterAndNoteFrames.extra_frame_types
    )

    # The domain's refusals are answered like the kernel's own; streams are read by the domain.
    refused = (*JsonSocket.refused, DomainError)
    catch_up_page = streams.PAGE

    async def entries_after(self, conversation_id: int, after: int) -> list[dict[str, Any]]:
        return await streams.entries_after(
            conversation_id, after, self.following.get(conversation_id)
        )

    async def connect(self) -> None:
        self.user = await store.advisor_orm(_verified_advisor_with_time_left)(self.scope)
        if self.user is None:
            await self.close(code=4403)  # before accept: the handshake fails with 403
            return
        await super().connect()
        self.advisor_id = self.user.pk
        self.session_key = self.scope["session"].session_key
        self.session_deadline = session_deadline(self.scope["session"])
        # The session's own record of the last activity (a page, another socket): written
        # again once the advisor acts ACTIVITY_WRITE_INTERVAL after it.
        self.activity_written_at = float(self.scope["session"].get(LAST_ACTIVE_AT, 0))
        self.session_task = asyncio.create_task(self._close_when_session_ends())
        self.profile = await store.advisor_orm(AdvisorProfile.for_user)(self.user)
        # public id -> conversation, for the conversations this socket follows.
        self.conversations: dict[str, Conversation] = {}
        # public id -> the summary this socket showed when it took the conversation itself.
        self.shown_by_take: dict[str, dict[str, Any]] = {}
        self.hub.add_advisor(self)
        await self.accept()
        await self.send_frame(
            {
                "type": "hello",
                "advisor": {
                    "id": self.user.pk,
                    "name": str(self.profile),
                    "capacity": self.profile.capacity,
                    "languages": self.profile.languages,
                },
            }
        )
        self.hub.request_queue_refresh()

    async def disconnect(self, code: int) -> None:
        await super().disconnect(code)
        if hasattr(self, "session_task"):
            self.session_task.cancel()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Every frame, the heartbeat too, first finds the session still running: a session
        # that ran out while the server was busy elsewhere ends here at the latest.
        if await self._session_still_running():
            await super().receive(text_data=text_data, bytes_data=bytes_data)
            if self.acted:
                self.acted = False
                await self.note_activity()

    # --- frames ----------------------------------------------------------------------------

    async def handle_resume(self, frame: dict[str, Any]) -> None:
        """Follow the advisor's open conversations, sending each from the client's last seq.
        A conversation the client names that ended meanwhile is followed too, so the client
        reads how it ended."""
        seen = field(frame, "conversations", dict, default={})
        if len(seen) > MAX_RESUME_CONVERSATIONS:
            raise ProtocolError("invalid_field", "Too many conversations in 'conversations'.")
        last_seqs: dict[str, int] = {}
        for key, value in seen.items():
            _check_public_id(key, "conversations")
            last_seqs[key] = seq_field({"s": value}, "s")
        mine = await store.advisor_orm(_conversations_to_resume)(self.user, list(last_seqs))
        for conversation in mine:
            await self._follow(conversation, last_seqs.get(str(conversation.public_id), 0))

    @advisor_action
    async def handle_take(self, frame: dict[str, Any]) -> None:
        conversation = await self._lookup(frame, must_be_mine=False)
        # Off the shared database thread, so an advisor's take does not wait behind a surge of
        # visitors arriving.
        await store.advisor_orm(conversation.take)(self.user)
        await self._follow_taken(conversation)

    @advisor_action
    async def handle_take_next(self, frame: dict[str, Any]) -> None:
        conversation, _events = await Conversation.atake_next(self.user)
        await self._follow_taken(conversation)

    async def _follow_taken(self, conversation: Conversation) -> None:
        """This socket follows what it has just taken at once, with the conversation it has in
        hand; the advisor's other sockets follow when the event reaches them. (Through the
        event this socket would load the conversation again first: under load every wait
        in the take's path is a turn of a busy event loop.)"""
        public_id = str(conversation.public_id)
        self.conversations[public_id] = conversation
        # The take's own event reaches this socket too; it needs no second showing.
        self.shown_by_take[public_id] = conversation.summary()
        # Nothing to show beside the stream yet: notes and interpreter invitations belong to
        # the conversation's advisor (returncodes.save_note, interpreters.invite), and until
        # this take it had none.
        await self._follow(conversation, 0, extras=False)

    @advisor_action
    async def handle_send(self, frame: dict[str, Any]) -> None:
        # A conversation this socket follows needs no lookup: posting checks that it is still
        # open and still this advisor's (Conversation.post_rules).
        public_id = frame.get("conversation")
        conversation = (
            self.conversations.get(public_id) if isinstance(public_id, str) else None
        ) or await self._lookup(frame)
        client_id = client_id_field(frame)
        text = field(frame, "text", str)
        message, _created, _events = await conversation.apost(
            sender=Message.Sender.ADVISOR,
            text=text,
            client_id=client_id,
            advisor=self.user,
        )
        await self.send_frame(
            {
                "type": "ack",
                "conversation": str(conversation.public_id),
                "client_id": client_id,
                "seq": message.seq,
            }
        )

    @advisor_action
    async def handle_typing(self, frame: dict[str, Any]) -> None:
        conversation = await self._lookup(frame)
        self.publish(
            [
                {
                    "kind": "typing",
                    "conversation": conversation.pk,
                    "public_id": str(conversation.public_id),
                    "from": "advisor",
                }
            ]
        )

    @advisor_action
    async def handle_mark_urgent(self, frame: dict[str, Any]) -> None:
        conversation = await self._lookup(frame, must_be_mine=False)
        urgent = field(frame, "urgent", bool, default=True)
        await store.advisor_orm(conversation.set_urgent)(self.user, urgent)

    @advisor_action
    async def handle_set_interpreter(self, frame: dict[str, Any]) -> None:
        conversation = await self._lookup(frame)
        needed = field(frame, "needed", bool)
        language = field(
            frame,
            "language",
            str,
            default="",
            choices=[""] + [code for code, _name in INTERPRETER_LANGUAGES],
        )
        await store.advisor_orm(conversation.set_interpreter)(self.user, needed, language)

    @advisor_action
    async def handle_close(self, frame: dict[str, Any]) -> None:
        # A conversation this socket follows needs no lookup: closing checks that it is still
        # active and this advisor's (Conversation.close), as posting does.
        public_id = frame.get("conversation")
        conversation = (
            self.conversations.get(public_id) if isinstance(public_id, str) else None
        ) or await self._lookup(frame)
        outcome = field(frame, "outcome", str, choices=Outcome.values)
        await conversation.aclose(self.user, outcome)

    # --- events ----------------------------------------------------------------------------

    async def on_event(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "message":
            await self.on_message_event(event)
        elif kind == "conversation":
            summary = event["summary"]
            public_id = summary["id"]
            if self.shown_by_take.pop(public_id, None) == summary:
                return
            if summary["advisor"] == self.advisor_id and public_id not in self.conversations:
                # Just taken (here or on another of the advisor's sockets): follow it from the
                # start, so the advisor reads what the visitor wrote while waiting.
                conversation = await store.advisor_orm(Conversation.objects.get)(
                    pk=event["conversation"]
                )
                await self._follow(conversation, 0)
                return
            (summary,) = await self._with_contacts([summary])
            await self.send_frame({"type": "conversation", "conversation": summary})
        elif kind == "delivery" and event["public_id"] in self.conversations:
            # An SMS answer's delivery moved on (sms.outbox): queued, sent, delivered, failed.
            await self.send_frame(
                {
                    "type": "delivery",
                    "conversation": event["public_id"],
                    "seq": event["seq"],
                    "delivery": event["delivery"],
                    "delivery_error": event["delivery_error"],
                }
            )
        elif kind == "typing" and event.get("from") != "advisor":
            await self.send_frame(
                {
                    "type": "typing",
                    "conversation": event["public_id"],
                    "from": event["from"],
                }
            )
        elif kind == "interpreter" and event["public_id"] in self.conversations:
            await self.on_interpreter_event(event)
        elif kind == "logout" and event.get("advisor") == self.advisor_id:
            # One of the advisor's sessions ended (a logout, a deactivated account): if it is
            # this socket's, close now; if the event does not say which, ask the database.
            if event.get("session") and event["session"] == session_fingerprint(self.session_key):
                await self._end(SESSION_ENDED)
                return
            self.session_deadline = 0.0
            await self._session_still_running()

    async def on_queue(self, snapshot: QueueSnapshot) -> None:
        # Encoded once per snapshot (and per right to see numbers) for all the advisors of the
        # process: with many advisors and a long queue, per-socket encoding costs seconds.
        key = ("advisor-queue", self.profile.can_see_phone_numbers)
        text = snapshot.shared.get(key)
        if text is None:
            text = snapshot.shared[key] = encode_frame(
                {
                    "type": "queue",
                    "waiting": await self._with_contacts(snapshot.summaries(), cache=snapshot),
                    "waiting_total": snapshot.total(),
                    "average_wait_seconds": snapshot.average_wait_seconds,
                }
            )
        await self.send_text(text)

    def message_frame(self, event: dict[str, Any]) -> dict[str, Any]:
        frame = {
            "type": "message",
            "conversation": event["public_id"],
            "seq": event["seq"],
            "from": event["sender"],
            "sent_at": event["sent_at"],
        }
        if event["event"]:
            frame["event"] = event["event"]
            if event.get("data"):
                frame["data"] = event["data"]
        else:
            frame["text"] = event["text"]
            # SMS (sms/): how many items an MMS carried; how an answer's texts are doing.
            for key in ("attachments", "delivery", "delivery_error"):
                if key in (event.get("data") or {}):
                    frame[key] = event["data"][key]
        if event["sender"] == Message.Sender.ADVISOR:
            frame["advisor"] = event["advisor"]
            if event["client_id"]:
                frame["client_id"] = event["client_id"]
        return frame

    # --- the session -----------------------------------------------------------------------

    async def note_activity(self) -> bool:
        """Move the session's idle limit on (at most once every ACTIVITY_WRITE_INTERVAL);
        False, and the socket ended, when the session has ended meanwhile."""
        now = time.time()
        if now - self.activity_written_at < ACTIVITY_WRITE_INTERVAL:
            return True
        self.activity_written_at = now
        deadline = await store.advisor_orm(record_socket_activity)(self.session_key)
        if deadline is None:
            await self._end(SESSION_ENDED)
            return False
        self.session_deadline = deadline
        return True

    async def _session_still_running(self) -> bool:
        """True while the session lasts. Past its deadline (as last known here) the stored
        session decides: activity elsewhere (a page, another socket) may have moved it on."""
        if self.closed:
            return False
        if time.time() < self.session_deadline:
            return True
        try:
            deadline = await store.advisor_orm(valid_session_deadline)(
                self.session_key, self.advisor_id
            )
        except Exception:
            logger.exception("could not check an advisor's session")
            deadline = None
        if deadline is None:
            await self._end(SESSION_ENDED)
            return False
        self.session_deadline = deadline
        return True

    async def _close_when_session_ends(self) -> None:
        try:
            while not self.closed:
                await asyncio.sleep(max(1.0, self.session_deadline - time.time()))
                await self._session_still_running()
        except asyncio.CancelledError:
            pass

    async def _end(self, code: int) -> None:
        if not self.closed:
            self.closed = True  # nothing more goes out on this socket
            await self.close(code=code)

    # --- helpers ---------------------------------------------------------------------------

    async def _follow(
        self, conversation: Conversation, after_seq: int, *, extras: bool = True
    ) -> None:
        self.conversations[str(conversation.public_id)] = conversation
        (summary,) = await self._with_contacts([conversation.summary()])
        await self.send_frame({"type": "conversation", "conversation": summary})
        await self.follow(conversation, after_seq)
        if extras:
            await self.send_extras_of(conversation)  # notes, interpreter (console.frames)

    async def _with_contacts(
        self, summaries: list[dict[str, Any]], cache: Any = None
    ) -> list[dict[str, Any]]:
        """SMS summaries get the sender's number, masked unless this advisor may see it."""
        if not any(s.get("channel") == Channel.SMS for s in summaries):
            return summaries
        return await store.advisor_orm(with_contacts)(
            summaries, full=self.profile.can_see_phone_numbers, cache=cache
        )

    async def _lookup(self, frame: dict[str, Any], must_be_mine: bool = True) -> Conversation:
        public_id = field(frame, "conversation", str, max_length=64)
        _check_public_id(public_id, "conversation")
        find = Conversation.objects.filter(public_id=public_id).first
        conversation = await store.advisor_orm(find)()
        if conversation is None:
            raise DomainError("not_found", "There is no such conversation.")
        if must_be_mine and conversation.advisor_id != self.user.pk:
            raise DomainError("not_your_conversation", "This conversation is not open for you.")
        return conversation


def _check_public_id(value: str, name: str) -> None:
    try:
        uuid.UUID(value)
    except ValueError:
        raise ProtocolError("invalid_field", f"The field '{name}' holds a bad id.") from None


def _verified_advisor_with_time_left(scope: dict[str, Any]) -> Any | None:
    user = verified_advisor_from_scope(scope)
    if user is None or session_ended_because(scope["session"]) is not None:
        return None
    if start_missing_session_clock(scope["session"]):
        scope["session"].save()
    return user


def _conversations_to_resume(user: Any, public_ids: list[str]) -> list[Conversation]:
    """The advisor's active conversations, and those of the named ones that are theirs."""
    return list(
        Conversation.objects.filter(advisor=user)
        .filter(Q(status=Conversation.Status.ACTIVE) | Q(public_id__in=public_ids))
        .order_by("taken_at")
    )
