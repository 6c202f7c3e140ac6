"""Typed errors. Every error deepshrink raises on bad input is a :class:`DeepshrinkError`.

Each message names what is wrong and what was expected, so a user can fix the input without
reading the source.
"""

from __future__ import annotations


class DeepshrinkError(Exception):
    """Base class of every error deepshrink raises on bad input."""


class ConfigError(DeepshrinkError, ValueError):
    """A configuration or recipe value is invalid."""


class DataError(DeepshrinkError, ValueError):
    """Input data is missing or malformed."""


class ModelError(DeepshrinkError, ValueError):
    """A model cannot be built, loaded or traced."""


class UnsupportedOperationError(ModelError):
    """A model uses an operation that the deepshrink graph format cannot store (or export).

    ``problems`` lists each unsupported operation with where it occurs, when tracing found them.
    """

    def __init__(self, message: str, problems: tuple[str, ...] | list[str] = ()):
        super().__init__(message)
        self.problems = tuple(problems)


class DecompositionError(DeepshrinkError, ArithmeticError):
    """A tensor decomposition has no trustworthy answer (for example a degenerate CP fit)."""


class FormatError(DeepshrinkError, ValueError):
    """A deepshrink (.dsz) file is malformed. Subclasses name the exact failure."""


class BadMagic(FormatError):
    """The file is not a deepshrink file."""


class UnsupportedVersion(FormatError):
    """The file's format version is newer or older than this reader supports."""


class HeaderTooLarge(FormatError):
    """The header claims more bytes than the reader allows."""


class TruncatedFile(FormatError):
    """The file ends before the data its header describes."""


class ChecksumMismatch(FormatError):
    """A section's bytes do not match the checksum recorded in the header."""


class InvalidHeader(FormatError):
    """The header is not valid JSON of the expected shape, or holds inconsistent values."""


class LimitExceeded(FormatError):
    """The file describes tensors larger than the reader's safety limits."""


class InvalidValue(FormatError):
    """A stored number is not allowed: NaN or infinity in weights or the input specification."""


class CorruptStream(FormatError):
    """A coded stream inside a section does not decode to what the header describes."""
