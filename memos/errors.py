"""The errors the kernel raises. The gRPC layer maps each to one status code.

Every message says what to fix: it reaches a person through memosctl or a client.
"""

from __future__ import annotations


class MemosError(Exception):
    """Base class: ``code`` names the gRPC status the API layer answers with."""

    code = "INTERNAL"


class InvalidArgument(MemosError):
    code = "INVALID_ARGUMENT"


class NotFound(MemosError):
    code = "NOT_FOUND"


class AlreadyExists(MemosError):
    code = "ALREADY_EXISTS"


class PermissionDenied(MemosError):
    code = "PERMISSION_DENIED"


class Unauthenticated(MemosError):
    code = "UNAUTHENTICATED"


class FailedPrecondition(MemosError):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(MemosError):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(MemosError):
    code = "UNAVAILABLE"
