#!/usr/bin/env python3
"""Training throughput: resnet-train's own step against a peer-style reference loop, in one run.

    python scripts/bench.py --data-root /tmp/data --models resnet20 resnet56 resnet110 wrn_28_10 resnet50
    python scripts/bench.py --data-root /tmp/data --models resnet20 --graphs on --profile prof/
    python scripts/bench.py --data cifar10_sample --device cpu --steps 3 --warmup 1 --models resnet20   # tiny
    python scripts/bench.py --data-root /tmp/data --models resnet20 resnet110 --members 8 --packed --no-peer

CIFAR models train on real CIFAR-10 (torchvision layout under --data-root, or the shipped sample);
ImageNet models (stem imagenet) on synthetic 224-px images at --imagenet-batch-size. "ours" is the
project's train step with its CUDA defaults (data on the device, augmented there per batch, bf16,
channels_last, fused SGD), plus --compile (train.compile) and --graphs (train.cuda_graphs).
"peer" is the public-reproduction recipe: torchvision transforms on PIL images, a CPU DataLoader
with 8 workers, fp32, eager, and loss.item() every step. Prints a table, writes JSON; --profile
adds a torch.profiler table of 20 steps of ours per model. --members K adds seeds=K (K seeds as
one K-member network), summed over its members, against K runs one at a time and (--packed) K
processes packed on the device.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from resnet_train import members as kwide  # noqa: E402
from resnet_train.config import COMPILE_MODES, DataConfig, ModelConfig, OptimConfig, SchedConfig  # noqa: E402
from resnet_train.data import DeviceBatches, EpochSampler, Split, build_datasets  # noqa: E402
from resnet_train.engine import EpochTotals, GraphedTrainStep, TrainStep, train_epoch  # noqa: E402
from resnet_train.models import build_model  # noqa: E402
from resnet_train.optim import build_optimizer, lr_at  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"
# The speed goals (issue 13, on one H100 with CUDA): images per second of ours, batch 128 on
# CIFAR-10 and 256 on synthetic 224-px images; every thin CIFAR net at least THIN_VS_PEER times
# the peer loop in the same run; seeds=K summed over members at least the factor times one run.
GOALS = {"resnet20": 50_000, "resnet56": 18_000, "resnet110": 15_000, "wrn_28_10": 12_000, "resnet50": 6_500}
THIN = ("resnet20", "resnet56", "resnet110")
THIN_VS_PEER = 4.0
MEMBER_GOALS = {("resnet20", 8): 5.0, ("resnet110", 4): 3.0}
PACKED_GOALS = {("resnet110", 4): 25_000}  # 4 packed ResNet-110 runs, images per second in all


def preset(name: str) -> ModelConfig:
    fields = OmegaConf.to_container(OmegaConf.load(CONF / "model" / f"{name}.yaml"))
    return ModelConfig(**fields)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ours(model_cfg: ModelConfig, data_cfg: DataConfig, split: Split, batch_size: int, steps: int, warmup: int,
         device: torch.device, compile_mode: str, graphs: bool, profile: Path | None = None, members: int = 1) -> float:
    """Images per second of the train step; with members=K, of the K-member network of seeds=K,
    summed over its members (each member takes batch_size images per step)."""
    cuda = device.type == "cuda"
    models = []
    for seed in range(members):
        torch.manual_seed(seed)
        models.append(build_model(model_cfg, data_cfg.num_classes).to(device))
    model = kwide.combine(models) if members > 1 else models[0]
    if cuda:
        # Not distributed.configure_cuda: its TF32 switch would also hold for the peer loop, which
        # runs later in this process and keeps PyTorch's defaults, as public reproductions do.
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
    step_model = model if compile_mode == "none" else torch.compile(model, mode=compile_mode, dynamic=False)
    optimizer = build_optimizer(model, OptimConfig())
    step_fn = (GraphedTrainStep if graphs and cuda else TrainStep)(step_model, optimizer, device=device, amp=cuda,
                                                                   members=members)
    samplers = [EpochSampler(len(split.labels), seed=seed, global_batch=batch_size) for seed in range(members)]
    loaders = [DeviceBatches(split, data_cfg, batch_size, device, sampler=sampler, seed=seed, channels_last=cuda)
               for seed, sampler in enumerate(samplers)]
    batches = loaders[0] if members == 1 else kwide.MemberBatches(loaders)
    lr = lambda s: lr_at(s, base_lr=0.1, sched=SchedConfig(), steps_per_epoch=len(batches), total_steps=10**9)  # noqa: E731

    def run(step: int, until: int, epoch: int) -> tuple[int, int, float]:
        """Steps from `step` to `until` over as many epochs as it takes: (step, epoch, images/s)."""
        images = 0
        sync(device)
        t0 = time.perf_counter()
        while step < until:
            for sampler in samplers:
                sampler.set_epoch(epoch)
            totals, _ = train_epoch(step_fn, batches, lr_fn=lr, step=step, max_steps=until, channels_last=cuda,
                                    totals=[EpochTotals() for _ in range(members)])
            step, images, epoch = step + totals[0].steps, images + totals[0].images * members, epoch + 1
        sync(device)
        return step, epoch, images / (time.perf_counter() - t0)

    step, epoch, _ = run(0, warmup, 0)
    step, epoch, rate = run(step, warmup + steps, epoch)
    if profile is not None:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as profiler

        activities = [ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * cuda
        with profiler(activities=activities) as prof:
            run(step, step + 20, epoch)
        sort = "cuda_time_total" if cuda else "cpu_time_total"
        table = prof.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=60)
        profile.write_text(f"20 steps of {model_cfg.family}-{model_cfg.depth}, batch {batch_size}\n{table}\n")
        print(table)
    return rate


class PilImages(Dataset):
    """Images as PIL, the way torchvision's CIFAR10 hands them to its transforms."""

    def __init__(self, split: Split, transform):
        self.images = split.images.permute(0, 2, 3, 1).numpy()
        self.labels = split.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def peer(model_cfg: ModelConfig, data_cfg: DataConfig, split: Split, batch_size: int, steps: int, warmup: int,
         device: torch.device, workers: int) -> float:
    from torchvision import transforms as T

    if data_cfg.augment == "cifar":
        aug = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
    else:
        aug = []
    transform = T.Compose([*aug, T.ToTensor(), T.Normalize(data_cfg.mean, data_cfg.std)])
    loader = DataLoader(PilImages(split, transform), batch_size=batch_size, shuffle=True, num_workers=workers,
                        pin_memory=device.type == "cuda", drop_last=True, persistent_workers=workers > 0)
    model = build_model(model_cfg, data_cfg.num_classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model.train()
    step, images, t0 = 0, 0, None
    while step < warmup + steps:
        for x, y in loader:
            if step == warmup:
                sync(device)
                t0 = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()  # the per-step host sync of the public loops (logging the loss)
            if step >= warmup:
                images += y.shape[0]
            step += 1
            if step >= warmup + steps:
                break
    sync(device)
    return images / (time.perf_counter() - t0)


def packed(name: str, k: int, args: argparse.Namespace) -> float:
    """Images per second summed over k processes, each one run of `name` (ours), started together
    on the same device: the process packing that seeds=K competes with. Each process times its own
    steps after its warm-up, so the windows overlap but need not coincide."""
    with tempfile.TemporaryDirectory() as tmp:
        common = ["--models", name, "--no-peer", "--data", args.data, "--data-root", args.data_root, "--batch-size",
                  str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup), "--device",
                  args.device, "--compile", args.compile, "--graphs", args.graphs]
        procs = [subprocess.Popen([sys.executable, __file__, *common, "--out", f"{tmp}/{i}.json"],
                                  stdout=subprocess.DEVNULL) for i in range(k)]
        if any(p.wait() for p in procs):
            raise SystemExit(f"bench: a packed process of {name} failed")
        return sum(json.loads(Path(f"{tmp}/{i}.json").read_text())["rows"][0]["ours"] for i in range(k))


