"""The pure wire format: encoder, id parsing, and a spec parser reading the encoder's bytes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifications import sse
from tests.support.sse import Parser


def test_event_has_id_type_and_data_lines():
    assert sse.encode_event('{"a":1}', event="notification", id=7) == (
        b'id: 7\nevent: notification\ndata: {"a":1}\n\n'
    )


@pytest.mark.parametrize("data", ["a\nb", "a\r\nb", "a\rb"])
def test_multiline_data_becomes_several_data_lines(data):
    assert sse.encode_event(data) == b"data: a\ndata: b\n\n"


def test_cr_lf_nul_stripped_from_id_and_event():
    frame = sse.encode_event("x", event="no\r\ntif\x00y", id="4\n2\x00")
    assert frame == b"id: 42\nevent: notify\ndata: x\n\n"


def test_empty_data_is_still_a_data_line():
    assert sse.encode_event("", event="hello") == b"event: hello\ndata: \n\n"


def test_comment_and_retry_and_id_only_block():
    assert sse.encode_comment("ping") == b": ping\n\n"
    assert sse.encode_comment("a\nb") == b": a\n: b\n\n"
    assert sse.encode_retry(3000) == b"retry: 3000\n\n"
    assert sse.encode_id(12) == b"id: 12\n\n"
    with pytest.raises(ValueError):
        sse.encode_retry(-1)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, None), ("", None), (" ", None), ("0", 0), ("42", 42), (b"17", 17), (" 9 ", 9), ("0042", 42)],
)
def test_parse_last_event_id_accepts(raw, expected):
    assert sse.parse_last_event_id(raw) == expected


@pytest.mark.parametrize(
    "raw", ["-1", "abc", "1.5", "1e3", "١٢", "+3", "9" * 21, b"\xff\xfe", "12abc", "0x10", "1 2"]
)
def test_parse_last_event_id_rejects_with_clear_message(raw):
    with pytest.raises(ValueError, match="non-negative integer"):
        sse.parse_last_event_id(raw)


@given(st.one_of(st.none(), st.text(), st.binary()))
def test_parse_last_event_id_raises_only_value_error(raw):
    try:
        result = sse.parse_last_event_id(raw)
    except ValueError:
        return
    assert result is None or (isinstance(result, int) and result >= 0)


text_without_surrogates = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))


@given(title=text_without_surrogates, body=text_without_surrogates, id=st.integers(min_value=0, max_value=2**63))
def test_spec_parser_reads_back_exactly_the_json_sent(title, body, id):
    payload = json.dumps({"title": title, "body": body}, ensure_ascii=False, separators=(",", ":"))
    parser = Parser()
    frame = sse.encode_event(payload, event="notification", id=id)
    events = []
    for i in range(0, len(frame), 7):  # arbitrary chunking, as the network would
        events += parser.feed(frame[i : i + 7])
    assert len(events) == 1
    assert events[0].type == "notification"
    assert events[0].last_event_id == str(id)
    assert json.loads(events[0].data) == {"title": title, "body": body}


@given(data=text_without_surrogates)
def test_any_text_round_trips_modulo_line_endings(data):
    events = Parser().feed(sse.encode_event(data))
    expected = data.replace("\r\n", "\n").replace("\r", "\n")
    assert [e.data for e in events] == [expected]


def test_id_only_block_moves_cursor_without_an_event():
    parser = Parser()
    assert parser.feed(sse.encode_id(5)) == []
    assert parser.last_event_id == "5"


def test_hello_frames_anonymous_kept_per_cursor_and_always_right():
    import json

    from notifications.events import hello_frame

    def parsed(frame: bytes) -> tuple[str, dict]:
        lines = dict(line.split(": ", 1) for line in frame.decode().strip().splitlines())
        return lines["id"], json.loads(lines["data"])

    first = hello_frame(None, 5)
    assert hello_frame(None, 5) is first  # encoded once for a burst at one cursor
    assert parsed(first) == ("5", {"user": None, "cursor": 5})
    assert parsed(hello_frame(None, 6)) == ("6", {"user": None, "cursor": 6})
    assert parsed(hello_frame("alice", 6)) == ("6", {"user": "alice", "cursor": 6})
    assert parsed(hello_frame(None, 5)) == ("5", {"user": None, "cursor": 5})
