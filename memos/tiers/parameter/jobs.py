"""A training run on its own thread: its progress as a stream, cancellation, its result.

A gRPC server thread streams a run's progress to its client while the run computes, so
the run needs a thread of its own; ``TrainJob`` is that thread, a queue of progress events
and a cancel event the run checks between steps.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from memos.tiers.parameter.train import TrainProgress

T = TypeVar("T")

#: What a job runs: given a progress callback and the cancel event, it returns the result.
Run = Callable[[Callable[[TrainProgress], None], threading.Event], T]


class TrainJob(Generic[T]):
    def __init__(
        self, run: Run[T], *, name: str, on_exit: Callable[[], None] | None = None
    ) -> None:
        self.name = name
        self.cancelled = threading.Event()
        self._run = run
        self._on_exit = on_exit
        self._events: queue.SimpleQueue[TrainProgress | None] = queue.SimpleQueue()
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=f"train-{name}", daemon=True)

    def start(self) -> TrainJob[T]:
        self._thread.start()
        return self

    def _main(self) -> None:
        try:
            self._result = self._run(self._events.put, self.cancelled)
        except BaseException as exc:  # handed to whoever waits for the result
            self._error = exc
        finally:
            self._events.put(None)  # the end of the stream
            if self._on_exit is not None:
                self._on_exit()

    def cancel(self) -> None:
        """Stop the run before its next step; it then registers nothing."""
        self.cancelled.set()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def progress(self, poll_s: float = 0.5) -> Iterator[TrainProgress | None]:
        """The run's progress events until it ends; ``None`` after ``poll_s`` without one,
        so that the consumer can check on its own client meanwhile."""
        while True:
            try:
                event = self._events.get(timeout=poll_s)
            except queue.Empty:
                yield None
                continue
            if event is None:
                return
            yield event

    def result(self, timeout: float | None = None) -> T:
        """Wait for the run; its result, or the exception it raised."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"training job {self.name!r} is still running")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result
