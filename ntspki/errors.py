"""The one exception type the CLI turns into a one-line error."""


class NtspkiError(Exception):
    """A user-facing failure: the message is printed as one line, exit status `exit_code`."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
