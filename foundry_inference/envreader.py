"""Typed reads of settings from an environment mapping. Every bad value raises the caller's ConfigurationError
subclass with a message that names the variable, so the CLI can print it and exit 2 (never a traceback)."""
import re

from foundry_inference.config import ConfigurationError


class EnvReader:
    def __init__(self, env, error=ConfigurationError):
        self.env, self.error = env, error

    def text(self, name):
        """The stripped value; None when unset or blank."""
        value = self.env.get(name)
        return value.strip() if value and value.strip() else None

    def _parse(self, name, default, convert, what, low, high):
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = convert(raw)
        except ValueError:
            raise self.error(f"{name}: expected {what}, got {raw!r}") from None
        if not low <= value <= high:
            raise self.error(f"{name}: {raw} is outside {low}..{high}")
        return value

    def integer(self, name, default, *, low, high):
        return self._parse(name, default, int, "an integer", low, high)

    def number(self, name, default, *, low, high):
        return self._parse(name, default, float, "a number", low, high)

    def choice(self, name, allowed, default):
        raw = self.text(name)
        if raw is None:
            return default
        if raw.lower() not in allowed:
            raise self.error(f"{name}: {raw!r} is not one of {', '.join(allowed)}")
        return raw.lower()

    def flag(self, name, default):
        raw = self.text(name)
        if raw is None:
            return default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise self.error(f"{name}: expected on/off, got {raw!r}")

    def url(self, name, default):
        value = (self.text(name) or default).rstrip("/")
        if not re.match(r"^https?://[^/\s]+", value):
            raise self.error(f"{name}: expected an http(s) URL, got {value!r}")
        return value
