"""One exception type for failures a user can fix; the CLI prints it as one line."""


class UserError(Exception):
    """Expected failure: bad input, missing file, wrong flag. The message says what and what to do."""
