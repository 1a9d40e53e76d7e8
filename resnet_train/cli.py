"""The `resnet-train` command: Hydra composes the config, the modes in train.py do the work."""

from __future__ import annotations

import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .checkpoint import CheckpointError
from .config import Config, register_configs, validate
from .data import DataError
from .engine import DivergenceError

register_configs()

USER_ERRORS = (ValueError, DataError, CheckpointError, DivergenceError, PermissionError, OSError)


class UserError(CompactHydraException):
    """In a multirun, fails only its own job; Hydra prints it after the sweep, one line per job."""


@hydra.main(version_base="1.3", config_path="pkg://resnet_train.conf", config_name="config")
def main(dict_cfg: DictConfig) -> dict | None:
    from .train import describe, evaluate_checkpoint, train

    cfg: Config = OmegaConf.to_object(dict_cfg)
    try:
        validate(cfg)
        if cfg.mode == "info":
            return describe(cfg)
        if cfg.mode == "eval":
            return evaluate_checkpoint(cfg)
        hydra_cfg = HydraConfig.get()
        return train(cfg, hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task))
    except USER_ERRORS as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        message = f"resnet-train: error: {exc}"
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise UserError(message) from None
        # A single run ends here with one line; SystemExit passes Hydra's job wrapper untouched.
        print(message, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
