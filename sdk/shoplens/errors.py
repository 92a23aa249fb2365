"""The one exception hierarchy of ShopLens.

Every error says what was wrong and what to do about it. The CLI maps these to a one-line message
on stderr and an exit code in exactly one place (``shoplens.cli.main``): ``exit_code`` 2 means
"bad usage or bad input", 1 means "the work ran and failed" (a gate, a conversion).
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "ConversionError",
    "DataError",
    "DelegateUnavailableError",
    "DependencyError",
    "DriftGateFailed",
    "InvalidFrameError",
    "ModelError",
    "OutputExistsError",
    "ShopLensError",
    "UsageError",
]


class ShopLensError(Exception):
    """Base of every error ShopLens raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        if not isinstance(message, str):  # an error passed as a tuple is a classic bug; refuse it
            raise TypeError(f"{type(self).__name__} needs a str message, got {type(message).__name__}")
        super().__init__(message)

    @property
    def message(self) -> str:
        return str(self.args[0])


class UsageError(ShopLensError, ValueError):
    """An option or argument that cannot be honoured (out of range, unknown name, conflicting)."""

    exit_code = 2


class DataError(ShopLensError):
    """Input data that is missing, corrupt, empty or inconsistent."""

    exit_code = 2


class ModelError(ShopLensError):
    """A model file that is missing, corrupt, or not the kind of model expected."""

    exit_code = 2


class InvalidFrameError(ShopLensError, ValueError):
    """A camera frame that cannot be classified (None, empty, wrong shape or dtype, NaN)."""

    exit_code = 2


class DependencyError(ShopLensError):
    """A package this command needs is not installed; the message names the install command."""

    exit_code = 2


class BackendUnavailableError(DependencyError):
    """No TFLite interpreter package (ai-edge-litert, tflite-runtime, tensorflow) is installed."""


class DelegateUnavailableError(ShopLensError):
    """A hardware delegate (Edge TPU) whose library or device is not present."""

    exit_code = 2


class OutputExistsError(ShopLensError):
    """An output that already exists and would be overwritten without ``overwrite=True``."""

    exit_code = 2


class ConversionError(ShopLensError):
    """The conversion ran and failed (converter error, budget not met)."""

    exit_code = 1


class DriftGateFailed(ShopLensError):
    """An accuracy-drift gate was not met."""

    exit_code = 1
