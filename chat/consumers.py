"""The visitor's socket, /ws/chat/. Anonymous: the visitor proves nothing but the token they
were given when they started, sent inside a frame (never in the URL)."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from advice import streams
from advice.choices import COUNTIES, INTERPRETER_LANGUAGES, SafeNow, Writer
from advice.models import Conversation, DomainError, Message, QueueSnapshot
from chat.consent_and_codes import ConsentAndCodeFrames
from realtime.sockets import (
    JsonSocket,
    ProtocolError,
    client_id_field,
    field,
    participant_message_frame,
    seq_field,
)

VISITOR_LANGUAGES = {code for code, _name in settings.LANGUAGES}


class VisitorConsumer(ConsentAndCodeFrames, JsonSocket):
    frame_types = (
        frozenset(
            {
                "start",
                "resume",
                "send",
                "typing",
                "leave",
                "quick_exit",
                "ping",
            }
        )
        | ConsentAndCodeFrames.extra_frame_types
    )

    # The domain's refusals are answered like the kernel's own; streams are read by the domain.
    refused = (*JsonSocket.refused, DomainError)
    catch_up_page = streams.PAGE

    async def entries_after(self, conversation_id: int, after: int) -> list[dict[str, Any]]:
        return await streams.entries_after(
            conversation_id, after, self.following.get(conversation_id)
        )

    conversation: Conversation | None = None
    position: int | None = None
    estimate: int | None = None

    async def connect(self) -> None:
        await super().connect()
        await self.accept()

    # --- frames ----------------------------------------------------------------------------

    async def handle_start(self, frame: dict[str, Any]) -> None:
        if self.conversation is not None:
            raise ProtocolError("already_started", "This socket already has a conversation.")
        interpreter_needed = field(frame, "interpreter_needed", bool, default=False)
        options = {
            "language": field(frame, "language", str, choices=VISITOR_LANGUAGES),
            "writer": field(frame, "writer", str, choices=Writer.values),
            "interpreter_needed": interpreter_needed,
            "interpreter_language": field(
                frame,
                "interpreter_language",
                str,
                default="",
                choices=[""] + [code for code, _name in INTERPRETER_LANGUAGES],
            ),
            "county": field(
                frame, "county", str, default="", choices=[""] + [c for c, _n in COUNTIES]
            ),
            "safe_now": field(frame, "safe_now", str, default="", choices=["", *SafeNow.values]),
        }
        if interpreter_needed and not options["interpreter_language"]:
            raise ProtocolError("missing_field", "Say which language the interpreter should speak.")
        options.update(self.interpreter_wishes(frame, interpreter_needed))
        return_code = self.return_code_field(frame)
        started = await self.start_if_open(return_code, options)
        if started is None:
            return  # the visitor was told when the line opens (`line_closed`)
        conversation, token, _events = started
        await self.send_frame({"type": "started", "token": token})
        await self._attach(conversation, after_seq=0, new=True)

    async def handle_resume(self, frame: dict[str, Any]) -> None:
        token = field(frame, "token", str, max_length=128)
        last_seq = seq_field(frame)
        conversation = await database_sync_to_async(Conversation.for_visitor)(token)
        if conversation is None:
            raise ProtocolError("invalid_token", "This conversation cannot be found.")
        if self.conversation is not None and self.conversation.pk != conversation.pk:
            raise ProtocolError("already_started", "This socket already has a conversation.")
        await self._attach(conversation, after_seq=last_seq)

    async def handle_send(self, frame: dict[str, Any]) -> None:
        conversation = self._require_conversation()
        client_id = client_id_field(frame)
        text = field(frame, "text", str)
        message, _created, _events = await conversation.apost(
            sender=Message.Sender.VISITOR, text=text, client_id=client_id
        )
        # Acknowledged only now: the text is committed (its broadcast follows the ack).
        await self.send_frame({"type": "ack", "client_id": client_id, "seq": message.seq})

    async def handle_typing(self, frame: dict[str, Any]) -> None:
        conversation = self._require_conversation()
        if conversation.status == Conversation.Status.ACTIVE:
            self.publish(
                [
                    {
                        "kind": "typing",
                        "conversation": conversation.pk,
                        "public_id": str(conversation.public_id),
                        "from": "visitor",
                    }
                ]
            )

    async def handle_leave(self, frame: dict[str, Any]) -> None:
        conversation = self._require_conversation()
        await database_sync_to_async(conversation.end_by_visitor)()

    async def handle_quick_exit(self, frame: dict[str, Any]) -> None:
        """The visitor pressed quick exit: end the conversation, revoke the token, and close.
        The page sends the same news as a keep-alive POST to /exit/ (chat.views.exit_page), in
        case this socket is down; whichever comes second finds nothing left to do."""
        conversation = self._require_conversation()
        await database_sync_to_async(conversation.quick_exit)()
        # Stop following it: nothing more goes to a page that is gone.
        self.hub.remove(self)
        self.conversation = None
        await self.close(code=4000)

    # --- events ----------------------------------------------------------------------------

    async def on_event(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "message":
            await self.on_message_event(event)
        elif kind == "conversation" and self.conversation is not None:
            summary = event["summary"]
            self.conversation.status = summary["status"]
            if summary["status"] != Conversation.Status.WAITING:
                self.hub.unwatch_queue(self)
                self.position = None
            await self.send_frame(self.state_frame())
        elif kind == "typing" and event.get("from") != "visitor":
            await self.send_frame({"type": "typing", "from": event["from"]})
        elif kind == "interpreter" and self.conversation is not None:
            await self.on_interpreter_event(event)

    async def on_queue(self, snapshot: QueueSnapshot) -> None:
        if self.conversation is None:
            return
        position = snapshot.position_of(self.conversation.pk)
        if position is None:
            return
        # The estimate follows the recent waits, so it can change while the place does not.
        estimate = snapshot.estimated_wait(position)
        if (position, estimate) != (self.position, self.estimate):
            self.position, self.estimate = position, estimate
            # Two integers, written out directly: every waiting visitor gets this frame after
            # each reload of a moving queue, thousands a second in a surge.
            await self.send_text(
                f'{{"type":"queue","position":{position:d},"estimated_wait_seconds":{estimate:d}}}'
            )

    def message_frame(self, event: dict[str, Any]) -> dict[str, Any]:
        return participant_message_frame(event, Message.Sender.VISITOR)

    def state_frame(self) -> dict[str, Any]:
        assert self.conversation is not None
        frame: dict[str, Any] = {"type": "state", "status": self.conversation.status}
        if self.position is not None:
            frame["position"] = self.position
        return frame

    # --- helpers ---------------------------------------------------------------------------

    async def _attach(self, conversation: Conversation, after_seq: int, new: bool = False) -> None:
        self.conversation = conversation
        await self.send_frame(self.state_frame())
        if conversation.status == Conversation.Status.WAITING:
            # The place in the queue follows from the hub's next reload of the queue, which is
            # shared by every waiting visitor of this process (one query, not one each).
            self.hub.watch_queue(self)
            self.hub.request_queue_refresh()
        await self.follow(conversation, after_seq)
        if not new:
            # No interpreter can be waiting yet for a conversation started a moment ago (an
            # advisor has to take it and invite one first, and that reaches the socket live).
            await self.ask_again_if_waiting(conversation)

    def _require_conversation(self) -> Conversation:
        if self.conversation is None:
            raise ProtocolError("no_conversation", "Start or resume a conversation first.")
        return self.conversation
