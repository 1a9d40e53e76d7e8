"""Graceful stop on SIGTERM, SIGINT and SIGUSR1 (SLURM sends these before preemption)."""

from __future__ import annotations

import signal
import threading


class Interrupted(Exception):
    """The run stopped on a signal after saving its state. `forward` is the handler the signal
    had before the run took it over (submitit's requeue handler under SLURM), or None."""

    def __init__(self, message: str, signum: int, forward=None):
        super().__init__(message)
        self.signum = signum
        self.forward = forward if callable(forward) and forward is not signal.default_int_handler else None


class GracefulStop:
    """While active, a signal only sets a flag; the loop checks it after each step, saves and
    stops. A second SIGINT (Ctrl-C twice) stops at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, _frame) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def previous(self, signum: int | None):
        return self._previous.get(signum)

    def __call__(self) -> bool:
        return self.signum is not None
