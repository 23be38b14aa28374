"""Structured, quiet-by-default logging on stderr: one JSON object per line, or readable text lines when stderr is a
terminal (`foundry-inference up` in a shell). FOUNDRY_LOG_FORMAT / `--log-format`: auto (the default), json, text."""
import json
import logging
import os
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record):
        entry = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                 "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        for key, value in getattr(record, "fields", {}).items():
            entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`12:00:01 info  operator.agent  node agent started  data_dir=/x nginx=/usr/sbin/nginx` (local time)."""

    def format(self, record):
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        name = record.name.removeprefix("foundry_inference.")
        line = f"{stamp} {record.levelname.lower():<7} {name:<18} {record.getMessage()}"
        fields = getattr(record, "fields", {})
        if fields:
            line += "  " + " ".join(f"{k}={_text(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text(value):
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (not text or any(c.isspace() for c in text)) else text


FORMATS = ("auto", "json", "text")


def choose_format(fmt=None, stream=None):
    """"json" or "text": `fmt` (or FOUNDRY_LOG_FORMAT), where auto means text on a terminal, JSON otherwise."""
    fmt = (fmt or os.environ.get("FOUNDRY_LOG_FORMAT") or "auto").lower()
    if fmt not in FORMATS:
        fmt = "auto"
    if fmt == "auto":
        stream = stream or sys.stderr
        return "text" if hasattr(stream, "isatty") and stream.isatty() else "json"
    return fmt


def setup(level=None, fmt=None):
    """Configure the root logger once. FOUNDRY_LOG_LEVEL (default info); access logs only at debug."""
    level = (level or os.environ.get("FOUNDRY_LOG_LEVEL", "info")).upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter() if choose_format(fmt) == "text" else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("tornado.access").setLevel(logging.DEBUG if level == "DEBUG" else logging.WARNING)
    for noisy in ("kubernetes", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def event(logger, msg, level=logging.INFO, **fields):
    """Log `msg` with structured key/value fields."""
    logger.log(level, msg, extra={"fields": fields})
