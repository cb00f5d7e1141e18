"""The deploy tool's one error type and its exit statuses (docs/deploy.md, "Exit status")."""
from runtime.errors import DynnError

EXIT_OK, EXIT_USAGE, EXIT_CONNECT, EXIT_COPY, EXIT_REQUIREMENTS, EXIT_TRT, EXIT_UDEV, EXIT_VERIFY = \
    0, 2, 3, 4, 5, 6, 7, 8


class DeployError(DynnError):
    """An expected deploy failure; runtime.cli.run_cli prints the message as one line and exits `exit_code`.

    Message first, so that runtime.schema can raise it (`error=DeployError`) for a bad manifest field."""

    def __init__(self, message, exit_code=EXIT_USAGE):
        DynnError.__init__(self, message)
        self.exit_code = exit_code
