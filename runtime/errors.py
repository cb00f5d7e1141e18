"""One exception type for problems a person at the board can fix; the CLI prints it as one line."""


class RuntimeUserError(Exception):
    """Bad bundle, bad input, missing package. The message says what was expected and what to do."""
