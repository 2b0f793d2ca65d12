"""The one exception type that means "the user gave us something wrong".

Entry points catch `UserError` and print its message on one line (no traceback) with exit code 2.
Every package raises a subclass of it for bad input, so the entry points need one `except`.
"""


class UserError(Exception):
    """Bad input from the user: a config, a path, a media file. The message says what and where."""


class ConfigError(UserError):
    """An invalid config file or override."""
