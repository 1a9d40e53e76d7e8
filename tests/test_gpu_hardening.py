"""Faults of the CUDA path that a CPU can check: a faked visible GPU, recorded calls, and the
distributed pieces on gloo. What still needs a GPU to confirm is listed in docs/performance.md."""

import contextlib
import os

import pytest
import torch
import torch.multiprocessing as mp
from omegaconf import OmegaConf
from torch import nn

from resnet_train import checkpoint as ckpt_io
from resnet_train import engine
from resnet_train.config import DataConfig, OptimConfig, validate
from resnet_train.data import DeviceBatches, EpochSampler, Split
from resnet_train.distributed import SyncBatchNorm2d, combine_moments, configure_cuda, resolve_device
from resnet_train.optim import build_optimizer

from .conftest import net


@pytest.fixture
def two_fake_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)


def test_device_cuda_resolves_to_the_current_index(two_fake_gpus):
    # torch.cuda.set_device and graph capture reject an index-less torch.device("cuda").
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("auto", job_index=3) == torch.device("cuda", 1)


def test_cuda_runs_keep_fp32_convolutions_fp32(monkeypatch):
    # PyTorch's default runs cuDNN's fp32 convolutions as TF32: the plain reference path
    # (train.amp=false) would not be fp32.
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    configure_cuda()
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.allow_tf32
    assert not torch.backends.cuda.matmul.allow_tf32  # PyTorch's default


def test_graph_capture_is_thread_local(monkeypatch):
    """The DataLoader's pin-memory thread calls into CUDA during a capture; the global mode
    would invalidate it. The capture is recorded here with CPU stand-ins for the CUDA graph."""
    calls = []

    class FakeGraph:
        def replay(self):
            calls.append("replay")

    @contextlib.contextmanager
    def fake_graph(graph, **kwargs):
        calls.append(kwargs)
        yield

    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", fake_graph)
    model = net(depth=8)
    step = engine.GraphedTrainStep(model, build_optimizer(model, OptimConfig()), device=torch.device("cpu"),
                                   amp=False, warmup=0)
    step.sums.reset([engine.EpochTotals()], 0)
    step(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))
    assert calls[0] == {"capture_error_mode": "thread_local"} and calls[1] == "replay"


@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_cuda_graphs_refuse_a_compile_mode_that_captures_too(compose, mode):
    cfg = OmegaConf.to_object(compose("train.cuda_graphs=true", f"train.compile={mode}"))
    with pytest.raises(ValueError, match=f"train.cuda_graphs=true and train.compile={mode} both capture"):
        validate(cfg)


def test_moments_combine_stably_for_large_means():
    g = torch.Generator().manual_seed(0)
    parts = [1e4 + torch.randn(3, 4096, generator=g) for _ in range(2)]
    rows = torch.stack([torch.cat([torch.tensor([4096.0]), p.mean(1), p.var(1, correction=0) * 4096]) for p in parts])
    n, mean, var = combine_moments(rows, 3)
    whole = torch.cat(parts, 1).double()
    assert n.item() == 8192
    torch.testing.assert_close(mean.double(), whole.mean(1), rtol=1e-6, atol=0)
    torch.testing.assert_close(var.double(), whole.var(1, correction=0), rtol=1e-3, atol=0)
    # The E[x^2] - E[x]^2 form this replaced loses every digit here in fp32.
    x = torch.cat(parts, 1)
    naive = (x * x).mean(1) - x.mean(1) ** 2
    assert (naive.double() - whole.var(1, correction=0)).abs().max() > 0.1


