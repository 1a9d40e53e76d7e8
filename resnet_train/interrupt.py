"""Graceful stop on SIGTERM, SIGINT and SIGUSR1 (SLURM sends these before preemption)."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path


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


# A packed sweep (hydra/launcher=joblib): the launching process sets this to "PID:FILE"; a stop is
# the signal's number written to FILE, which its jobs, in worker processes, read and write.
SWEEP_STOP = "RESNET_TRAIN_SWEEP_STOP"


class PackedSweepStop:
    """The launching process of a packed sweep, while its jobs run in worker processes of the same
    process group, which a terminal's Ctrl-C, `timeout` and `kill -- -PGID` signal too: each running
    job then saves its state and stops by itself (GracefulStop). joblib's own reaction, killing the
    workers at once, would lose their partial epochs, and SIGTERM's default, the launcher dying
    alone, would leave them idle for minutes holding the GPU. So the first signal here only
    requests the stop, which keeps the queued jobs from starting, and the sweep ends when the
    running jobs have saved; a second signal stops at once."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __enter__(self) -> PackedSweepStop:
        self._dir = tempfile.mkdtemp(prefix="resnet-train-sweep-")
        os.environ[SWEEP_STOP] = f"{os.getpid()}:{os.path.join(self._dir, 'stop')}"
        self._previous = {s: signal.signal(s, self._handle) for s in GracefulStop.SIGNALS}
        return self

    def _handle(self, signum, _frame) -> None:
        if sweep_stop_requested() is not None:
            raise KeyboardInterrupt
        request_sweep_stop(signum)
        print(f"resnet-train: {signal.Signals(signum).name}: each running job saves its state and stops, the other "
              "jobs do not start; the same signal again stops at once", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        self.signum = sweep_stop_requested()
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        os.environ.pop(SWEEP_STOP, None)
        shutil.rmtree(self._dir, ignore_errors=True)


def _sweep_stop() -> tuple[int, str] | None:
    value = os.environ.get(SWEEP_STOP)
    if not value:
        return None
    pid, path = value.split(":", 1)
    return int(pid), path


def sweep_stop_requested() -> int | None:
    """The signal that stopped this packed sweep, or None."""
    stop = _sweep_stop()
    try:
        return int(Path(stop[1]).read_text()) if stop else None
    except (FileNotFoundError, ValueError):  # none requested, or a request being written
        return None


def request_sweep_stop(signum: int) -> None:
    stop = _sweep_stop()
    if stop:
        Path(stop[1]).write_text(str(signum))


def in_packed_worker() -> bool:
    """A job of a packed sweep, running in a worker process (not in the launching one, as joblib
    runs the jobs of hydra.launcher.n_jobs=1)."""
    stop = _sweep_stop()
    return stop is not None and stop[0] != os.getpid()