def verdict(value: float, goal: float) -> str:
    return "met" if value >= goal else f"missed by {100 * (1 - value / goal):.0f}%"


def goals(row: dict) -> dict:
    """Each goal that applies to the row, as {name: (figure, goal)}."""
    name, out = row["model"], {}
    if name in GOALS:
        out["img/s"] = (row["ours"], GOALS[name])
    if name in THIN and "ratio" in row:
        out["x peer"] = (row["ratio"], THIN_VS_PEER)
    if (name, row.get("members")) in MEMBER_GOALS:
        out["seeds=K x one run"] = (row["k_wide_vs_one_at_a_time"], MEMBER_GOALS[name, row["members"]])
    if (name, row.get("members")) in PACKED_GOALS and "packed" in row:
        out["packed img/s"] = (row["packed"], PACKED_GOALS[name, row["members"]])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet56", "resnet110", "wrn_28_10", "resnet50"])
    parser.add_argument("--data", default="cifar10", choices=["cifar10", "cifar10_sample"])
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--imagenet-batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=200, help="timed iterations per model and loop")
    parser.add_argument("--warmup", type=int, default=30, help="untimed iterations first (compilation, cudnn)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", default="none", choices=COMPILE_MODES, help="torch.compile mode for ours")
    parser.add_argument("--graphs", default="off", choices=["on", "off"],
                        help="capture each step of ours in a CUDA graph (train.cuda_graphs; CUDA only)")
    parser.add_argument("--profile", type=Path, help="folder for a torch.profiler table of 20 steps of ours per model")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers of the peer loop")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--members", type=int, default=1,
                        help="K > 1 also times seeds=K: K members in one network, images/s summed over members, "
                             "against K runs one at a time")
    parser.add_argument("--packed", action="store_true", help="with --members K, also time K packed processes")
    parser.add_argument("--out", type=Path, default=Path("bench.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    compile_mode = args.compile  # as train.compile: Inductor's CPU backend compiles too
    if args.graphs == "on" and (device.type != "cuda" or compile_mode in ("reduce-overhead", "max-autotune")):
        parser.error("--graphs on needs --device cuda and a compile mode that does not capture graphs itself")
    graphs = args.graphs == "on"
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    cifar_cfg = DataConfig(name=args.data, root=args.data_root, num_workers=0)
    cifar = build_datasets(cifar_cfg, seed=0).splits()["train"]
    rows = []
    for name in args.models:
        model_cfg = preset(name)
        if model_cfg.stem == "imagenet":
            data_cfg = DataConfig(name="synthetic", num_classes=1000, image_size=224, augment="none",
                                  mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
            n = args.imagenet_batch_size * 8
            split = Split(torch.randint(0, 256, (n, 3, 224, 224), dtype=torch.uint8),
                          torch.randint(0, 1000, (n,)))
            batch, data_name = args.imagenet_batch_size, "synthetic 224 px"
        else:
            data_cfg, split, batch, data_name = cifar_cfg, cifar, args.batch_size, args.data
        row = {"model": name, "data": data_name, "batch_size": batch,
               "ours": ours(model_cfg, data_cfg, split, batch, args.steps, args.warmup, device, compile_mode, graphs,
                           args.profile / f"{name}.txt" if args.profile else None)}
        if args.members > 1:
            k = args.members
            row["members"] = k
            row["k_wide"] = ours(model_cfg, data_cfg, split, batch, args.steps, args.warmup, device, compile_mode,
                                 graphs, members=k)
            row["k_wide_vs_one_at_a_time"] = row["k_wide"] / row["ours"]  # K runs in turn give ours img/s in all
            if args.packed:
                row["packed"] = packed(name, k, args)
                row["k_wide_vs_packed"] = row["k_wide"] / row["packed"]
        if not args.no_peer and model_cfg.stem != "imagenet":
            row["peer"] = peer(model_cfg, data_cfg, split, batch, args.steps, args.warmup, device, args.workers)
            row["ratio"] = row["ours"] / row["peer"]
        rows.append(row)
        print(f"{name:12s} ours {row['ours']:9.0f} img/s" + (f"   peer {row['peer']:9.0f} img/s   x{row['ratio']:.2f}"
                                                            if "peer" in row else ""), flush=True)
        if "k_wide" in row:
            print(f"{name:12s} seeds={row['members']}: {row['k_wide']:9.0f} img/s summed over members, "
                  f"x{row['k_wide_vs_one_at_a_time']:.2f} vs {row['members']} runs one at a time"
                  + (f", x{row['k_wide_vs_packed']:.2f} vs {row['members']} packed processes "
                     f"({row['packed']:.0f} img/s)" if "packed" in row else ""), flush=True)
    meta = {"date": date.today().isoformat(), "device": torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or "cpu", "torch": torch.__version__, "compile": compile_mode,
            "cuda_graphs": graphs,
            "steps": args.steps, "warmup": args.warmup, "command": " ".join(sys.argv)}
    print("\n| model | data | batch | ours img/s | peer img/s | ratio |\n|---|---|---|---|---|---|")
    for r in rows:
        peer_s = f"{r['peer']:.0f}" if "peer" in r else "–"
        ratio = f"{r['ratio']:.2f}x" if "ratio" in r else "–"
        print(f"| {r['model']} | {r['data']} | {r['batch_size']} | {r['ours']:.0f} | {peer_s} | {ratio} |")
    if args.members > 1:
        print(f"\n| model | batch per member | 1 run img/s | seeds={args.members} img/s (sum) | vs one at a time "
              f"| {args.members} packed img/s | vs packed |\n|---|---|---|---|---|---|---|")
        for r in rows:
            packed_s, vs = (f"{r['packed']:.0f}", f"{r['k_wide_vs_packed']:.2f}x") if "packed" in r else ("–", "–")
            print(f"| {r['model']} | {r['batch_size']} | {r['ours']:.0f} | {r['k_wide']:.0f} | "
                  f"{r['k_wide_vs_one_at_a_time']:.2f}x | {packed_s} | {vs} |")
    if device.type == "cuda":  # the goals are GPU goals: on a CPU their verdicts would say nothing
        print("\n| model | goal | figure | target | verdict |\n|---|---|---|---|---|")
        for r in rows:
            r["goals"] = {k: {"figure": v, "goal": g, "verdict": verdict(v, g)} for k, (v, g) in goals(r).items()}
            for k, g in r["goals"].items():
                print(f"| {r['model']} | {k} | {g['figure']:,.1f} | {g['goal']:,.1f} | {g['verdict']} |")
    print(f"\n{meta['device']}, torch {meta['torch']}, compile={compile_mode}, CUDA graphs {graphs}, {meta['date']}")
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
