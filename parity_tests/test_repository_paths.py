"""No git-tracked text file names a path outside the repository, and every repository path it names exists
(issue 24: "No file in the repository names a path outside it").

The rule, applied to every line of every tracked file that decodes as UTF-8 (this file excepted: its planted lines
are the violations it must find):
1. MACHINE: an absolute path under `/work/`, `/root/` or `/home/` (where this machine keeps checkouts and homes) is
   a reference to a file outside the repository, always.
2. CLIMBING: a relative path that climbs (`../x`) is resolved against the folder of the file that writes it; it must
   stay inside the repository and name a tracked file or folder. Climbing on purpose (a hostile upload name a test
   feeds the server) is listed in CLIMBING_ON_PURPOSE with its reason.
3. REPOSITORY: a relative path whose first folder is a top-level folder of the repository (`conr_app/...`,
   `docs/...`, `parity_tests/...`), or that ends in a source or document suffix (SOURCE_SUFFIXES: `.py`, `.md`,
   `.json`, ...), must name a tracked file or folder, relative to the repository root or to the writing file's
   folder. This catches `shared/CONR_FACTS.md` and a module that moved (`conr_paddle/render.py`). Not checked: a
   path whose first folder is in NOT_OURS (another project's tree such as the official CoNR's `model/`, or a
   folder the programs fill at run time such as `out/` or `weights/`), patterns (`*`, `<name>`, `{a,b}`) and
   placeholders in capitals (`OUT/report.json`).
4. RUNTIME: any other absolute path (`/tmp/ci-apt-chromium.log`, `/dev/zero`, `/proc/self/status`) and every `~/`
   path (`~/.cache/conr_paddle`) is a place a program writes or reads on purpose, not a file of the project:
   allowed, unless it ends in a source or document suffix (`/tmp/script.py` is a project file kept outside).
5. LINKS: the target of a Markdown link or image (`[text](target)`) that is not a URL or an anchor must name a
   tracked path relative to the Markdown file.
URLs (`scheme://host/...`) are not paths. The checker is a pure function over one file's text; the planted tests
prove each rule fires on a violation and leaves its lookalike alone before the tree-wide test applies it.
"""
from __future__ import annotations

import posixpath
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
THIS_FILE = "parity_tests/test_repository_paths.py"

MACHINE_ROOTS = ("/work/", "/root/", "/home/")
# Files whose names say they hold source or documentation: such a path is a file of the project, wherever written.
SOURCE_SUFFIXES = (".py", ".md", ".json", ".toml", ".cfg", ".ini", ".sh", ".yaml", ".yml", ".ipynb", ".rst")
# First folders of relative paths that are not this repository's files, and what they are.
NOT_OURS = {
    "model": "the official CoNR's networks (megvii-research/CoNR model/*.py)",
    "paddle": "Paddle's installed sources (paddle/jit/dy2static/utils.py)",
    "torchvision": "torchvision's installed sources",
    "out": "the output folder of the examples, written at run time",
    "weights": "the checkpoints a user downloads or converts into weights/ (only its README is tracked)",
}
# (file, path): relative paths that climb out of the repository on purpose.
CLIMBING_ON_PURPOSE = {
    ("parity_tests/test_serve.py", "../../escape.npz"): "a hostile upload name the server must refuse",
}

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_ABSOLUTE = re.compile(r"(?<![\w.~/:$-])/[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.<>*{}-]*)+")
_HOME = re.compile(r"(?<![\w./])~/[A-Za-z0-9_./<>*{}-]*")
_RELATIVE = re.compile(r"(?<![\w.~/:$<{-])(?:(?:\.\./)+[A-Za-z0-9_.<>*{}-]*(?:/[A-Za-z0-9_.<>*{}-]+)*"
                       r"|[A-Za-z0-9_.-]*[A-Za-z0-9_-](?:/[A-Za-z0-9_.<>*{}-]+)+)/?")
# Patterns and placeholders name no one file: `test_*.py`, `<cache>/ops`, `{a,b}.py`, `OUT/report.json`.
_PATTERN = re.compile(r"[*<>{}]|^[A-Z][A-Z_]*/")


def tracked_paths(files: list[str]) -> frozenset[str]:
    """Every tracked file and every folder above one, as repository-relative POSIX paths."""
    paths = set(files)
    for name in files:
        parts = name.split("/")
        paths.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return frozenset(paths)


def _strip(token: str) -> str:
    """The path without the punctuation that ends a sentence or a quotation around it."""
    return token.rstrip(".,;:'\"`)")


def _exists(path: str, writer: str, tracked: frozenset[str]) -> bool:
    """Whether `path` names a tracked file or folder, from the root or from the folder of `writer`."""
    folder = posixpath.dirname(writer)
    candidates = (posixpath.normpath(path), posixpath.normpath(posixpath.join(folder, path)))
    return any(c.rstrip("/") in tracked for c in candidates)


def _climbing_problem(path: str, writer: str, tracked: frozenset[str]) -> str | None:
    """Rule 2 for a path that starts with `../`."""
    if (writer, path) in CLIMBING_ON_PURPOSE:
        return None
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(writer), path))
    if resolved == ".." or resolved.startswith("../"):
        return f"climbs out of the repository: {path}"
    if _PATTERN.search(path) or resolved.rstrip("/") in tracked:
        return None
    return f"names {resolved}, which is not in the repository: {path}"


def _relative_problem(path: str, writer: str, tracked: frozenset[str], top: frozenset[str]) -> str | None:
    """Rules 2 and 3 for one relative path."""
    if path.startswith("../"):
        return _climbing_problem(path, writer, tracked)
    first = path.split("/", 1)[0]
    ours = first in top or path.rstrip("/").endswith(SOURCE_SUFFIXES)
    if not ours or first in NOT_OURS or _PATTERN.search(path) or _exists(path, writer, tracked):
        return None
    return f"names a repository path that does not exist: {path}"