def _sync_bn_rank(rank: int, world: int, port: int, x: torch.Tensor, grad: torch.Tensor, out: dict):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        bn = SyncBatchNorm2d(3)
        mine = x.chunk(world)[rank].clone().requires_grad_()
        y = bn(mine)
        y.backward(grad.chunk(world)[rank])
        out[rank] = (y.detach(), mine.grad, bn.weight.grad, bn.running_var.clone())
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_sync_bn_over_two_processes_equals_bn_over_the_whole_batch():
    x = 50.0 + 3 * torch.randn(8, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    grad = torch.randn(8, 3, 5, 5, generator=torch.Generator().manual_seed(2))
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_sync_bn_rank, args=(2, 29531, x, grad, out), nprocs=2, join=True)
        out = dict(out)
    ref = nn.BatchNorm2d(3)
    xr = x.clone().requires_grad_()
    y = ref(xr)
    y.backward(grad)
    torch.testing.assert_close(torch.cat([out[0][0], out[1][0]]), y.detach(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.cat([out[0][1], out[1][1]]), xr.grad, rtol=1e-4, atol=1e-4)
    # Each rank's weight gradient is its own share, which DDP then sums.
    torch.testing.assert_close(out[0][2] + out[1][2], ref.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[0][3], ref.running_var, rtol=1e-4, atol=1e-5)


def test_checkpoint_keeps_the_training_gpus_rng_only(monkeypatch):
    """A resume on a machine with fewer GPUs must not need a state for each GPU of the first."""
    states = {0: torch.arange(16, dtype=torch.uint8), 1: torch.arange(16, 32, dtype=torch.uint8)}
    restored = {}
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: states[device.index])
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda t, device: restored.update({device.index: t.tolist()}))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("saved every GPU's state"))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda s: pytest.fail("restored every GPU's state"))
    state = ckpt_io.rng_state(torch.device("cuda", 1))
    assert state["cuda"] == [list(range(16, 32))]
    ckpt_io.set_rng_state(state, torch.device("cuda", 0))  # resumed on another GPU
    assert restored == {0: list(range(16, 32))}
    old = {**state, "cuda": [list(range(16)), list(range(16, 32))]}  # the earlier format: one per GPU
    ckpt_io.set_rng_state(old, torch.device("cuda", 1))
    assert restored[1] == list(range(16, 32))
    assert ckpt_io.rng_state(torch.device("cpu"))["cuda"] == []


@pytest.mark.parametrize("channels_last", [False, True])
def test_device_batches_keep_one_memory_format(channels_last):
    split = Split(torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8), torch.arange(12))
    sampler = EpochSampler(12, seed=0, global_batch=8)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    train = DeviceBatches(split, DataConfig(), 8, torch.device("cpu"), sampler=sampler, channels_last=channels_last)
    test = DeviceBatches(split, DataConfig(), 8, torch.device("cpu"), channels_last=channels_last)
    for x, _ in [*train, *test]:
        assert x.is_contiguous(memory_format=fmt)


def test_progress_text_is_built_only_when_shown(monkeypatch):
    built = []
    monkeypatch.setattr(engine.tqdm, "set_postfix", lambda self, **kw: built.append(kw))
    model = net(depth=8)
    step = engine.TrainStep(model, build_optimizer(model, OptimConfig()), device=torch.device("cpu"), amp=False)
    batches = [(torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,))) for _ in range(3)]
    engine.train_epoch(step, batches, lr_fn=lambda k: 0.1, step=0, max_steps=10, progress=False)
    assert built == []
    engine.train_epoch(step, batches, lr_fn=lambda k: 0.1, step=0, max_steps=10, progress=True)
    assert len(built) == 3


@pytest.mark.slow
def test_compile_specialises_shapes(tiny, monkeypatch, tmp_path):
    """dynamic=False: the short last batch and evaluation get graphs of their own instead of one
    dynamic-shape graph for every batch (README, Speed)."""
    from resnet_train import train as train_module

    seen = []
    monkeypatch.setattr(train_module.torch, "compile", lambda m, **kw: seen.append(kw) or m)
    cfg = tiny()
    cfg.train.compile = "default"
    train_module.train(cfg, tmp_path)
    assert seen == [{"mode": "default", "dynamic": False}]
