"""Text that leaves a generation token by token: stop sequences (honoured exactly, never emitted) and tool-call
detection (a tool call is never streamed as content).

Both hold back only the suffix that could still turn into a match, so text streams with no delay unless it might be
the start of a stop string or a tool call.
"""


class StopMatcher:
    """feed(text) -> (text safe to emit, matched?); after a match, everything from the stop string on is dropped."""

    def __init__(self, stops):
        self.stops = tuple(s for s in stops if s)
        self.longest = max((len(s) for s in self.stops), default=0)
        self.held = ""
        self.matched = False

    def feed(self, text):
        if self.matched:
            return "", True
        if not self.stops:
            return text, False
        buf = self.held + text
        first = None
        for stop in self.stops:
            at = buf.find(stop)
            if at >= 0 and (first is None or at < first):
                first = at
        if first is not None:
            self.matched = True
            self.held = ""
            return buf[:first], True
        keep = _partial_suffix(buf, self.stops, self.longest)
        self.held = buf[len(buf) - keep:] if keep else ""
        return buf[:len(buf) - keep], False

    def flush(self):
        """At the end of generation: the held text was no stop string after all."""
        out, self.held = self.held, ""
        return "" if self.matched else out


def _partial_suffix(buf, stops, longest):
    """Length of the longest suffix of `buf` that is a proper prefix of a stop string."""
    for size in range(min(longest - 1, len(buf)), 0, -1):
        tail = buf[-size:]
        if any(stop.startswith(tail) for stop in stops):
            return size
    return 0


TOOL_OPEN = "<tool_call>"
TOOL_CLOSE = "</tool_call>"


class ToolCallFilter:
    """Separates tool calls from content in a streamed answer.

    mode "auto": content streams until the answer starts (after whitespace) with `<tool_call>` or `{`, or a
    `<tool_call>` tag appears; from there the rest is buffered and parsed at the end. mode "forced": the whole answer
    is a JSON tool call (constrained decoding produced it), nothing is streamed as content.
    """

    def __init__(self, tool_names, mode="auto"):
        self.names = set(tool_names)
        self.mode = mode
        self.content = []           # everything emitted as content
        self.buffer = ""            # text held back as a possible tool call
        self.capturing = mode == "forced"
        self.started = False        # any non-whitespace seen

    def feed(self, text):
        """-> content text to emit now (possibly empty)."""
        if self.capturing:
            self.buffer += text
            return ""
        buf = self.buffer + text
        if not self.started:
            stripped = buf.lstrip()
            if not stripped:
                self.buffer = buf
                return ""
            if stripped.startswith("{") or stripped.startswith(TOOL_OPEN):
                self.capturing = True
                self.buffer = buf
                return ""
            if TOOL_OPEN.startswith(stripped):
                self.buffer = buf          # could still become "<tool_call>"
                return ""
            self.started = True
        at = buf.find(TOOL_OPEN)
        if at >= 0:
            self.capturing = True
            self.buffer = buf[at:]
            return self._emit(buf[:at])
        keep = _partial_suffix(buf, (TOOL_OPEN,), len(TOOL_OPEN))
        self.buffer = buf[len(buf) - keep:] if keep else ""
        return self._emit(buf[:len(buf) - keep])

    def _emit(self, text):
        if text:
            self.content.append(text)
        return text

    def finish(self):
        """-> (content to emit now, tool calls [{"name", "arguments" (JSON text)}])."""
        calls = parse_tool_calls(self.buffer, self.names) if self.buffer.strip() else []
        if calls:
            return "", calls
        rest, self.buffer = self.buffer, ""
        return self._emit(rest), []


def parse_tool_calls(text, names):
    """Tool calls in `text`: `<tool_call>{json}</tool_call>` blocks (the closing tag may be missing at the end), or
    the whole text being one JSON object (or a list of them) with a known `name` and `arguments`. Returns [] when
    the text is not a tool call, so it is answered as content."""
    import json

    text = text.strip()
    chunks = []
    if TOOL_OPEN in text:
        for part in text.split(TOOL_OPEN)[1:]:
            chunks.append(part.split(TOOL_CLOSE)[0].strip())
    else:
        chunks.append(text)
    calls = []
    for chunk in chunks:
        try:
            value = json.loads(chunk)
        except ValueError:
            return []
        items = value if isinstance(value, list) else [value]
        for item in items:
            if not isinstance(item, dict):
                return []
            name = item.get("name")
            if isinstance(item.get("function"), dict):       # {"function": {"name", "arguments"}} shape
                name = item["function"].get("name")
                item = item["function"]
            if name not in names:
                return []
            args = item.get("arguments", item.get("parameters", {}))
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except ValueError:
                    return []
            if not isinstance(args, dict):
                return []
            calls.append({"name": name, "arguments": json.dumps(args, ensure_ascii=False)})
    return calls
