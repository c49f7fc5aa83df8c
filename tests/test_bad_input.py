"""Bad input on both sockets: each gets a typed error frame and changes nothing in the database.
Plus the origin check (C-1), the rate limit (C-5), and frames fuzzed with hypothesis."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from advice.models import Conversation, ConversationEvent, Message
from tests.factories import (
    START,
    advisor_socket,
    application,
    make_advisor,
    receive_until,
    session_cookie,
    visitor_socket,
)

pytestmark = pytest.mark.django_db(transaction=True)

ERROR_CODE = re.compile(r"^[a-z][a-z_]*$")


# --- helpers -------------------------------------------------------------------------------


def database_state() -> tuple:
    """Everything a frame could change: the rows, and each conversation's fields."""
    return (
        Conversation.objects.count(),
        Message.objects.count(),
        ConversationEvent.objects.count(),
        sorted(
            Conversation.objects.values_list(
                "id",
                "status",
                "advisor_id",
                "urgent",
                "interpreter_needed",
                "interpreter_language",
                "outcome",
                "last_seq",
                "ended_at",
            )
        ),
        sorted(Message.objects.values_list("id", "seq", "body", "client_id")),
    )


snapshot = database_sync_to_async(database_state)


async def send_raw(
    communicator: WebsocketCommunicator, text: str | None = None, data: bytes | None = None
) -> None:
    """Any frame, including an empty one (which WebsocketCommunicator.send_to refuses)."""
    if data is not None:
        await communicator.send_input({"type": "websocket.receive", "bytes": data})
    else:
        await communicator.send_input({"type": "websocket.receive", "text": text})


async def replies_until_pong(communicator: WebsocketCommunicator) -> list[dict[str, Any]]:
    """Send a ping and read everything up to its pong: the replies to what came before, and
    proof that the socket survived it."""
    await communicator.send_json_to({"type": "ping"})
    frames = []
    while True:
        raw = await communicator.receive_from(timeout=3)
        assert isinstance(raw, str), "the server sent a binary frame"
        frame = json.loads(raw)
        if frame == {"type": "pong"}:
            return frames
        frames.append(frame)


def assert_well_formed(frame: Any) -> None:
    assert isinstance(frame, dict)
    assert isinstance(frame.get("type"), str)
    if frame["type"] == "error":
        assert ERROR_CODE.match(frame["code"]), frame
        assert isinstance(frame["message"], str)
        assert frame["message"]


async def expect_error(
    communicator: WebsocketCommunicator,
    code: str,
    *,
    text: str | None = None,
    data: bytes | None = None,
    frame: Any = ...,
) -> dict[str, Any]:
    """Send one bad frame; exactly one error with `code` comes back and the database is
    untouched."""
    before = await snapshot()
    if frame is not ...:
        await communicator.send_to(text_data=json.dumps(frame))
    else:
        await send_raw(communicator, text=text, data=data)
    replies = await replies_until_pong(communicator)
    errors = [f for f in replies if f["type"] == "error"]
    assert [e["code"] for e in errors] == [code], replies
    assert_well_formed(errors[0])
    assert await snapshot() == before
    return errors[0]


async def started_visitor() -> tuple[WebsocketCommunicator, str]:
    visitor = await visitor_socket()
    await visitor.send_json_to(START)
    token = (await receive_until(visitor, "started"))["token"]
    await receive_until(visitor, "queue")
    return visitor, token


# --- the visitor's socket ------------------------------------------------------------------

TOO_LONG = "å" * 4001

