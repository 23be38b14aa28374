"""Stop sequences and tool-call detection on streamed text."""
import json

import pytest

from foundry_inference.apps.chat.textstream import StopMatcher, ToolCallFilter, parse_tool_calls

pytestmark = pytest.mark.unit


def feed_all(matcher, pieces):
    out, matched = [], False
    for piece in pieces:
        text, matched = matcher.feed(piece)
        out.append(text)
        if matched:
            break
    if not matched:
        out.append(matcher.flush())
    return "".join(out), matched


@pytest.mark.parametrize("pieces,stops,expected,matched", [
    (["Hello", " wor", "ld", "!"], ["world"], "Hello ", True),
    (["Hello", " wor", "ld", "!"], ["xyz"], "Hello world!", False),
    (["ab", "c<", "/s", ">tail"], ["</s>"], "abc", True),
    (["one two"], ["two", "one"], "", True),                       # the earliest match wins
    (["a", "b"], ["bc"], "ab", False),                               # a held partial match is released at the end
    (["x\n\n", "y"], ["\n\n"], "x", True),
])
def test_stop_matcher(pieces, stops, expected, matched):
    assert feed_all(StopMatcher(stops), pieces) == (expected, matched)


def test_stop_matcher_holds_back_only_a_possible_prefix():
    m = StopMatcher(["STOP"])
    assert m.feed("abc S") == ("abc ", False)          # "S" may start STOP
    assert m.feed("T") == ("", False)
    assert m.feed("x") == ("STx", False)               # it did not
    assert m.feed("ST") == ("", False)
    assert m.feed("OP and more") == ("", True)
    assert m.feed("anything") == ("", True)


def test_no_stops_is_a_pass_through():
    m = StopMatcher([])
    assert m.feed("abc") == ("abc", False)
    assert m.flush() == ""


def test_tool_filter_streams_plain_content():
    f = ToolCallFilter(["get_weather"])
    assert f.feed("  ") == ""
    assert f.feed("It is ") == "  It is "
    assert f.feed("sunny.") == "sunny."
    assert f.finish() == ("", [])


def test_tool_filter_captures_a_tagged_call():
    f = ToolCallFilter(["get_weather"])
    out = [f.feed(p) for p in ["<tool", "_call>{\"name\": \"get_weather\", ", "\"arguments\": {\"city\": \"Paris\"}}",
                               "</tool_call>"]]
    assert out == ["", "", "", ""]
    rest, calls = f.finish()
    assert rest == "" and calls == [{"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}]


def test_tool_filter_content_then_call():
    f = ToolCallFilter(["f"])
    assert f.feed("Sure. <tool_") == "Sure. "
    assert f.feed("call>{\"name\":\"f\",\"arguments\":{}}") == ""
    assert f.finish() == ("", [{"name": "f", "arguments": "{}"}])
    assert f.content == ["Sure. "]


def test_tool_filter_releases_json_that_is_not_a_call():
    f = ToolCallFilter(["f"])
    assert f.feed("{\"a\": 1}") == ""
    assert f.finish() == ("{\"a\": 1}", [])


def test_forced_mode_parses_bare_json():
    f = ToolCallFilter(["f", "g"], mode="forced")
    assert f.feed("{\"name\":\"g\",\"arguments\":{\"x\":[1,2]}}") == ""
    assert f.finish() == ("", [{"name": "g", "arguments": "{\"x\": [1, 2]}"}])


@pytest.mark.parametrize("text,names,count", [
    ("<tool_call>{\"name\":\"a\",\"arguments\":{}}</tool_call><tool_call>{\"name\":\"b\",\"arguments\":{}}", "ab", 2),
    ("[{\"name\":\"a\",\"arguments\":{}},{\"name\":\"b\",\"arguments\":\"{}\"}]", "ab", 2),
    ("{\"function\":{\"name\":\"a\",\"arguments\":{\"q\":1}}}", "a", 1),
    ("{\"name\":\"zzz\",\"arguments\":{}}", "a", 0),           # unknown tool: content
    ("<tool_call>not json</tool_call>", "a", 0),
    ("{\"name\":\"a\",\"arguments\":[1]}", "a", 0),             # arguments must be an object
])
def test_parse_tool_calls(text, names, count):
    assert len(parse_tool_calls(text, set(names))) == count
