"""Typed errors whose message is written for the user.

The CLI prints any `AmmkdError` as one red line and exits non-zero, without a traceback;
anything else is a bug and keeps its traceback.
"""


class AmmkdError(Exception):
    """Base class: a problem the user can fix (bad input, bad config, bad bundle)."""


class DataError(AmmkdError):
    """A data spec, dataset file, image or caption is unusable."""


class ConfigError(AmmkdError):
    """A config file or option is invalid."""


class BundleError(AmmkdError):
    """A bundle is missing files, tampered with, truncated or of an unknown format."""


class ExportError(AmmkdError):
    """A conversion failed or missed its parity bound."""


class OutputError(AmmkdError):
    """An output cannot be written: a read-only or missing folder, no permission, a full disk."""


def write_failure(path, e: BaseException) -> OutputError:
    """One line for a failed write of `path`: the OS's reason (No space left on device, ...)."""
    reason = getattr(e, "strerror", None) or str(e).removeprefix("Error while serializing: ")
    return OutputError(f"{path}: cannot be written ({reason}); nothing was half-written")