VISITOR_CASES = [
    ("not json", {"text": "{not json"}, "invalid_json"),
    ("empty frame", {"text": ""}, "invalid_json"),
    ("a list", {"frame": [1, 2]}, "invalid_frame"),
    ("a string", {"frame": "send"}, "invalid_frame"),
    ("null", {"frame": None}, "invalid_frame"),
    ("no type", {"frame": {"text": "hej"}}, "invalid_frame"),
    ("a numeric type", {"frame": {"type": 7}}, "invalid_frame"),
    ("an unknown type", {"frame": {"type": "take"}}, "unknown_type"),
    ("a binary frame", {"data": b'{"type":"ping"}'}, "invalid_frame"),
    (
        "a huge frame",
        {"text": json.dumps({"type": "send", "text": "x" * 70_000})},
        "frame_too_large",
    ),
    ("no text", {"frame": {"type": "send", "client_id": "a"}}, "missing_field"),
    ("text as a number", {"frame": {"type": "send", "text": 5}}, "invalid_field"),
    ("an empty text", {"frame": {"type": "send", "text": ""}}, "empty_message"),
    ("only spaces", {"frame": {"type": "send", "text": " \n\t "}}, "empty_message"),
    ("over 4,000 characters", {"frame": {"type": "send", "text": TOO_LONG}}, "message_too_long"),
    (
        "a client id as a number",
        {"frame": {"type": "send", "text": "a", "client_id": 1}},
        "invalid_field",
    ),
    (
        "a client id too long",
        {"frame": {"type": "send", "text": "a", "client_id": "c" * 65}},
        "invalid_field",
    ),
    ("start twice", {"frame": START}, "already_started"),
    # Found by these tests: both crashed the socket before the fix in realtime/sockets.py.
    (
        "half a surrogate pair in the text",
        {"text": '{"type":"send","text":"h\\ud800j"}'},
        "invalid_frame",
    ),
    (
        "half a surrogate pair in a client id",
        {"text": '{"type":"send","text":"a","client_id":"\\udfff"}'},
        "invalid_frame",
    ),
    (
        "a NUL in a client id",
        {"frame": {"type": "send", "text": "a", "client_id": "a\x00b"}},
        "invalid_field",
    ),
    (
        "a control character in a client id",
        {"frame": {"type": "send", "text": "a", "client_id": "a\nb"}},
        "invalid_field",
    ),
]


@pytest.mark.parametrize(
    ("case", "bad", "code"), VISITOR_CASES, ids=[case for case, _b, _c in VISITOR_CASES]
)
async def test_bad_visitor_frames_get_a_typed_error_and_change_nothing(case, bad, code):
    visitor, _token = await started_visitor()
    error = await expect_error(visitor, code, **bad)
    assert error["message"]
    # And the socket still works.
    await visitor.send_json_to({"type": "send", "client_id": "ok", "text": "hej"})
    assert (await receive_until(visitor, "ack"))["seq"] == 1
    await visitor.disconnect()


START_CASES = [
    ("no language", {"language": None}, "missing_field"),
    ("a language not offered", {"language": "xx"}, "invalid_field"),
    ("no writer", {"writer": None}, "missing_field"),
    ("a writer not on the list", {"writer": "police"}, "invalid_field"),
    ("a county not on the list", {"county": "Stockholm"}, "invalid_field"),
    ("safe_now as a bool", {"safe_now": False}, "invalid_field"),
    ("interpreter_needed as a string", {"interpreter_needed": "yes"}, "invalid_field"),
    ("an interpreter with no language", {"interpreter_needed": True}, "missing_field"),
    (
        "an interpreter language not on the list",
        {"interpreter_needed": True, "interpreter_language": "klingon"},
        "invalid_field",
    ),
]


@pytest.mark.parametrize(
    ("case", "change", "code"), START_CASES, ids=[case for case, _c, _k in START_CASES]
)
async def test_a_bad_start_frame_gets_a_typed_error_and_opens_no_conversation(case, change, code):
    visitor = await visitor_socket()
    frame = {k: v for k, v in {**START, **change}.items() if v is not None}
    await expect_error(visitor, code, frame=frame)
    await visitor.disconnect()


async def test_a_resume_token_with_half_a_surrogate_pair_is_refused():
    visitor = await visitor_socket()
    await expect_error(visitor, "invalid_frame", text='{"type":"resume","token":"\\ud800"}')
    await visitor.disconnect()


async def test_text_outside_the_basic_plane_and_right_at_the_limit_is_accepted():
    visitor, _token = await started_visitor()
    for n, text in enumerate(["Jag är rädd 😢", "ä" * 4000, "a\x00b"]):
        await visitor.send_json_to({"type": "send", "client_id": f"ok-{n}", "text": text})
        await receive_until(visitor, "ack")
        assert (await receive_until(visitor, "message"))["text"] == text
    await visitor.disconnect()


async def test_frames_before_start_or_resume_are_refused():
    visitor = await visitor_socket()
    for frame_type in ("send", "typing", "leave"):
        await expect_error(visitor, "no_conversation", frame={"type": frame_type, "text": "a"})
    await visitor.disconnect()


