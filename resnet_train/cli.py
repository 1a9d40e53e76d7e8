"""The `resnet-train` command: Hydra composes the config, train.py and modes.py do the work."""

from __future__ import annotations

import atexit
import importlib.resources
import importlib.util
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from . import distributed
from .checkpoint import CheckpointError
from .config import Config, register_configs, unknown_keys, validate
from .data import DataError
from .engine import DivergenceError
from .interrupt import (
    SWEEP_STOP,
    Interrupted,
    PackedSweepStop,
    in_packed_worker,
    request_sweep_stop,
    sweep_stop_requested,
)

register_configs()

USER_ERRORS = (ValueError, DataError, CheckpointError, DivergenceError, OSError)
HYDRA_FILES = {".hydra", "resnet_train.log"}  # what Hydra and the log leave in a folder before a run writes
log = logging.getLogger(__name__)
# Whether this process's run folder is Hydra's fresh outputs/DATE/TIME (a single run without
# hydra.run.dir), which it may remove again when nothing was written into it.
_fresh_run_folder = False


class UserError(CompactHydraException):
    """In a multirun, fails only its own job; Hydra prints it after the sweep, one line per job."""


def _no_such_key(keys: list[str]) -> str:
    return (f"{', '.join(keys)}: no such key in the config (a '+' adds keys the schema does not have, and they "
            f"would be ignored); see resnet-train --help for the keys")


def checked_config(dict_cfg: DictConfig) -> Config:
    """The typed config, once its keys and values pass the schema's checks (else ValueError)."""
    unknown = unknown_keys(OmegaConf.to_container(dict_cfg, resolve=False))
    if unknown:
        raise ValueError(_no_such_key(unknown))
    cfg: Config = OmegaConf.to_object(dict_cfg)
    validate(cfg)
    return cfg


def _run(cfg: Config, hydra_cfg) -> dict | list[dict] | None:
    from .modes import analyze_checkpoint, describe, evaluate_checkpoint, for_each_checkpoint
    from .train import train

    if cfg.mode == "info":
        return describe(cfg)
    if cfg.mode in ("eval", "analyze"):
        mode = evaluate_checkpoint if cfg.mode == "eval" else analyze_checkpoint
        return for_each_checkpoint(mode, cfg, list(hydra_cfg.overrides.task))
    job_index = hydra_cfg.job.num if hydra_cfg.mode == RunMode.MULTIRUN else None
    return train(cfg, hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task), job_index,
                 distributed.from_env())


def _remove_if_empty(folder: str, made_for_it: bool | None = None) -> None:
    """A run folder that holds nothing but Hydra's files (mode=info or eval, or a run refused
    before it started) is not left under outputs/; made_for_it: the folder is this command's own
    (by default, when no hydra.run.dir or sweep chose it)."""
    path = Path(folder).resolve()
    made_for_it = _fresh_run_folder if made_for_it is None else made_for_it
    if made_for_it and path.is_dir() and {p.name for p in path.iterdir()} <= HYDRA_FILES:
        logging.shutdown()
        shutil.rmtree(path, ignore_errors=True)
        for parent in path.parents:  # outputs/DATE, outputs: made for it, unless other runs are there
            if parent == Path.cwd() or any(parent.iterdir()):
                break
            parent.rmdir()


def config_source() -> str:
    """Installed (a wheel or an editable install), the configs are the package resnet_train.conf; run
    from a source tree on PYTHONPATH alone, as on the GPU machine, where nothing is installed, they are
    the tree's own conf/."""
    if importlib.util.find_spec("resnet_train.conf") is not None:
        return "pkg://resnet_train.conf"
    return str(Path(__file__).resolve().parents[1] / "conf")


def config_context():
    """Hydra's compose API initialised on the configs the command reads (config_source)."""
    from hydra import initialize_config_dir, initialize_config_module

    source = config_source()
    if source.startswith("pkg://"):
        return initialize_config_module(source.removeprefix("pkg://"), version_base="1.3")
    return initialize_config_dir(source, version_base="1.3")