def _absolute_problem(path: str) -> str | None:
    """Rules 1 and 4 for one absolute or `~/` path."""
    if path.startswith(MACHINE_ROOTS):
        return f"names a path of this machine outside the repository: {path}"
    if path.rstrip("/").endswith(SOURCE_SUFFIXES):
        return f"names a source or document file outside the repository: {path}"
    return None


def _link_problems(line: str, writer: str, tracked: frozenset[str]) -> list[str]:
    """Rule 5: the targets of the Markdown links and images on one line."""
    problems = []
    for target in _LINK.findall(line) if writer.endswith(".md") else ():
        target = target.split("#", 1)[0]
        if target and not _URL.match(target) and not target.startswith(("/", "~")) \
                and not _exists(target, writer, tracked):
            problems.append(f"links to a path that is not in the repository: {target}")
    return problems


def line_problems(line: str, writer: str, tracked: frozenset[str], top: frozenset[str]) -> list[str]:
    """What is wrong with the paths named on one line of the tracked file `writer` (empty when nothing is)."""
    problems = _link_problems(line, writer, tracked)
    rest = _URL.sub(" ", _LINK.sub(" ", line) if writer.endswith(".md") else line)
    for token in _ABSOLUTE.findall(rest) + _HOME.findall(rest):
        problems.append(_absolute_problem(_strip(token)))
    for token in _RELATIVE.findall(_HOME.sub(" ", _ABSOLUTE.sub(" ", rest))):
        problems.append(_relative_problem(_strip(token), writer, tracked, top))
    return [p for p in dict.fromkeys(problems) if p]


def file_problems(writer: str, text: str, tracked: frozenset[str]) -> list[str]:
    """`writer:line: problem` for every line of one tracked file."""
    top = frozenset(p for p in tracked if "/" not in p and any(t.startswith(p + "/") for t in tracked))
    return [f"{writer}:{number}: {problem}" for number, line in enumerate(text.splitlines(), 1)
            for problem in line_problems(line, writer, tracked, top)]


def _git_files() -> list[str]:
    """The repository's tracked files."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name]


def _text(path: Path) -> str | None:
    """The file's text, or None for a binary file (or one git tracks that the work tree lacks)."""
    try:
        data = path.read_bytes()
        return None if b"\0" in data else data.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


# A small repository for the planted lines: independent of the real tree, so each case says what it proves.
_TRACKED = tracked_paths(["README.md", "docs/facts.md", "docs/web_app.png", "conr_app/rendering/render.py",
                          "conr_paddle/warp.py", "parity_tests/test_x.py", "weights/README.md", ".ci/run"])

# (writer, planted line, the problem expected or None): each violation next to a lookalike that is fine.
PLANTED = [
    ("conr_paddle/warp.py", "# see /work/shared/CONR_FACTS.md", "path of this machine"),
    ("conr_paddle/warp.py", "# see https://example.org/work/shared/notes", None),
    ("README.md", "cd /home/user/conr && make", "path of this machine"),
    ("README.md", "the homework/ folder of a user", None),
    ("parity_tests/test_x.py", "# (../shared/CONR_FACTS.md)", "not in the repository"),
    ("parity_tests/test_x.py", "# (../docs/facts.md)", None),
    ("parity_tests/test_x.py", 'open("../../escape.npz")', "climbs out"),
    ("parity_tests/test_serve.py", 'Upload(path, "../../escape.npz")', None),
    ("conr_paddle/warp.py", "# the facts (shared/CONR_FACTS.md)", "does not exist: shared/CONR_FACTS.md"),
    ("conr_paddle/warp.py", "# the official code (model/shader.py)", None),
    ("README.md", "`conr_paddle/render.py` writes the frames.", "does not exist: conr_paddle/render.py"),
    ("README.md", "`conr_app/rendering/render.py` writes the frames.", None),
    ("README.md", "the tests in `parity_tests/test_gone.py`", "does not exist"),
    ("README.md", "tests named `parity_tests/test_*.py` and weights/udpparsernet.pth", None),
    ("docs/facts.md", "Script: /tmp/bisect.py (not committed).", "source or document file outside"),
    (".ci/run", "apt-get install chromium >/tmp/ci-apt.log 2>/dev/null", None),
    ("README.md", "notes kept in ~/notes.md", "source or document file outside"),
    ("README.md", "cached under `~/.cache/conr_paddle` and read from /proc/self/status", None),
    ("README.md", "![the app](docs/web_ap.png)", "links to a path that is not in the repository"),
    ("README.md", "![the app](docs/web_app.png) and [facts](docs/facts.md#cost)", None),
]


@pytest.mark.parametrize("writer, line, expected", PLANTED, ids=[f"{i}" for i in range(len(PLANTED))])
def test_planted_line(writer, line, expected):
    """Each rule fires on its planted violation and leaves the lookalike beside it alone."""
    problems = file_problems(writer, line, _TRACKED)
    if expected is None:
        assert problems == [], problems
    else:
        assert len(problems) == 1 and expected in problems[0], problems


def test_no_tracked_file_names_a_path_outside_the_repository():
    """Every tracked text file: no path outside the repository, every repository path it names exists."""
    files = _git_files()
    tracked = tracked_paths(files)
    problems = []
    for name in files:
        text = None if name == THIS_FILE else _text(ROOT / name)
        problems += file_problems(name, text, tracked) if text is not None else []
    assert not problems, f"{len(problems)} reference(s) to paths outside the repository or missing:\n" + \
        "\n".join(problems)
