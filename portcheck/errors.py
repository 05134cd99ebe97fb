"""The one error type of portcheck: a bad input (a spec that does not import, a rename table that is not a JSON
object of strings, an input shape that is not a list of positive integers). Command lines print it as one line
`error: ...` with exit status 2."""
from __future__ import annotations

__all__ = ["PortInputError"]


class PortInputError(ValueError):
    """Bad input to portcheck, with a one-line message naming the argument or file."""