def composed(overrides: list[str]) -> Config:
    """The checked config that a command line with these overrides starts from (the report uses it
    to hold a run's config against its recipe's)."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with config_context():
        return checked_config(compose(config_name="config", overrides=overrides))


def group_options(group: str) -> list[str]:
    """The options of one of our config groups (model, experiment, ...), nested ones as blog/original."""
    source = config_source()
    root = importlib.resources.files("resnet_train.conf") if source.startswith("pkg://") else Path(source)

    def walk(folder, prefix: str) -> list[str]:
        out = []
        for entry in folder.iterdir():
            if entry.is_dir():
                out += walk(entry, f"{prefix}{entry.name}/")
            elif entry.name.endswith(".yaml"):
                out.append(prefix + entry.name.removesuffix(".yaml"))
        return out

    folder = root.joinpath(group)
    return sorted(walk(folder, "")) if folder.is_dir() else []


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0]


def _joined(exc: BaseException) -> str:
    """Hydra's message on one line, up to its list of config sources."""
    text = str(exc).split("Config search path:")[0]
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


# The launchers' Hydra plugins, which come with the package's extras (pyproject.toml).
LAUNCHER_EXTRAS = {"joblib": "sweep", "submitit_slurm": "slurm", "submitit_local": "slurm"}


def _composition_error(exc: Exception, job: list[str]) -> str:
    """One line for what Hydra would report in several: an unknown option, key or value type."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    if isinstance(exc, MissingConfigException):
        plugin = (exc.missing_cfg_file or "").removeprefix("hydra/launcher/")
        if plugin in LAUNCHER_EXTRAS:
            return (f"hydra/launcher: the {plugin} launcher's Hydra plugin is not installed; "
                    f"pip install -e '.[{LAUNCHER_EXTRAS[plugin]}]'")
        for override in job:
            key, _, value = override.lstrip("+~").partition("=")
            if exc.missing_cfg_file == f"{key}/{value}":
                options = sorted(set(group_options(key)) | set(exc.options or []))  # ours nested, Hydra's plugins
                hint = "; for another depth, set model.depth=N on a preset of its family" if key == "model" else ""
                return f"{key}={value}: no such option; choose one of {', '.join(options)}{hint}"
    cause = exc.__cause__
    full_key = getattr(cause, "full_key", None)
    if full_key and isinstance(cause, ConfigAttributeError | ConfigKeyError):
        return _no_such_key([full_key])
    if full_key:
        return f"{full_key}: {_first_line(cause)}"
    return _joined(exc)  # e.g. seed=0,1 without -m: Hydra's three ways out


def override_error(args: list[str]) -> str | None:
    """Hydra reports a bad override (an unknown option or key, a value of the wrong type, bad
    syntax) in several lines, and in a sweep only when that job's turn comes. This composes and
    checks each job's config before anything runs, and says what is wrong in one line; None if all
    pass. Command lines with Hydra's own flags (--help, --cfg, -sc ...) are left to Hydra."""
    from hydra import compose
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in args):
        return None
    overrides = [a for a in args if not a.startswith("-")]
    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_override(override)
        except HydraException as exc:
            return f"cannot read {override}: {_first_line(exc)}; write KEY=VALUE, a list as 'KEY=[A,B]'"
    with config_context():
        jobs = [overrides]
        if any(a in ("-m", "--multirun") for a in args):
            loader = GlobalHydra.instance().config_loader()  # glob(...) sweeps list a group's options through it
            jobs = BasicSweeper.split_arguments(OverridesParser.create(config_loader=loader).parse_overrides(overrides),
                                                None)[0]
        for job in jobs:
            try:
                dict_cfg = compose(config_name="config", overrides=job)
            except (HydraException, OmegaConfBaseException, ValueError) as exc:
                return _composition_error(exc, job)
            try:
                checked_config(dict_cfg)
            except (ValueError, OmegaConfBaseException) as exc:
                return _first_line(exc)
    return None


def _job(hydra_cfg) -> str:
    """A sweep's job as its messages name it: its number and its overrides."""
    return f"job {hydra_cfg.job.num} ({' '.join(hydra_cfg.overrides.task)})"


