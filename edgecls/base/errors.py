"""Typed errors. The CLI maps each to a one-line message and exit code 2.

Messages say what was received, what was expected, and how to fix it.
"""

from __future__ import annotations


class EdgeclsError(Exception):
    """Base class for every error edgecls raises on purpose."""

    exit_code = 2


class DataError(EdgeclsError):
    """The data set is missing, empty, unreadable or unsuitable."""


class ModelError(EdgeclsError):
    """A model file is missing, not a model, or does not fit the request."""


class ConfigError(EdgeclsError):
    """An option or configuration file is invalid."""


class RuntimeUnavailableError(EdgeclsError):
    """No inference engine that can run this artifact is installed."""


class RemoteError(EdgeclsError):
    """A remote (SSH) operation failed."""


class CameraError(EdgeclsError):
    """A camera, stream, video file or image folder cannot be opened or read."""


class FrameTimeout(CameraError):
    """A source delivered no frame within the time allowed (``FrameSource.read(timeout)``)."""
