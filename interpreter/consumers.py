"""The interpreter's socket, /ws/interpreter/. The interpreter has no account: the invitation
link's secret, sent once in a `join` frame, is exchanged for a token (advice.interpreters), and
the token, sent in a `resume` frame, is all the socket ever trusts. Neither is in a URL the
server sees.

What the interpreter sees: the state of their invitation; once the visitor has said yes, the
conversation's stream from the entry that marks their joining; and, only if the advisor shares
it, the part before. Never the queue, never another conversation, never the conversation's
details (county, who is writing, notes)."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from advice import interpreters, streams
from advice.models import Conversation, DomainError, InterpreterInvitation, Message
from realtime.sockets import (
    JsonSocket,
    ProtocolError,
    client_id_field,
    field,
    participant_message_frame,
    seq_field,
)

Status = InterpreterInvitation.Status
# Close code once the interpreter's part is over (refused, revoked, left, conversation ended).
FINISHED = 4000
# What changes on an invitation while the interpreter is connected (re-read on each change;
# refreshing only these keeps the cached conversation).
STATE_FIELDS = ["status", "joined_seq", "shared_from_seq"]


class InterpreterConsumer(JsonSocket):
    frame_types = frozenset({"join", "resume", "send", "typing", "leave", "ping"})

    # The domain's refusals are answered like the kernel's own; streams are read by the domain.
    refused = (*JsonSocket.refused, DomainError)
    catch_up_page = streams.PAGE

    async def entries_after(self, conversation_id: int, after: int) -> list[dict[str, Any]]:
        return await streams.entries_after(
            conversation_id, after, self.following.get(conversation_id)
        )

    invitation: InterpreterInvitation | None = None
    entered = False

    async def connect(self) -> None:
        await super().connect()
        await self.accept()

    # --- frames ----------------------------------------------------------------------------

    async def handle_join(self, frame: dict[str, Any]) -> None:
        """Open the invitation link: its secret is spent, the page gets a token."""
        if self.invitation is not None:
            raise ProtocolError("already_joined", "This socket already has an invitation.")
        key = field(frame, "key", str, max_length=128)
        invitation, token, _events = await database_sync_to_async(interpreters.open_link)(key)
        await self.send_frame({"type": "welcome", "token": token})
        await self._attach(invitation, after_seq=0)

    async def handle_resume(self, frame: dict[str, Any]) -> None:
        token = field(frame, "token", str, max_length=128)
        last_seq = seq_field(frame)
        invitation = await database_sync_to_async(interpreters.for_token)(token)
        if invitation is None:
            raise ProtocolError("invalid_token", "This invitation is no longer valid.")
        if self.invitation is not None and self.invitation.pk != invitation.pk:
            raise ProtocolError("already_joined", "This socket already has an invitation.")
        await self._attach(invitation, after_seq=last_seq)

    async def handle_send(self, frame: dict[str, Any]) -> None:
        invitation = self._require_joined()
        client_id = client_id_field(frame)
        text = field(frame, "text", str)
        message, _created, _events = await database_sync_to_async(interpreters.post)(
            invitation, text, client_id
        )
        await self.send_frame({"type": "ack", "client_id": client_id, "seq": message.seq})

    async def handle_typing(self, frame: dict[str, Any]) -> None:
        invitation = self._require_joined()
        conversation = invitation.conversation
        self.publish(
            [
                {
                    "kind": "typing",
                    "conversation": conversation.pk,
                    "public_id": str(conversation.public_id),
                    "from": "interpreter",
                }
            ]
        )

    async def handle_leave(self, frame: dict[str, Any]) -> None:
        if self.invitation is None:
            raise ProtocolError("no_invitation", "Open the invitation link first.")
        await database_sync_to_async(interpreters.leave)(self.invitation)

    # --- events ----------------------------------------------------------------------------

    async def on_event(self, event: dict[str, Any]) -> None:
        if self.invitation is None:
            return
        kind = event["kind"]
        if kind == "message":
            # Nothing reaches the page before the visitor's yes: until then nothing is
            # "delivered" for this conversation, and on_message_event drops the event.
            await self.on_message_event(event)
        elif kind == "interpreter":
            if event["invitation"]["id"] == str(self.invitation.public_id):
                await self._on_invitation_changed(event["invitation"])
        elif kind == "conversation":
            if event["summary"]["status"] not in Conversation.OPEN_STATUSES:
                await self._finish("ended")
        elif kind == "typing" and self.entered and event.get("from") != "interpreter":
            await self.send_frame({"type": "typing", "from": event["from"]})

    async def _on_invitation_changed(self, data: dict[str, Any]) -> None:
        assert self.invitation is not None
        status = data["status"]
        if status == Status.JOINED:
            await database_sync_to_async(self.invitation.refresh_from_db)(fields=STATE_FIELDS)
            if not self.entered:
                await self.send_frame(self.state_frame())
                await self._enter(after_seq=0)
            else:
                # The advisor shared (more of) the earlier conversation.
                await self._send_history()
        elif status in (Status.REFUSED, Status.REVOKED, Status.LEFT, Status.EXPIRED):
            await self._finish(status)

    def message_frame(self, event: dict[str, Any]) -> dict[str, Any]:
        return participant_message_frame(event, Message.Sender.INTERPRETER)

    def state_frame(self, status: str | None = None) -> dict[str, Any]:
        assert self.invitation is not None
        conversation = self.invitation.conversation
        return {
            "type": "state",
            "status": status or self.invitation.status,
            # The language to interpret: the one the visitor asked for, else the chat's.
            "language": conversation.interpreter_language or conversation.language,
        }

    # --- helpers ---------------------------------------------------------------------------

    async def _attach(self, invitation: InterpreterInvitation, after_seq: int) -> None:
        self.invitation = invitation
        # Subscribe before reading the state once more, so a yes that lands in between is
        # either in the state read or in an event that arrives after it.
        self.hub.subscribe(invitation.conversation_id, self)
        await database_sync_to_async(invitation.refresh_from_db)(fields=STATE_FIELDS)
        await self.send_frame(self.state_frame())
        if invitation.status == Status.JOINED:
            await self._enter(after_seq)
        elif invitation.status != Status.WAITING:
            await self._finish(invitation.status)

    async def _enter(self, after_seq: int) -> None:
        """From the visitor's yes: the shared history (if any), then the stream from the
        entry that marks the joining (joined_seq) on."""
        assert self.invitation is not None and self.invitation.joined_seq is not None
        self.entered = True
        await self._send_history()
        start = max(after_seq, self.invitation.joined_seq - 1)
        await self.follow(self.invitation.conversation, start)

    async def _send_history(self) -> None:
        assert self.invitation is not None
        history = await database_sync_to_async(interpreters.shared_history)(self.invitation)
        if history:
            await self.send_frame(
                {
                    "type": "history",
                    "messages": [self.message_frame(e) for e in history],
                }
            )

    async def _finish(self, status: str) -> None:
        await self.send_frame(self.state_frame(status))
        self.hub.remove(self)
        self.entered = False
        self.closed = True
        await self.close(code=FINISHED)

    def _require_joined(self) -> InterpreterInvitation:
        if self.invitation is None or not self.entered:
            raise ProtocolError(
                "not_in_conversation", "You can write once the visitor has said yes."
            )
        return self.invitation
