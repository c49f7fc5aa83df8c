"""The visitor socket's frames for interpreters, opening hours and return codes
(docs/protocol.md, "Interpreters, opening hours, return codes"). A mixin of
chat.consumers.VisitorConsumer, kept apart so the core visitor protocol reads on its own."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from advice import fastpath, interpreters, returncodes
from advice.choices import COUNTIES, InterpreterGender
from advice.hours import cached_line_status, line_closed_frame, line_status
from advice.models import Conversation
from realtime.sockets import ProtocolError, field

COUNTY_CHOICES = ["", *(code for code, _name in COUNTIES)]
VISITOR_LANGUAGE_CODES = [code for code, _name in settings.LANGUAGES]


class ConsentAndCodeFrames:
    """Frames: `line_status`, `interpreter_answer`, `return_code`; and the extra fields of
    `start` (interpreter wishes, return code) with the `line_closed` refusal."""

    extra_frame_types = frozenset({"line_status", "interpreter_answer", "return_code"})
    conversation: Conversation | None
    return_code_tries = 0

    # --- start ---------------------------------------------------------------------------

    @staticmethod
    def interpreter_wishes(frame: dict[str, Any], needed: bool) -> dict[str, Any]:
        wishes = {
            "interpreter_outside_community": field(
                frame, "interpreter_outside_community", bool, default=False
            ),
            "interpreter_gender": field(
                frame, "interpreter_gender", str, default="", choices=InterpreterGender.values
            ),
        }
        return wishes if needed else {}

    def return_code_field(self, frame: dict[str, Any]) -> str:
        code = field(frame, "return_code", str, default="", max_length=100)
        if code.strip():
            # Per socket, on top of the service-wide budget in advice.returncodes.
            self.return_code_tries += 1
            if self.return_code_tries > returncodes.MAX_TRIES_PER_SOCKET:
                raise ProtocolError(
                    "too_many_tries", "Too many return codes tried. Start without the code."
                )
        return code

    async def start_if_open(self, return_code: str, options: dict[str, Any]) -> Any:
        """Start the conversation, or, while the line is closed, tell the visitor when it opens
        and return None. In a surge hundreds of visitors start at once: on PostgreSQL a start
        without a return code is one statement on the event loop's own connections
        (advice.fastpath.start_web); otherwise the check and the start are one call off the
        shared database thread (advice.fastpath.orm), so that no other database call of the
        process waits behind them (docs/performance.md)."""
        outcome = None if return_code.strip() else await fastpath.start_web(options)
        if outcome is None:
            outcome = await fastpath.orm(_start_while_open)(return_code, options)
        status, started = outcome
        if started is None:
            frame = await database_sync_to_async(line_closed_frame)(status, options["language"])
            await self.send_frame(frame)
        return started

    # --- frames --------------------------------------------------------------------------

    async def handle_line_status(self, frame: dict[str, Any]) -> None:
        """Whether the line is open for a county; while closed, with the numbers to call,
        labelled in `language`."""
        county = field(frame, "county", str, default="", choices=COUNTY_CHOICES)
        language = field(
            frame, "language", str, default=settings.LANGUAGE_CODE, choices=VISITOR_LANGUAGE_CODES
        )
        status = await database_sync_to_async(line_status)(county)
        answer = {"type": "line_status", **status.as_dict()}
        if not status.open:
            closed = await database_sync_to_async(line_closed_frame)(status, language)
            answer["numbers"] = closed["numbers"]
        await self.send_frame(answer)

    async def handle_interpreter_answer(self, frame: dict[str, Any]) -> None:
        conversation = self._require_conversation()
        accept = field(frame, "accept", bool)
        events = await database_sync_to_async(interpreters.answer)(conversation, accept)
        self.publish(events)

    async def handle_return_code(self, frame: dict[str, Any]) -> None:
        conversation = self._require_conversation()
        code, record = await database_sync_to_async(returncodes.issue)(conversation)
        await self.send_frame(
            {
                "type": "return_code",
                "code": code,
                "words": code.split(),
                "expires_at": record.expires_at.isoformat(),
                "valid_days": settings.RETURN_CODE_DAYS,
            }
        )

    # --- events --------------------------------------------------------------------------

    async def on_interpreter_event(self, event: dict[str, Any]) -> None:
        status = event["invitation"]["status"]
        if status == "waiting":
            await self.send_frame({"type": "interpreter_request"})
        else:
            await self.send_frame({"type": "interpreter", "status": status})

    async def ask_again_if_waiting(self, conversation: Conversation) -> None:
        """After a (re)connect: an interpreter still waiting for this visitor's answer."""
        if await database_sync_to_async(interpreters.waiting_request)(conversation):
            await self.send_frame({"type": "interpreter_request"})


def _start_while_open(return_code: str, options: dict[str, Any]) -> tuple[Any, Any]:
    """(the line's status, what Conversation.start_web returned or None while closed)."""
    status = cached_line_status(options.get("county", ""))
    if not status.open:
        return status, None
    return status, returncodes.start_web_conversation(return_code, **options)


def consent_and_code_strings() -> dict[str, Any]:
    """What the chat page's script says about interpreters, opening hours and return codes
    (handed to the page with the other strings, chat.strings.chat_strings)."""
    from django.utils.translation import gettext as _

    return {
        "timeZone": settings.TIME_ZONE,
        "events": {
            "interpreter_invited": _("The advisor has invited an interpreter."),
            "interpreter_waiting": _("An interpreter is waiting to join."),
            "interpreter_joined": _("The interpreter has joined the chat."),
            "interpreter_refused": _("You said no to the interpreter."),
            "interpreter_shared": _("The advisor showed the interpreter the earlier messages."),
            "interpreter_left": _("The interpreter has left the chat."),
            "interpreter_revoked": _("The advisor withdrew the invitation to the interpreter."),
        },
        "errors": {
            "invalid_return_code": _(
                "That return code does not work. Check the words, or start without the code."
            ),
            "return_codes_paused": _(
                "Return codes cannot be checked just now. Start without the code and tell the "
                "advisor that you have chatted before."
            ),
            "too_many_tries": _(
                "You have tried too many codes. Start without the code and tell the advisor "
                "that you have chatted before."
            ),
            "return_code_unavailable": _(
                "You can get a return code once you have chatted with an advisor."
            ),
            "return_code_limit": _("You cannot get more return codes for this chat."),
        },
        # %(date)s: a date and time, written out in the visitor's language.
        "returnCodeExpires": _("The code works until %(date)s."),
    }
