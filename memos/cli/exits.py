"""Exit codes of memosctl, one per error class, and the one-line error report on stderr."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

import typer
from pydantic import ValidationError

from memos.errors import MemosError

OK = 0
FAILURE = 1  # anything without a code of its own (an internal error of the daemon)
USAGE = 2  # a bad flag or argument, caught before any call (click's own code)

EXIT_CODES: dict[str, int] = {
    "INVALID_ARGUMENT": 3,
    "NOT_FOUND": 4,
    "ALREADY_EXISTS": 5,
    "UNAUTHENTICATED": 6,
    "PERMISSION_DENIED": 7,
    "FAILED_PRECONDITION": 8,
    "RESOURCE_EXHAUSTED": 9,
    "UNAVAILABLE": 10,
    "DEADLINE_EXCEEDED": 11,
}

EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 other failure, 2 usage error, "
    + ", ".join(f"{code} {name.lower().replace('_', ' ')}" for name, code in EXIT_CODES.items())
    + "."
)

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int = FAILURE) -> NoReturn:
    """Report one line on stderr and exit with ``code``; stdout stays untouched."""
    typer.echo(f"memosctl: {message}", err=True)
    raise typer.Exit(code)


def exit_code(error: MemosError) -> int:
    return EXIT_CODES.get(error.code, FAILURE)


def reports_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn the client's typed errors into a message on stderr and the class's exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except MemosError as exc:
            label = exc.code.lower().replace("_", " ")
            fail(f"error ({label}): {_one_line(str(exc))}", exit_code(exc))
        except ValidationError as exc:
            # The daemon answered with a record this client cannot read: a version skew.
            fail(f"error: unexpected answer from the daemon: {_one_line(str(exc))}")
        except OSError as exc:
            fail(f"error: {_one_line(str(exc))}")

    return wrapper


def _one_line(text: str) -> str:
    return " ".join(text.split())
