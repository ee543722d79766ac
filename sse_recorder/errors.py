"""One base exception, with a subclass per thing a user can get wrong.

Every message is a single line meant to be shown as is: the CLI prints it and exits 2.
"""


class SSERecorderError(Exception):
    """Base class: an expected failure with a one-line, user-facing message."""


class CassetteError(SSERecorderError):
    """A cassette is missing, foreign, damaged, of an unknown version, or cannot be written."""


class ConfigError(SSERecorderError):
    """An option, filter or redaction rule is invalid."""
