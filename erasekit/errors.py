"""Exceptions erasekit raises for problems a user can fix (bad input, missing files)."""


class ErasekitError(Exception):
    """A user-facing error: its message is one readable line, shown without a traceback by the CLI."""