@pytest.mark.parametrize(
    ("case", "resume", "code"),
    [
        ("a wrong token", {"token": "wrong"}, "invalid_token"),
        ("no token", {}, "missing_field"),
        ("a token as a number", {"token": 12345}, "invalid_field"),
        ("a token too long", {"token": "t" * 500}, "invalid_field"),
        ("last_seq as a bool", {"token": "wrong", "last_seq": True}, "invalid_field"),
        ("last_seq as a string", {"token": "wrong", "last_seq": "3"}, "invalid_field"),
        ("last_seq negative", {"token": "wrong", "last_seq": -1}, "invalid_field"),
        ("last_seq as a float", {"token": "wrong", "last_seq": 2.5}, "invalid_field"),
    ],
)
async def test_a_bad_resume_gets_a_typed_error(case, resume, code):
    await started_visitor()
    visitor = await visitor_socket()
    await expect_error(visitor, code, frame={"type": "resume", **resume})
    await visitor.disconnect()


async def test_a_number_of_5000_digits_is_valid_json_and_a_field_error():
    """Longer than Python's int() reads (4,300 digits), but valid JSON: the field is wrong, the
    frame is not."""
    await started_visitor()
    visitor = await visitor_socket()
    number = "1" + "0" * 4999
    await expect_error(
        visitor, "invalid_field", text=f'{{"type":"resume","token":"wrong","last_seq":{number}}}'
    )
    await visitor.disconnect()


async def test_a_huge_last_seq_is_an_error_or_nothing_missed_never_a_crash():
    _visitor, token = await started_visitor()
    again = await visitor_socket()
    before = await snapshot()
    await again.send_json_to({"type": "resume", "token": token, "last_seq": 10**30})
    replies = await replies_until_pong(again)
    assert not [f for f in replies if f["type"] == "message"]
    for frame in replies:
        assert_well_formed(frame)
    assert await snapshot() == before
    await again.disconnect()


async def test_an_expired_token_is_refused(settings):
    visitor, token = await started_visitor()
    await visitor.send_json_to({"type": "leave"})
    await receive_until(visitor, "state", status="abandoned")
    settings.VISITOR_TOKEN_GRACE_MINUTES = 0
    again = await visitor_socket()
    await expect_error(again, "invalid_token", frame={"type": "resume", "token": token})
    await again.disconnect()


# --- the advisor's socket ------------------------------------------------------------------


async def advisor_with_taken_conversation(user: Any) -> tuple[WebsocketCommunicator, str]:
    await started_visitor()
    console, connected = await advisor_socket(user)
    assert connected
    public_id = (await receive_until(console, "queue"))["waiting"][0]["id"]
    await console.send_json_to({"type": "take", "conversation": public_id})
    await receive_until(console, "message", event="advisor_joined")
    return console, public_id


async def test_bad_advisor_frames_get_a_typed_error_and_change_nothing(advisor, other_advisor):
    console, mine = await advisor_with_taken_conversation(advisor)
    await started_visitor()
    rival, _connected = await advisor_socket(other_advisor)
    waiting = (await receive_until(rival, "queue"))["waiting"][0]["id"]
    unknown = "00000000-0000-4000-8000-000000000000"
    cases = [
        ({"type": "start", **START}, "unknown_type"),
        ({"type": "take"}, "missing_field"),
        ({"type": "take", "conversation": 17}, "invalid_field"),
        ({"type": "take", "conversation": "not-a-uuid"}, "invalid_field"),
        ({"type": "take", "conversation": unknown}, "not_found"),
        ({"type": "take", "conversation": mine}, "already_taken"),
        ({"type": "send", "conversation": waiting, "text": "hej"}, "not_your_conversation"),
        ({"type": "send", "conversation": mine, "text": ""}, "empty_message"),
        ({"type": "send", "conversation": mine, "text": TOO_LONG}, "message_too_long"),
        ({"type": "send", "conversation": mine, "text": ["hej"]}, "invalid_field"),
        ({"type": "typing", "conversation": waiting}, "not_your_conversation"),
        ({"type": "mark_urgent", "conversation": waiting, "urgent": 1}, "invalid_field"),
        ({"type": "mark_urgent", "conversation": waiting, "urgent": "yes"}, "invalid_field"),
        ({"type": "set_interpreter", "conversation": mine}, "missing_field"),
        ({"type": "set_interpreter", "conversation": mine, "needed": 1}, "invalid_field"),
        (
            {"type": "set_interpreter", "conversation": mine, "needed": True, "language": "xx"},
            "invalid_field",
        ),
        (
            {"type": "set_interpreter", "conversation": waiting, "needed": False},
            "not_your_conversation",
        ),
        ({"type": "close", "conversation": mine}, "missing_field"),
        ({"type": "close", "conversation": mine, "outcome": "solved"}, "invalid_field"),
        ({"type": "close", "conversation": waiting, "outcome": "other"}, "not_your_conversation"),
        ({"type": "resume", "conversations": [mine]}, "invalid_field"),
        ({"type": "resume", "conversations": {mine: "3"}}, "invalid_field"),
        ({"type": "resume", "conversations": {mine: False}}, "invalid_field"),
        ({"type": "resume", "conversations": {str(n): 0 for n in range(101)}}, "invalid_field"),
    ]
    for n, (frame, code) in enumerate(cases):
        if n and n % 12 == 0:
            # Two frames a case (the frame and a ping): a fresh socket before the rate limit.
            await console.disconnect()
            console, _connected = await advisor_socket(advisor)
        await expect_error(console, code, frame=frame)
    # Another advisor cannot close, write into, or take Alice's conversation either.
    await expect_error(
        rival,
        "not_your_conversation",
        frame={"type": "close", "conversation": mine, "outcome": "other"},
    )
    await expect_error(rival, "already_taken", frame={"type": "take", "conversation": mine})
    for socket in (console, rival):
        await socket.disconnect()


