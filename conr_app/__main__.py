"""`python -m conr_app render|demo|serve ...`: the command line of `conr_app.cli`."""
from __future__ import annotations

import sys

from conr_app.cli import main

if __name__ == "__main__":
    sys.exit(main())
