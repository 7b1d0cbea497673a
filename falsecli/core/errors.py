"""The one exception type the CLI turns into a single line and exit code 1."""


class FalseCliError(Exception):
    """A run-time problem the user can fix; the message names the file/key/value and the fix."""
