"""The compiler's error type: a DynnError (runtime/errors.py) that build.py prints as one line."""
from runtime.errors import DynnError


class UserError(DynnError):
    """Expected failure: bad input, missing file, wrong flag. The message says what and what to do."""
