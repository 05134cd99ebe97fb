"""Import Paddle without its import-time chatter on the user's stderr.

`import paddle` prints a warning to stderr whenever OMP_NUM_THREADS > 1 (it also sets OMP_NUM_THREADS=1 when the
variable is unset, which makes eager Paddle single-threaded), and warns about a missing ccache. CLIs promise one
line on stderr for an error and nothing else, so their entry points import Paddle through this function first;
later `import paddle` statements are then no-ops.
"""
from __future__ import annotations

import contextlib
import io
import warnings


def import_paddle():
    """paddle, imported with its import-time prints and warnings swallowed (returns the module)."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        import paddle
    return paddle