async def test_the_advisor_socket_refuses_binary_and_broken_frames_too(advisor):
    console, connected = await advisor_socket(advisor)
    assert connected
    await expect_error(console, "invalid_frame", data=b"\x00\x01")
    await expect_error(console, "invalid_json", text="[")
    await expect_error(console, "invalid_frame", text="42")
    await expect_error(console, "frame_too_large", text=" " * 70_000)
    await console.disconnect()


# --- the origin check (C-1) and the rate limit (C-5) --------------------------------------


@pytest.mark.parametrize("route", ["/ws/chat/", "/ws/advisor/"])
@pytest.mark.parametrize(
    ("host", "origin"),
    [
        (b"127.0.0.1:8000", b"https://evil.example"),
        (b"127.0.0.1:8000", b"http://127.0.0.1.evil.example:8000"),
        (b"127.0.0.1:8000", b"http://127.0.0.1:8000.evil.example"),
        (b"127.0.0.1:8000", b"http://127.0.0.1:8001"),
        (b"127.0.0.1:8000", b"http://127.0.0.1"),
        (b"127.0.0.1:8000", b"https://127.0.0.1:8000"),
        (b"127.0.0.1:8000", b"null"),
        (b"127.0.0.1:8000", None),
        (b"evil.example", b"http://evil.example"),
        (None, b"http://127.0.0.1"),
    ],
    ids=[
        "another site",
        "a lookalike host",
        "a port run into another host",
        "another port",
        "no port for a port",
        "another scheme",
        "null",
        "no origin",
        "a host not allowed",
        "no host",
    ],
)
async def test_a_socket_from_another_origin_or_none_is_refused_with_403(
    advisor, route, host, origin
):
    cookie = await database_sync_to_async(session_cookie)(advisor)
    headers = [(b"cookie", cookie.encode())]
    if host is not None:
        headers.append((b"host", host))
    if origin is not None:
        headers.append((b"origin", origin))
    communicator = WebsocketCommunicator(application(), route, headers=headers)
    connected, _code = await communicator.connect()
    assert connected is False  # Daphne answers 403 (tests/test_live_server.py)


@pytest.mark.parametrize("route", ["/ws/chat/", "/ws/advisor/"])
@pytest.mark.parametrize(
    ("host", "origin"),
    [
        (b"127.0.0.1:8000", b"http://127.0.0.1:8000"),
        (b"localhost:8000", b"http://LOCALHOST:8000"),
        (b"127.0.0.1", b"http://127.0.0.1"),
    ],
)
async def test_a_socket_from_the_services_own_origin_is_accepted(advisor, route, host, origin):
    cookie = await database_sync_to_async(session_cookie)(advisor)
    communicator = WebsocketCommunicator(
        application(),
        route,
        headers=[(b"host", host), (b"origin", origin), (b"cookie", cookie.encode())],
    )
    connected, _code = await communicator.connect()
    assert connected is True
    await communicator.disconnect()


