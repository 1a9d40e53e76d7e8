import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def run_cli(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs the installed command in a subprocess, as a user would."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None) if not env or "HYDRA_FULL_ERROR" not in env else None
    return subprocess.run([sys.executable, "-m", "resnet_train", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def compose():
    """Hydra's compose API over the packaged configs."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    import resnet_train.cli  # noqa: F401  (registers the schema)

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="resnet_train.conf", version_base="1.3"):
        yield lambda *overrides: hydra_compose(config_name="config", overrides=list(overrides))
    GlobalHydra.instance().clear()
