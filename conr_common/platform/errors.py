"""The error types users see, each printed as a single line: bad input (exit 2) and internal errors (exit 1)."""


class ConrInputError(Exception):
    """Bad user input (file, folder or argument). CLIs print `error: <message>` and exit with status 2."""


class ConrInternalError(Exception):
    """Something failed that is not the input's fault (a Paddle kernel, the graph export, a full disk...), with the
    step it happened in. CLIs print `error: <step> failed: <cause>` and a hint to rerun with --verbose for the
    traceback, and exit with status 1 (issue #13: such errors used to be reported as bad input, exit 2)."""

    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(step, cause)
        self.step, self.cause = step, cause

    def __str__(self) -> str:
        return f"{self.step} failed ({type(self.cause).__name__}: {self.cause})"


def internal_error_line(exc: BaseException, command: str) -> str:
    """The one line a CLI prints for an unexpected exception during `command`."""
    text = str(exc) if isinstance(exc, ConrInternalError) else f"{command} failed ({type(exc).__name__}: {exc})"
    return "error: " + " ".join(text.split()) + " (internal error; rerun with --verbose for the traceback)"


class ConrNonFiniteError(Exception):
    """A network's output became NaN or Inf (finite weights of the wrong scale do this): the frame would be fully
    transparent, so it is not written. CLIs print `error: <message>` (naming the first network whose output went
    non-finite, with a hint) and exit with status 1: the input files are readable, the computation failed."""
