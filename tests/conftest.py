import os
import subprocess
import sys
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n 2 on 2 cores: two workers of torch's two threads each took 81 s for the fast tests,
    # one thread each 58 s. Set before torch (and NumPy's BLAS) start their thread pools; the
    # commands the tests start inherit it.
    os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
no_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CONF = ROOT / "conf"
# Shrinks any command line to seconds on CPU: 512 real CIFAR-10 training images, ResNet-8.
TINY = ["data=cifar10_sample", "data.train_size=512", "data.test_size=200", "data.num_workers=0",
        "model.depth=8", "train.batch_size=64", "train.eval_batch_size=100", "sched.milestones=[1]"]


def load_script(name: str):
    """A file of scripts/ as a module (they are run as files, not installed)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = sys.modules[name] = importlib.util.module_from_spec(spec)  # dataclasses look it up there
    spec.loader.exec_module(module)
    return module


def run_cli(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs the installed command in a subprocess, as a user would."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None) if not env or "HYDRA_FULL_ERROR" not in env else None
    return subprocess.run([sys.executable, "-m", "resnet_train", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def compose():
    """Hydra's compose API over the configs the command reads (packaged, or the source tree's)."""
    from hydra import compose as hydra_compose
    from hydra.core.global_hydra import GlobalHydra

    from resnet_train.cli import config_context  # importing cli also registers the schema

    GlobalHydra.instance().clear()
    with config_context():
        yield lambda *overrides: hydra_compose(config_name="config", overrides=list(overrides))
    GlobalHydra.instance().clear()


def net(num_classes: int = 10, **spec):
    """build_model for a ModelSpec given by its fields."""
    from resnet_train.models import ModelSpec, build_model

    return build_model(ModelSpec(**spec), num_classes)


@pytest.fixture
def tiny(compose):
    """The real config tree, composed and shrunk (256 images, batches of 64, ResNet-8 with dropout,
    no progress bars); `tiny(epochs, **{"section.key": value})` sets further values."""
    from omegaconf import OmegaConf

    def make(epochs=2, **overrides):
        cfg = OmegaConf.to_object(compose(*TINY, "data.train_size=256", "data.test_size=100", "model.dropout=0.1",
                                          "train.progress=false"))
        cfg.train.epochs = epochs
        for key, value in overrides.items():
            section, _, leaf = key.partition(".")
            setattr(getattr(cfg, section), leaf, value) if leaf else setattr(cfg, section, value)
        return cfg

    return make


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Runs the command in this process (fast) and returns (exit code, stderr). Afterwards the root
    logger loses the handlers Hydra gave it: their files lie in tmp_path, which pytest removes."""
    import logging

    from hydra.core.global_hydra import GlobalHydra

    from resnet_train.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    def run(*args: str):
        monkeypatch.setattr(sys, "argv", ["resnet-train", *args])
        GlobalHydra.instance().clear()
        with pytest.raises(SystemExit) as exit_info:
            main()
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return exit_info.value.code, err

    handlers = list(logging.root.handlers)
    yield run
    for handler in set(logging.root.handlers) - set(handlers):
        logging.root.removeHandler(handler)
        handler.close()


def signal_after_step(monkeypatch, n: int) -> None:
    """A real SIGUSR1 to this process right after the n-th training step (counted from 1)."""
    import signal

    from resnet_train.engine import TrainStep

    step, steps = TrainStep.__call__, []

    def signalling_step(self, x, y, observe=None):
        step(self, x, y, observe)
        steps.append(1)
        if len(steps) == n:
            os.kill(os.getpid(), signal.SIGUSR1)

    monkeypatch.setattr(TrainStep, "__call__", signalling_step)


def our_line(err: str) -> str:
    """The one error line of a failed command."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("resnet-train: error: ")
    return lines[0]