async def test_a_burst_over_the_rate_limit_is_refused_with_rate_limited_and_stores_nothing():
    from realtime.sockets import RATE_BURST

    visitor, _token = await started_visitor()
    before = await snapshot()
    # Pings between the texts: they cost the server next to nothing, so the burst goes through
    # far faster than the bucket refills, however slow the database is.
    total = RATE_BURST * 3
    for n in range(total):
        if n % 2:
            await visitor.send_json_to({"type": "send", "client_id": f"b{n}", "text": "spam"})
        else:
            await visitor.send_json_to({"type": "ping"})
    frames = []
    while not await visitor.receive_nothing(timeout=0.5):
        frames.append(json.loads(await visitor.receive_from()))
    replies = [f for f in frames if f["type"] in ("error", "ack", "pong")]
    limited = [f for f in replies if f["type"] == "error"]
    acked = [f for f in replies if f["type"] == "ack"]
    assert len(replies) == total  # one reply each
    assert {(f["code"], f["ref"]) for f in limited} == {("rate_limited", None)}
    assert len(acked) < total // 2, "no text was refused"
    # Only the acknowledged texts were stored.
    after = await snapshot()
    assert after[1] - before[1] == len(acked)
    await visitor.disconnect()


# --- fuzzing -------------------------------------------------------------------------------
#
# A valid frame of each type, then up to two mutations (a field set to an odd value, a field
# removed, the type swapped), plus frames that are not objects at all. Every reply must be a
# well-formed frame, the socket must survive (it still answers a ping), and a frame answered
# with an error must leave the database as it was.

