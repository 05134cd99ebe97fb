"""Import Paddle without its import-time chatter on the user's stderr.

`import paddle` prints a warning to stderr whenever OMP_NUM_THREADS > 1 (it also sets OMP_NUM_THREADS=1 when the
variable is unset, which makes eager Paddle single-threaded), and warns about a missing ccache. CLIs promise one
line on stderr for an error and nothing else, so their entry points import Paddle through this function first;
later `import paddle` statements are then no-ops.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from pathlib import Path
from typing import Iterator


def import_paddle():
    """paddle, imported with its import-time prints and warnings swallowed (returns the module)."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        import paddle
    return paddle


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Send file descriptors 1 and 2 to `log` (appending) for the duration: also what C++ code (glog) and child
    processes (a compiler) print, which contextlib.redirect_* cannot catch. Python warnings go there too."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log, "ab") as f, warnings.catch_warnings():
        warnings.simplefilter("always")
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
