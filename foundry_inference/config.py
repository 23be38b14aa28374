"""The one error type for bad configuration: the CLI prints its message and exits 2, never a traceback."""


class ConfigurationError(ValueError):
    pass


class SettingsError(ConfigurationError):
    """A data-plane server's setting is missing or malformed; raised at start-up."""
