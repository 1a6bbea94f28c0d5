"""The one exception family of pytest-mulm.

::

    MulmError                      every error we raise on purpose
    ├── WorkflowError (ValueError) the workflow file is unusable: names node/edge, field, what is valid
    ├── UnknownFormatError (LookupError)  an export format nobody registered
    ├── PluginError                a plugin broke the hook contract (names the plugin)
    └── ExportError                an exporter could not write its artifact
        ├── UnsafePathError        a generated path would leave the output directory
        └── MissingDependencyError an optional dependency (an extra) is not installed

Every message is one line a user can act on: what is wrong, where, and what is valid.
Inside pytest these become ``pytest.UsageError`` (exit code 4); ``mulm`` prints them and
exits with status 2.
"""

from __future__ import annotations

__all__ = [
    "ExportError",
    "MissingDependencyError",
    "MulmError",
    "PluginError",
    "UnknownFormatError",
    "UnsafePathError",
    "WorkflowError",
]


class MulmError(Exception):
    """Base class of every error pytest-mulm raises on purpose."""


class WorkflowError(MulmError, ValueError):
    """A workflow that cannot be loaded, validated or run as given.

    ``where`` is ``node 'x'`` / ``edge 'e1'`` / the file; ``field`` is the JSON field at
    fault. ``lines`` holds one line per problem when several blocks are unusable.
    """

    def __init__(self, message: str, *, where: str = "", field: str = "", lines: list[str] | None = None):
        self.where = where
        self.field = field
        self.lines = lines or []
        from .naming import printable

        text = message
        if field:
            text = f"{field}: {text}"
        if where:
            text = f"{where}: {text}"
        # workflow strings inside the message must not break it into lines or send escapes
        self.lines = [printable(line) for line in self.lines]
        super().__init__(printable(text))


class UnknownFormatError(MulmError, LookupError):
    def __init__(self, unknown: list[str], available: list[str]):
        self.unknown = unknown
        self.available = available
        super().__init__(
            f"unknown export format(s): {', '.join(unknown)}. "
            f"Available: {', '.join(available)} (or 'all')."
        )

    def __str__(self) -> str:  # LookupError would otherwise repr() the message
        return self.args[0]


class PluginError(MulmError):
    """A plugin broke the hook contract; the message names the plugin."""


class ExportError(MulmError):
    """An exporter could not produce its artifact."""


class UnsafePathError(ExportError):
    """A generated file path would escape the output directory."""


class MissingDependencyError(ExportError):
    """The format needs an optional dependency; the message names the extra to install.

    Suites skip (never pass) the items that need it, giving this message as the reason."""
