"""What every command line of the toolkit shares: one-line errors with exit status 2."""
from __future__ import annotations

import argparse
import linecache
import logging
import re
import sys

EXIT_INPUT = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit status 2, like every other input error."""

    def error(self, message: str):
        self.exit(EXIT_INPUT, f"error: {message} (see {self.prog} --help)\n")


def one_line(text: object) -> str:
    """A message folded onto one line (an exception text may carry newlines)."""
    return " ".join(str(text).split())


# Bounds of the numeric options of `render` and `demo`, checked when the command line is parsed (before any file is
# written or model loaded). --size is bounded by `conr_common.data.pipeline.check_size`.
MAX_BATCH = 64  # frames per model call: 64 frames at 256 px hold ~13 GB of activations in the step graph
MAX_FPS = 1000.0
MAX_FRAMES = 100_000  # demo sequence length (the official sample sequences have 1,459 frames)


def _int_argument(fits, expected: str):
    """An argparse type: an integer for which `fits(value)` holds, else "expected <expected>, got '<text>'"."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not fits(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def bounded_int(low: int, high: int):
    """An argparse type: an integer in [low, high]."""
    return _int_argument(lambda value: low <= value <= high, f"an integer in [{low}, {high}]")


# An argparse type: an integer of at least 1, no upper bound (--workers, --threads).
positive_int = _int_argument(lambda value: value >= 1, "a positive integer")


def frame_rate(text: str) -> float:
    """An argparse type: a frame rate in (0, MAX_FPS]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (0 < value <= MAX_FPS):
        raise argparse.ArgumentTypeError(f"expected a frame rate in (0, {MAX_FPS:g}], got {text!r}")
    return value


class _OneLineWarning(logging.Handler):
    """Writes each captured Python warning to the current stderr as one `warning: <message>` line.

    `logging.captureWarnings` hands the logger the standard `file:line: Category: message` text followed by the
    source line; both are dropped here, the message is folded onto one line."""

    _HEAD = re.compile(r"^(?P<file>.*?):(?P<line>\d+): (?P<category>[A-Za-z_][\w.]*): ", re.S)

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        head = self._HEAD.match(text)
        if head is not None:
            source = linecache.getline(head["file"], int(head["line"])).strip()
            text = text[head.end():]
            if source and text.endswith(f"\n  {source}\n"):
                text = text[: -(len(source) + 3)]
        sys.stderr.write(f"warning: {one_line(text)}\n")


def one_line_warnings() -> None:
    """Print Python warnings (numpy overflow, a view without alpha...) as one `warning: ...` line each instead of
    the default two lines with the source line, so that a command's output stays one line per event. Goes through
    the standard library's own hook (`logging.captureWarnings`); calling it again changes nothing."""
    logging.captureWarnings(True)
    logger = logging.getLogger("py.warnings")
    if not any(isinstance(h, _OneLineWarning) for h in logger.handlers):
        logger.addHandler(_OneLineWarning())
    logger.propagate = False
