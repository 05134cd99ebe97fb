"""Installed versions of this tool and of the packages it reports on (conversion report, verify report, ONNX
meta.json): one reader of the package metadata."""
from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

__all__ = ["dist_version", "dist_versions", "tool_version"]


def dist_version(name: str) -> str | None:
    """Version of the installed distribution `name` (e.g. "paddlepaddle"), or None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def dist_versions(names: Iterable[str]) -> dict[str, str | None]:
    """{name: dist_version(name)} in the given order."""
    return {name: dist_version(name) for name in names}


def tool_version() -> str:
    """This project's version: the installed `conr-paddle`, else pyproject.toml's with " (source tree)"."""
    installed = dist_version("conr-paddle")
    if installed is not None:
        return installed
    import tomllib

    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        return tomllib.loads(pyproject.read_text())["project"]["version"] + " (source tree)"
    except (OSError, KeyError, ValueError):
        return "unknown"
