"""Run-folder outputs: TensorBoard scalars and HParams, metrics.jsonl, summary.json."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm


class ConsoleHandler(logging.Handler):
    """Log lines on stdout through tqdm.write, so a progress bar on stderr is redrawn below them
    instead of being cut (used by conf/hydra/job_logging/resnet_train.yaml). The console shows
    messages alone, so a warning says that it is one."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            tqdm.write(f"warning: {text}" if record.levelno == logging.WARNING else text, file=sys.stdout)
        except BrokenPipeError:  # the reader went away (resnet-train ... | head)
            pass
        except Exception:  # noqa: BLE001  (logging's own convention: report, never raise)
            self.handleError(record)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


class RunLogger:
    """Writes a run's logs. Only one process of a run may hold one (rank 0 under DDP)."""

    def __init__(self, run_dir: Path, history: list[dict] | None = None, enabled: bool = True):
        self.enabled = enabled
        if not enabled:  # a DDP rank other than 0: every method does nothing
            return
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(self.run_dir / "tb"))
        self.jsonl = self.run_dir / "metrics.jsonl"
        # A resumed run rewrites the history it carries, so the file never holds a record twice.
        with open(self.jsonl, "w") as f:
            for record in history or []:
                f.write(json.dumps(record) + "\n")

    def scalars(self, values: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def record(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(record) + "\n")

    def hparams(self, values: dict[str, Any], results: dict[str, float]) -> None:
        """HParams in the run's own event file (add_hparams would open a second run folder).
        Booleans go as "true"/"false": TensorBoard would show them as 0.0000 and 1.0000."""
        if not self.enabled:
            return
        from torch.utils.tensorboard.summary import hparams

        typed = {k: str(v).lower() if isinstance(v, bool) else v if isinstance(v, (int, float, str)) else str(v)
                 for k, v in values.items()}
        metric_tags = {f"hparams/{k}": v for k, v in results.items()}
        for summary in hparams(typed, metric_tags):
            self.writer.file_writer.add_summary(summary)
        for tag, value in metric_tags.items():
            self.writer.add_scalar(tag, value)

    def summary(self, summary: dict[str, Any]) -> None:
        if not self.enabled:
            return
        tmp = self.run_dir / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        tmp.replace(self.run_dir / "summary.json")

    def flush(self) -> None:
        if self.enabled:
            self.writer.flush()

    def close(self) -> None:
        if self.enabled:
            self.writer.close()