FIELD_NAMES = [
    "type",
    "text",
    "client_id",
    "token",
    "last_seq",
    "conversation",
    "conversations",
    "language",
    "writer",
    "county",
    "safe_now",
    "interpreter_needed",
    "interpreter_language",
    "urgent",
    "needed",
    "outcome",
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.sampled_from(["", " ", "sv", "en", "young", "no", "other", "ar", "AB", "x" * 4001])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
# What a plain text strategy rarely or never draws: NUL and other control characters, half
# surrogate pairs, separators, emoji, numbers past 64 bits.
odd_values = st.sampled_from(
    [
        "\x00",
        "a\x00b",
        "\ud800",
        "x\udfffy",
        "\n",
        "\u2028",
        "😀",
        "\ufeff",
        "\u202e",
        2**63,
        -(2**63) - 1,
        10**30,
        -1,
        1.5,
        float("inf"),
        float("nan"),
        [],
        {},
    ]
) | st.text(alphabet=st.characters(categories=["Cs", "Cc"]), min_size=1, max_size=8)
# Text as a client may send it: usually plain, sometimes with anything Unicode allows in JSON.
# (Surrogates, control and format characters, separators, private use.)
odd_characters = st.characters(categories=["Cs", "Cc", "Cf", "Zl", "Zp", "Co"])
any_text = st.one_of(
    st.text(min_size=1, max_size=30),
    st.text(alphabet=odd_characters, min_size=1, max_size=4),
    st.text(alphabet=odd_characters | st.characters(), min_size=1, max_size=10),
)


@st.composite
def mutated(draw, valid: dict[str, Any]) -> dict[str, Any]:
    frame = dict(valid)
    for _ in range(draw(st.integers(0, 2))):
        # Mostly a field the frame has (that is where handlers look), sometimes any field.
        names = st.sampled_from(FIELD_NAMES)
        name = draw(st.sampled_from(sorted(frame)) | names if frame else names)
        action = draw(st.sampled_from(["set", "odd", "odd", "drop"]))
        if action == "drop":
            frame.pop(name, None)
        else:
            frame[name] = draw(odd_values if action == "odd" else json_values)
    return frame


def fuzzed(valid_frames: st.SearchStrategy) -> st.SearchStrategy:
    as_objects = valid_frames.flatmap(mutated).map(lambda f: json.dumps(f, allow_nan=True))
    others = json_values.map(lambda v: json.dumps(v, allow_nan=True)) | st.text(min_size=1)
    return st.one_of(as_objects, as_objects, as_objects, others)


def visitor_frames(token: str) -> st.SearchStrategy:
    return st.one_of(
        st.fixed_dictionaries(
            {
                "type": st.just("start"),
                "language": st.sampled_from(["sv", "en"]),
                "writer": st.sampled_from(["young", "professional", "other"]),
            },
            optional={
                "safe_now": st.sampled_from(["", "yes", "no", "unknown"]),
                "county": st.sampled_from(["", "AB", "BD"]),
                "interpreter_needed": st.booleans(),
                "interpreter_language": st.sampled_from(["", "ar", "so"]),
            },
        ),
        st.fixed_dictionaries(
            {"type": st.just("resume"), "token": st.just(token), "last_seq": st.integers(0, 5)}
        ),
        st.fixed_dictionaries({"type": st.just("send"), "client_id": any_text, "text": any_text}),
        st.sampled_from([{"type": "typing"}, {"type": "leave"}, {"type": "ping"}]),
    )


def advisor_frames(mine: str, waiting: str) -> st.SearchStrategy:
    ids = st.sampled_from([mine, waiting])
    return st.one_of(
        st.fixed_dictionaries(
            {"type": st.just("resume"), "conversations": st.dictionaries(ids, st.integers(0, 5))}
        ),
        st.fixed_dictionaries({"type": st.sampled_from(["take", "typing"]), "conversation": ids}),
        st.just({"type": "take_next"}),
        st.fixed_dictionaries(
            {"type": st.just("send"), "conversation": ids, "client_id": any_text, "text": any_text}
        ),
        st.fixed_dictionaries(
            {"type": st.just("mark_urgent"), "conversation": ids, "urgent": st.booleans()}
        ),
        st.fixed_dictionaries(
            {
                "type": st.just("set_interpreter"),
                "conversation": ids,
                "needed": st.booleans(),
                "language": st.sampled_from(["", "ar", "ti"]),
            }
        ),
        st.fixed_dictionaries(
            {
                "type": st.just("close"),
                "conversation": ids,
                "outcome": st.sampled_from(["advice_given", "other"]),
            }
        ),
        st.just({"type": "ping"}),
    )


async def fuzz_one(communicator: WebsocketCommunicator, raw: str) -> None:
    """One fuzzed frame on a fresh socket: every reply is well formed, the socket survives, and
    a frame answered with an error leaves the database as it was."""
    await replies_until_pong(communicator)  # what a fresh socket gets first
    before = await snapshot()
    await communicator.send_to(text_data=raw)
    replies = await replies_until_pong(communicator)
    for frame in replies:
        assert_well_formed(frame)
    errors = [f for f in replies if f["type"] == "error"]
    if errors:
        assert len(errors) == 1, replies
        assert await snapshot() == before, (raw, errors)
    await communicator.disconnect()


def fuzz(examples: int):
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@fuzz(80)
@given(data=st.data())
async def test_fuzzed_visitor_frames_get_well_formed_replies_and_refused_ones_write_nothing(
    transactional_db,
    data,
):
    @database_sync_to_async
    def fresh_conversation() -> str:
        # A fresh waiting conversation each time: an earlier "leave" must not end the fuzzing.
        Conversation.objects.all().delete()
        return Conversation.start_web(language="sv", writer="young")[1]

    token = await fresh_conversation()
    raw = data.draw(fuzzed(visitor_frames(token)), label="frame")
    visitor = await visitor_socket()
    if '"start"' not in raw:
        await visitor.send_json_to({"type": "resume", "token": token})
    await fuzz_one(visitor, raw)


@pytest.fixture
def tireless_advisor(transactional_db) -> Any:
    """An advisor with room for what one example takes (the taken one, and take_next)."""
    return make_advisor("fuzz", capacity=5)


@fuzz(60)
@given(data=st.data())
async def test_fuzzed_advisor_frames_get_well_formed_replies_and_refused_ones_write_nothing(
    tireless_advisor,
    data,
):
    advisor = tireless_advisor

    @database_sync_to_async
    def fresh_conversations() -> tuple[str, str]:
        # Fresh conversations each time, and a short queue (each socket loads it).
        Conversation.objects.all().delete()
        mine, _token, _events = Conversation.start_web(language="sv", writer="young")
        mine.take(advisor)
        waiting, _token, _events = Conversation.start_web(language="en", writer="other")
        return str(mine.public_id), str(waiting.public_id)

    mine, waiting = await fresh_conversations()
    raw = data.draw(fuzzed(advisor_frames(mine, waiting)), label="frame")
    console, connected = await advisor_socket(advisor)
    assert connected
    await fuzz_one(console, raw)
