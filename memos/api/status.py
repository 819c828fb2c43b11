"""One place that turns kernel errors into gRPC statuses, for every servicer."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import grpc
from pydantic import ValidationError

from memos.errors import MemosError

log = logging.getLogger(__name__)

_CODES: dict[str, grpc.StatusCode] = {c.name: c for c in grpc.StatusCode}

R = TypeVar("R")


def abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    if isinstance(exc, MemosError):
        context.abort(_CODES.get(exc.code, grpc.StatusCode.INTERNAL), str(exc))
    if isinstance(exc, ValidationError):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, _validation_message(exc))
    log.exception("internal error", exc_info=exc)
    context.abort(
        grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the daemon log"
    )
    raise AssertionError("unreachable: context.abort raises")


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        msg = err.get("msg", "invalid")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def unary(fn: Callable[..., R]) -> Callable[..., R]:
    """Wrap a unary servicer method: kernel errors become statuses with their message."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> R:
        try:
            return fn(self, request, context)
        except grpc.RpcError:
            raise
        except Exception as exc:
            if _already_aborted(exc):
                raise
            abort(context, exc)

    return wrapper


def streaming(fn: Callable[..., Iterator[R]]) -> Callable[..., Iterator[R]]:
    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[R]:
        try:
            yield from fn(self, request, context)
        except grpc.RpcError:
            raise
        except Exception as exc:
            if _already_aborted(exc):
                raise
            abort(context, exc)

    return wrapper


def _already_aborted(exc: BaseException) -> bool:
    # grpc's context.abort raises a bare ``Exception()``: let it through untouched.
    return type(exc) is Exception and not exc.args
