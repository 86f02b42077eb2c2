"""The exceptions dmx raises. Each class carries the CLI's exit status for the same failure
(``exit_code``): 1 for corrupt or mismatching data, 2 for usage and I/O errors."""

from __future__ import annotations

from typing import Any


class DmxError(Exception):
    """Base class of every error dmx raises (also raised for an internal error)."""

    #: The exit status of the ``dmx`` command for this failure.
    exit_code: int = 2


class CorruptArchiveError(DmxError):
    """The archive is damaged: a checksum failed or its structure is invalid (exit 1)."""

    exit_code = 1


class VerificationError(DmxError):
    """Decoded data differs from the original or from a recorded hash, e.g. a delta
    rebuilt on the wrong base (exit 1). ``report`` holds the report when there is one."""

    exit_code = 1
    report: Any = None


class UsageError(DmxError, ValueError):
    """The request cannot be carried out as given: a bad option, an unknown tensor, a
    file that is not an archive (exit 2). Also a ``ValueError``."""


class TensorNotFoundError(UsageError, KeyError):
    """The archive has no tensor of that name. Also a ``KeyError``."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CancelledError(DmxError):
    """The operation was cancelled; it left no partial output."""


class DmxOSError(DmxError, OSError):
    """Reading or writing a file failed (exit 2). ``filename`` is the path and ``errno``
    the system's error number, when known; ``str()`` is the CLI's message."""

    def __init__(self, message: str, errno: int | None = None, filename: str | None = None):
        if errno is not None:
            super().__init__(errno, message, filename)
        else:
            super().__init__(message)
            self.filename = filename
        self._message = message

    def __str__(self) -> str:
        return self._message


class DmxFileNotFoundError(DmxOSError, FileNotFoundError):
    """A file or folder does not exist."""


class DmxFileExistsError(DmxOSError, FileExistsError):
    """The output exists and ``force=True`` was not given."""


class DmxPermissionError(DmxOSError, PermissionError):
    """Permission denied."""


class DmxIsADirectoryError(DmxOSError, IsADirectoryError):
    """A folder was given where a file is needed."""


class DmxNotADirectoryError(DmxOSError, NotADirectoryError):
    """A file was given where a folder is needed."""


def check_metadata(metadata: Any) -> dict[str, str] | None:
    """``metadata`` as a ``dict[str, str]`` (safetensors' rule), or :class:`UsageError`."""
    if metadata is None:
        return None
    for k, v in dict(metadata).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise UsageError(f"metadata must map strings to strings; got {k!r}: {v!r}")
    return dict(metadata)


def _make(kind: str, message: str, errno: int | None, path: str | None) -> BaseException:
    """Builds the exception named ``kind`` (called by the extension)."""
    cls = globals().get(kind)
    if not (isinstance(cls, type) and issubclass(cls, DmxError)):
        cls = DmxError
    if issubclass(cls, DmxOSError):
        return cls(message, errno, path)
    return cls(message)


__all__ = [
    "DmxError",
    "CorruptArchiveError",
    "VerificationError",
    "UsageError",
    "TensorNotFoundError",
    "CancelledError",
    "DmxOSError",
    "DmxFileNotFoundError",
    "DmxFileExistsError",
    "DmxPermissionError",
    "DmxIsADirectoryError",
    "DmxNotADirectoryError",
]
