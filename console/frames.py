"""The advisor socket's frames for interpreters, notes and linked history (docs/protocol.md,
"Interpreters, opening hours, return codes"). A mixin of console.consumers.AdvisorConsumer,
kept apart so the core console protocol reads on its own."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from advice import interpreters, returncodes, store
from advice.models import Conversation, DomainError
from realtime.sockets import ProtocolError, field


class InterpreterAndNoteFrames:
    """Frames: `invite_interpreter`, `revoke_interpreter`, `share_with_interpreter`, `note`,
    `linked_history`. Events: the invitation's changes, as `interpreter` frames."""

    extra_frame_types = frozenset(
        {
            "invite_interpreter",
            "revoke_interpreter",
            "share_with_interpreter",
            "note",
            "linked_history",
        }
    )
    user: Any
    conversations: dict[str, Conversation]

    async def _counts_as_activity(self) -> None:
        """Before the action: these are rare, and refused once the session has ended."""
        note_activity = getattr(self, "note_activity", None)
        if note_activity is not None and not await note_activity():
            raise DomainError("session_ended", "Your session has ended. Log in again.")

    # --- interpreters --------------------------------------------------------------------

    async def handle_invite_interpreter(self, frame: dict[str, Any]) -> None:
        await self._counts_as_activity()
        conversation = await self._lookup(frame)
        invitation, secret, _events = await database_sync_to_async(interpreters.invite)(
            conversation, self.user
        )
        # The link goes to this socket only, once: the advisor passes it to the interpreter.
        await self.send_frame(
            {
                "type": "interpreter_link",
                "conversation": str(conversation.public_id),
                "link": interpreters.link_for(secret, self._origin()),
                "invitation": invitation.as_dict(),
            }
        )

    async def handle_revoke_interpreter(self, frame: dict[str, Any]) -> None:
        await self._counts_as_activity()
        conversation = await self._lookup(frame)
        await database_sync_to_async(interpreters.revoke)(conversation, self.user)

    async def handle_share_with_interpreter(self, frame: dict[str, Any]) -> None:
        await self._counts_as_activity()
        conversation = await self._lookup(frame)
        from_seq = field(frame, "from_seq", int, default=1)
        await database_sync_to_async(interpreters.share)(conversation, self.user, from_seq)

    async def on_interpreter_event(self, event: dict[str, Any]) -> None:
        await self.send_frame(
            {
                "type": "interpreter",
                "conversation": event["public_id"],
                "invitation": event["invitation"],
            }
        )

    # --- notes and linked history ----------------------------------------------------------

    async def handle_note(self, frame: dict[str, Any]) -> None:
        await self._counts_as_activity()
        conversation = await self._lookup(frame)
        text = field(frame, "text", str)
        saved = await database_sync_to_async(returncodes.save_note)(conversation, self.user, text)
        await self.send_frame(self._note_frame(saved, text))

    async def handle_linked_history(self, frame: dict[str, Any]) -> None:
        """The earlier conversations a return code linked this one to, with their notes:
        read-only, for the advisor who holds the conversation."""
        await self._counts_as_activity()
        conversation = await self._lookup(frame)
        earlier = await database_sync_to_async(_earlier_of)(conversation)
        await self.send_frame(
            {
                "type": "linked_history",
                "conversation": str(conversation.public_id),
                "earlier": [
                    {**item, "messages": [self.message_frame(m) for m in item["messages"]]}
                    for item in earlier
                ],
            }
        )

    # --- on following a conversation -----------------------------------------------------

    async def send_extras_of(self, conversation: Conversation) -> None:
        """What the console shows beside the stream: the notes and the interpreter's state."""
        note, invitation = await store.advisor_orm(_extras_of)(conversation)
        if note:
            await self.send_frame(self._note_frame(conversation, note))
        if invitation is not None:
            await self.send_frame(
                {
                    "type": "interpreter",
                    "conversation": str(conversation.public_id),
                    "invitation": invitation.as_dict(),
                }
            )

    @staticmethod
    def _note_frame(conversation: Conversation, text: str) -> dict[str, Any]:
        updated = conversation.note_updated_at
        return {
            "type": "note",
            "conversation": str(conversation.public_id),
            "text": text,
            "updated_at": updated.isoformat() if updated else None,
        }

    def _origin(self) -> str:
        """The service's own origin, as the browser sent it (the origin check has passed)."""
        for name, value in self.scope.get("headers", []):
            if name == b"origin":
                origin = value.decode("latin-1")
                if origin.startswith(("http://", "https://")) and "/" not in origin[8:]:
                    return origin
                break
        raise ProtocolError("invalid_origin", "The console's origin is not known.")


def _earlier_of(conversation: Conversation) -> list[dict[str, Any]]:
    conversation.refresh_from_db()
    return returncodes.earlier_conversations(conversation)


def _extras_of(conversation: Conversation) -> tuple[str, Any]:
    fresh = Conversation.objects.only("note_body", "note_updated_at").get(pk=conversation.pk)
    conversation.note_updated_at = fresh.note_updated_at
    return returncodes.note_of(fresh), interpreters.current_invitation(conversation)
