"""The one error type users see: a message naming the file or argument, printed as a single line."""


class ConrInputError(Exception):
    """Bad user input (file, folder or argument). CLIs print `error: <message>` and exit with status 2."""
