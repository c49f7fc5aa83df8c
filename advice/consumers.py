"""The advisor's socket, /ws/advisor/: the live queue and the advisor's conversations.

Only an OTP-verified session gets in; anything else is refused during the handshake."""

from __future__ import annotations

import uuid
from typing import Any

from channels.db import database_sync_to_async

from advice.auth import verified_advisor_from_scope
from advice.choices import INTERPRETER_LANGUAGES, Outcome
from advice.models import AdvisorProfile, Conversation, DomainError, Message, QueueSnapshot
from advice.realtime import publish
from advice.sockets import JsonSocket, ProtocolError, client_id_field, field, seq_field

MAX_RESUME_CONVERSATIONS = 100


class AdvisorConsumer(JsonSocket):
    frame_types = frozenset({
        "resume", "take", "take_next", "send", "typing", "mark_urgent", "set_interpreter",
        "close", "ping",
    })

    async def connect(self) -> None:
        self.user = await database_sync_to_async(verified_advisor_from_scope)(self.scope)
        if self.user is None:
            await self.close(code=4403)  # before accept: the handshake fails with 403
            return
        await super().connect()
        self.advisor_id = self.user.pk
        self.profile = await database_sync_to_async(AdvisorProfile.for_user)(self.user)
        # public id -> conversation, for the conversations this socket follows.
        self.conversations: dict[str, Conversation] = {}
        self.hub.add_advisor(self)
        await self.accept()
        await self.send_frame({
            "type": "hello",
            "advisor": {
                "id": self.user.pk,
                "name": str(self.profile),
                "capacity": self.profile.capacity,
                "languages": self.profile.languages,
            },
        })
        self.hub.request_queue_refresh()

    # --- frames ----------------------------------------------------------------------------

    async def handle_resume(self, frame: dict[str, Any]) -> None:
        """Follow the advisor's open conversations, sending each from the client's last seq."""
        seen = field(frame, "conversations", dict, default={})
        if len(seen) > MAX_RESUME_CONVERSATIONS:
            raise ProtocolError("invalid_field", "Too many conversations in 'conversations'.")
        last_seqs: dict[str, int] = {}
        for key, value in seen.items():
            last_seqs[key] = seq_field({"s": value}, "s")
        mine = await database_sync_to_async(_open_conversations_of)(self.user)
        for conversation in mine:
            await self._follow(conversation, last_seqs.get(str(conversation.public_id), 0))

    async def handle_take(self, frame: dict[str, Any]) -> None:
        conversation = await self._lookup(frame, must_be_mine=False)
        events = await database_sync_to_async(conversation.take)(self.user)
        await publish(events)

    async def handle_take_next(self, frame: dict[str, Any]) -> None:
        _conversation, events = await database_sync_to_async(Conversation.take_next)(self.user)
        await publish(events)

    async def handle_send(self, frame: dict[str, Any]) -> None:
        conversation = await self._lookup(frame)
        client_id = client_id_field(frame)
        text = field(frame, "text", str)
        message, _created, events = await database_sync_to_async(conversation.post)(
            sender=Message.Sender.ADVISOR, text=text, client_id=client_id, advisor=self.user
        )
        await self.send_frame({
            "type": "ack", "conversation": str(conversation.public_id),
            "client_id": client_id, "seq": message.seq,
        })
        await publish(events)

    async def handle_typing(self, frame: dict[str, Any]) -> None:
        conversation = await self._lookup(frame)
        await publish([{
            "kind": "typing", "conversation": conversation.pk,
            "public_id": str(conversation.public_id), "from": "advisor",
        }])

    async def handle_mark_urgent(self, frame: dict[str, Any]) -> None:
        conversation = await self._lookup(frame, must_be_mine=False)
        urgent = field(frame, "urgent", bool, default=True)
        events = await database_sync_to_async(conversation.set_urgent)(self.user, urgent)
        await publish(events)

    async def handle_set_interpreter(self, frame: dict[str, Any]) -> None:
        conversation = await self._lookup(frame)
        needed = field(frame, "needed", bool)
        language = field(
            frame, "language", str, default="",
            choices=[""] + [code for code, _name in INTERPRETER_LANGUAGES],
        )
        events = await database_sync_to_async(conversation.set_interpreter)(
            self.user, needed, language
        )
        await publish(events)

    async def handle_close(self, frame: dict[str, Any]) -> None:
        conversation = await self._lookup(frame)
        outcome = field(frame, "outcome", str, choices=Outcome.values)
        events = await database_sync_to_async(conversation.close)(self.user, outcome)
        await publish(events)

    # --- events ----------------------------------------------------------------------------

    async def on_event(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "message":
            await self.on_message_event(event)
        elif kind == "conversation":
            summary = event["summary"]
            public_id = summary["id"]
            if summary["advisor"] == self.advisor_id and public_id not in self.conversations:
                # Just taken (here or on another of the advisor's sockets): follow it from the
                # start, so the advisor reads what the visitor wrote while waiting.
                conversation = await database_sync_to_async(Conversation.objects.get)(
                    pk=event["conversation"]
                )
                await self._follow(conversation, 0)
                return
            await self.send_frame({"type": "conversation", "conversation": summary})
        elif kind == "typing" and event.get("from") != "advisor":
            await self.send_frame({
                "type": "typing", "conversation": event["public_id"], "from": event["from"],
            })
        elif kind == "logout" and event.get("advisor") == self.advisor_id:
            await self.close(code=4401)

    async def on_queue(self, snapshot: QueueSnapshot) -> None:
        await self.send_frame({
            "type": "queue",
            "waiting": [c.summary() for c in snapshot.waiting],
            "average_wait_seconds": snapshot.average_wait_seconds,
        })

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
        if event["sender"] == Message.Sender.ADVISOR:
            frame["advisor"] = event["advisor"]
            if event["client_id"]:
                frame["client_id"] = event["client_id"]
        return frame

    # --- helpers ---------------------------------------------------------------------------

    async def _follow(self, conversation: Conversation, after_seq: int) -> None:
        self.conversations[str(conversation.public_id)] = conversation
        await self.send_frame({"type": "conversation", "conversation": conversation.summary()})
        await self.follow(conversation, after_seq)

    async def _lookup(self, frame: dict[str, Any], must_be_mine: bool = True) -> Conversation:
        public_id = field(frame, "conversation", str, max_length=64)
        try:
            uuid.UUID(public_id)
        except ValueError:
            raise ProtocolError("invalid_field", "The field 'conversation' is not an id.") from None
        conversation = await database_sync_to_async(
            Conversation.objects.filter(public_id=public_id).first
        )()
        if conversation is None:
            raise DomainError("not_found", "There is no such conversation.")
        if must_be_mine and conversation.advisor_id != self.user.pk:
            raise DomainError("not_your_conversation", "This conversation is not open for you.")
        return conversation


def _open_conversations_of(user: Any) -> list[Conversation]:
    return list(
        Conversation.objects.filter(advisor=user, status=Conversation.Status.ACTIVE)
        .order_by("taken_at")
    )
