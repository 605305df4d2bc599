"""The installed distribution's version, read from its metadata (one place: pyproject.toml)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ragtriage")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"
