"""The installed command finds its configs and data from a wheel, not only from the source tree."""

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from .conftest import ROOT


def fresh_venv(tmp_path: Path) -> tuple[Path, str]:
    """A new venv (its python and site-packages) that borrows torch and the other dependencies
    from this one, but not resnet_train: a .pth path entry does not run the editable install's
    finder."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return py, site


@pytest.mark.slow
def test_source_tree_on_pythonpath_runs_without_an_install(tmp_path):
    # The GPU machine installs nothing: it runs `python3 -m resnet_train` with the checkout on
    # PYTHONPATH, where the package resnet_train.conf does not exist.
    py, _ = fresh_venv(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.run([py, "-m", "resnet_train", "mode=info", "model=wrn_16_4", "data=cifar10_sample",
                           f"hydra.run.dir={tmp_path / 'out'}"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert '"params": 2748890' in proc.stdout
    where = subprocess.run([py, "-c", "import resnet_train.cli as c; print(c.__file__, c.config_source())"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert where == [str(ROOT / "resnet_train" / "cli.py"), str(ROOT / "conf")]
    bad = subprocess.run([py, "-m", "resnet_train", "experiment=blog/nope"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "choose one of blog/adadelta, blog/adagrad, " in bad.stderr, bad.stderr


@pytest.mark.slow
def test_wheel_in_fresh_venv_finds_configs_and_sample(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist,
                    str(ROOT)], check=True, cwd=tmp_path)
    wheel = next(dist.glob("resnet_train-*.whl"))
    py, site = fresh_venv(tmp_path)
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, str(wheel)],
                   check=True)
    where = subprocess.run([py, "-c", "import resnet_train; print(resnet_train.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(site), where
    proc = subprocess.run([py, "-m", "resnet_train", "mode=info", "model=wrn_16_4", "data=cifar10_sample",
                           f"hydra.run.dir={tmp_path / 'out'}"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert '"params": 2748890' in proc.stdout
    code = "from resnet_train.data import read_sample; print(len(read_sample()[1].labels))"
    sample = subprocess.run([py, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert sample.stdout.strip() == "1000"
