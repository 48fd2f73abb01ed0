"""Stopping on a signal: SIGINT/SIGTERM ask the training loop to stop after the current step and
write its checkpoint (StopFlag); it then raises TrainingInterrupted, carrying the partial result."""

from __future__ import annotations

import signal

from .config import TrainResult


class TrainingInterrupted(KeyboardInterrupt):
    """A signal stopped training after a checkpoint was written; `.result` is the partial result."""

    def __init__(self, result: TrainResult):
        super().__init__(f"training stopped by a signal at step {result.steps}; the checkpoint in {result.out} "
                         f"continues it (resume)")
        self.result = result


class StopFlag:
    """With a checkpoint to write: SIGINT/SIGTERM ask the loop to stop after the current step, write
    the checkpoint and raise TrainingInterrupted; a second SIGINT interrupts at once. Without one
    (no out directory) the signals keep their usual effect."""

    def __init__(self, enabled: bool):
        self.set = False
        self.old = {}
        self.enabled = enabled

    def __enter__(self):
        if not self.enabled:
            return self
        try:
            for s in (signal.SIGINT, signal.SIGTERM):
                self.old[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread: no handlers
            self.old = {}
        return self

    def _handle(self, signum, frame):
        if self.set and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)
