"""The one error type of portcheck: a bad input (a spec that does not import, a rename table that is not a JSON
object of strings, an input shape that is not a list of positive integers). Command lines print it as one line
`error: ...` with exit status 2."""
from __future__ import annotations

__all__ = ["PortInputError", "ForwardError"]


class PortInputError(ValueError):
    """Bad input to portcheck, with a one-line message naming the argument or file."""


def first_line(exc: BaseException) -> str:
    """The exception's first meaningful line (Paddle's messages open with blank or dashed lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines()]
    return next((ln for ln in lines if ln and set(ln) - set("-=")), "")


class ForwardError(RuntimeError):
    """A model's own forward raised during one of compare's passes: `side` ("torch" or "Paddle"), `dtype`
    ("float32" or "float64") and the exception's type and first line in the message."""

    def __init__(self, side: str, dtype: str, exc: BaseException) -> None:
        super().__init__(f"the {side} model's own forward raised in its {dtype} pass "
                         f"({type(exc).__name__}: {first_line(exc)})")
        self.side, self.dtype = side, dtype