@hydra.main(version_base="1.3", config_path=config_source(), config_name="config")
def hydra_main(dict_cfg: DictConfig) -> dict | None:
    hydra_cfg = HydraConfig.get()
    output_dir = hydra_cfg.runtime.output_dir
    stopped = sweep_stop_requested()
    if stopped is not None:
        print(f"resnet-train: {_job(hydra_cfg)} not started: the sweep "
              f"was stopped by {signal.Signals(stopped).name}", file=sys.stderr, flush=True)
        _remove_if_empty(output_dir, made_for_it=True)
        return None
    try:
        cfg = checked_config(dict_cfg)
        result = _run(cfg, hydra_cfg)
        if cfg.mode != "train":
            _remove_if_empty(output_dir)
        return result
    except Interrupted as exc:
        # The whole process stops, a sweep included: the signal was meant for it (e.g. preemption).
        if distributed.from_env().is_main:
            rest = ""
            if hydra_cfg.mode == RunMode.MULTIRUN:
                rest = (f". The sweep stopped with this job: to finish every job, run the sweep's command again with "
                        f"hydra.sweep.dir={hydra_cfg.sweep.dir} resume=auto")
            print(f"resnet-train: {exc}{rest}", file=sys.stderr, flush=True)
        if in_packed_worker():  # the launcher ends the sweep once every running job has saved
            request_sweep_stop(exc.signum)
            return None
        if exc.forward is not None and SWEEP_STOP not in os.environ:  # e.g. submitit requeues the job, then exits
            exc.forward(exc.signum, None)
        sys.exit(128 + exc.signum)
    except USER_ERRORS as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        message = f"resnet-train: error: {exc}"
        _remove_if_empty(output_dir)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            # Hydra repeats only the first failed job's error after the sweep: each says its own
            # here, on the console and in its folder's log.
            log.error(f"{_job(hydra_cfg)} failed: {exc}")
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


def _name_sweep_jobs(argv: list[str]) -> list[str]:
    """For a sweep, the override that makes each job's folder (and so its TensorBoard run) name
    the values it sweeps: every other key of the command line leaves Hydra's override_dirname."""
    if not any(a in ("-m", "--multirun") for a in argv) or any(
            a.startswith(("hydra.sweep.subdir=", "hydra.job.config.override_dirname.")) for a in argv):
        return []
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    args = [a for a in argv if not a.startswith("-") and "=" in a and not a.startswith("hydra")]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except HydraException:
        return []  # Hydra itself reports the bad override
    fixed = sorted({o.key_or_group for o in overrides if not o.is_sweep_override()})
    return [f"hydra.job.config.override_dirname.exclude_keys=[{','.join(fixed)}]"] if fixed else []


# Keys whose values are paths. A sweep's job folders carry "=" in their names (0_optim=adam), which
# Hydra's override grammar would reject unquoted; a path is never a Hydra expression.
PATH_KEYS = ("ckpt", "resume", "hydra.run.dir", "hydra.sweep.dir", "data.root")


def _quote_paths(argv: list[str]) -> list[str]:
    """argv with each path value that holds "=" quoted for Hydra (each item of a sweep's list)."""
    sweep = any(a in ("-m", "--multirun") for a in argv)
    out = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if eq and key in PATH_KEYS and "=" in value and value[:1] not in ("'", '"'):
            items = value.split(",") if sweep else [value]
            arg = f"{key}=" + ",".join(f"'{v}'" if "=" in v and "'" not in v else v for v in items)
        out.append(arg)
    return out


def main() -> None:
    problem = _unwritable_output(sys.argv[1:])
    sys.argv[1:] = _quote_paths(sys.argv[1:])
    rank = distributed.from_env()
    if rank.active and any(arg in ("-m", "--multirun") for arg in sys.argv[1:]):
        problem = "a sweep (-m) cannot run inside torchrun; start one torchrun per job"
    problem = problem or override_error(sys.argv[1:])
    if problem:
        print(f"resnet-train: error: {problem}", file=sys.stderr)
        sys.exit(1)
    global _fresh_run_folder
    _fresh_run_folder = not any(a in ("-m", "--multirun") or a.startswith("hydra.run.dir=") for a in sys.argv[1:])
    sys.argv += _name_sweep_jobs(sys.argv[1:])
    if rank.rank > 0:
        # Only rank 0 keeps a run folder; the others get a scratch folder outside outputs/ and
        # receive rank 0's folder through the process group.
        scratch = tempfile.mkdtemp(prefix=f"resnet-train-rank{rank.rank}-")
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        sys.argv += [f"hydra.run.dir={scratch}", "hydra.output_subdir=null", "hydra/job_logging=disabled",
                     "hydra/hydra_logging=disabled"]
    if not _packed_sweep(sys.argv[1:]):
        return hydra_main()
    with PackedSweepStop() as stop:
        hydra_main()
    if stop.signum is not None:
        sys.exit(128 + stop.signum)


def _packed_sweep(argv: list[str]) -> bool:
    """A sweep whose jobs run in worker processes (hydra/launcher=joblib)."""
    return any(a in ("-m", "--multirun") for a in argv) and "hydra/launcher=joblib" in argv


if __name__ == "__main__":
    main()
