"""The `resnet-train` command: Hydra composes the config, train.py and modes.py do the work."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from . import distributed
from .checkpoint import CheckpointError
from .config import Config, register_configs, validate
from .data import DataError
from .engine import DivergenceError
from .interrupt import Interrupted

register_configs()

USER_ERRORS = (ValueError, DataError, CheckpointError, DivergenceError, OSError)


class UserError(CompactHydraException):
    """In a multirun, fails only its own job; Hydra prints it after the sweep, one line per job."""


@hydra.main(version_base="1.3", config_path="pkg://resnet_train.conf", config_name="config")
def hydra_main(dict_cfg: DictConfig) -> dict | None:
    from .modes import describe, evaluate_checkpoint
    from .train import train

    cfg: Config = OmegaConf.to_object(dict_cfg)
    try:
        validate(cfg)
        if cfg.mode == "info":
            return describe(cfg)
        if cfg.mode == "eval":
            return evaluate_checkpoint(cfg)
        hydra_cfg = HydraConfig.get()
        job_index = hydra_cfg.job.num if hydra_cfg.mode == RunMode.MULTIRUN else None
        return train(cfg, hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task), job_index,
                     distributed.from_env())
    except Interrupted as exc:
        # The whole process stops, a sweep included: the signal was meant for it (e.g. preemption).
        if distributed.from_env().is_main:
            print(f"resnet-train: {exc}", file=sys.stderr, flush=True)
        if exc.forward is not None:  # e.g. submitit requeues the job, then exits
            exc.forward(exc.signum, None)
        sys.exit(128 + exc.signum)
    except USER_ERRORS as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        message = f"resnet-train: error: {exc}"
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise UserError(message) from None
        # A single run ends here with one line; SystemExit passes Hydra's job wrapper untouched.
        print(message, file=sys.stderr)
        sys.exit(1)


def _unwritable_output(argv: list[str]) -> str | None:
    """Hydra creates the run folder before any of our code runs and fails with a traceback when
    it cannot; this check names the folder instead."""
    folder = "outputs"
    for arg in argv:
        for key in ("hydra.run.dir=", "hydra.sweep.dir="):
            if arg.startswith(key):
                folder = arg[len(key):]
    path = os.path.abspath(folder)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        return f"cannot create the output folder {folder}: {path} is a file; choose another with hydra.run.dir=..."
    if not os.access(path, os.W_OK):
        return f"cannot write the output folder {folder}: {path} is not writable; choose another with hydra.run.dir=..."
    return None


def main() -> None:
    problem = _unwritable_output(sys.argv[1:])
    rank = distributed.from_env()
    if rank.active and any(arg in ("-m", "--multirun") for arg in sys.argv[1:]):
        problem = "a sweep (-m) cannot run inside torchrun; start one torchrun per job"
    if problem:
        print(f"resnet-train: error: {problem}", file=sys.stderr)
        sys.exit(1)
    if rank.rank > 0:
        # Only rank 0 keeps a run folder; the others get a scratch folder outside outputs/ and
        # receive rank 0's folder through the process group.
        scratch = tempfile.mkdtemp(prefix=f"resnet-train-rank{rank.rank}-")
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        sys.argv += [f"hydra.run.dir={scratch}", "hydra.output_subdir=null", "hydra/job_logging=disabled",
                     "hydra/hydra_logging=disabled"]
    hydra_main()


if __name__ == "__main__":
    main()
