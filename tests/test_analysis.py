"""Layer responses (He 2015 Fig. 7) and gradient-norm logging."""

import json
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_train.analysis import GradNorms, gradient_groups, layer_responses, response_layers, write_responses

from .conftest import net


def test_responses_are_the_bn_after_each_3x3_conv_in_network_order():
    model = net(depth=20)
    layers = response_layers(model)
    assert len(layers) == 19  # He 2015 Fig. 7: plain/ResNet-20 has 19 3x3 layers
    assert all(isinstance(m, nn.BatchNorm2d) for _, m in layers)
    assert [name for name, _ in layers[:4]] == ["stem.1", "stages.0.0.branch.1", "stages.0.0.branch.4",
                                                "stages.0.1.branch.1"]
    assert layers[-1][0] == "stages.2.2.branch.4"


def test_responses_of_a_preact_unit_take_the_last_conv_itself():
    layers = response_layers(net(depth=8, unit="full_preact"))
    names = [name for name, _ in layers]
    assert names[:3] == ["stem.0", "stages.0.0.branch.1", "stages.0.0.branch.3"]  # stem and last conv: no BN after
    assert isinstance(dict(layers)["stages.0.0.branch.3"], nn.Conv2d)


def test_bottleneck_responses_skip_the_1x1_convs():
    layers = response_layers(net(depth=11, block="bottleneck", shortcut="B"))
    assert len(layers) == 1 + 3  # the stem and one 3x3 conv per unit


def test_layer_responses_equal_the_std_of_every_output_value():
    torch.manual_seed(0)
    model = net(depth=8)
    for m in model.modules():  # running statistics other than 0 and 1, so eval-mode BN matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
    batches = [(torch.randn(5, 3, 32, 32), torch.zeros(5)) for _ in range(3)]
    got = layer_responses(model, batches, torch.device("cpu"))
    outputs = {name: [] for name, _ in response_layers(model)}
    hooks = [m.register_forward_hook(lambda _m, _i, out, name=name: outputs[name].append(out.clone()))
             for name, m in response_layers(model)]
    with torch.no_grad():
        for x, _ in batches:
            model(x)
    for h in hooks:
        h.remove()
    want = [torch.cat(outputs[name]).double().std(unbiased=False).item() for name in outputs]
    assert [r["layer"] for r in got] == list(outputs)
    assert [r["std"] for r in got] == pytest.approx(want, rel=1e-9)
    assert not model.training


def test_responses_are_written_with_their_plot_and_without_matplotlib(tmp_path, monkeypatch):
    record = {"model": "resnet-8", "ckpt": "last.pt", "layers": [{"layer": "stem.1", "std": 0.5}]}
    png = write_responses(tmp_path / "a.json", record)
    assert png == tmp_path / "a.png" and png.stat().st_size > 0
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as on the GPU machine: no matplotlib
    assert write_responses(tmp_path / "b.json", record) is None
    assert json.loads((tmp_path / "b.json").read_text()) == record and not (tmp_path / "b.png").exists()


def test_gradient_groups_cover_every_parameter_once():
    model = net(depth=14)
    for by, names in (("stage", ["stem", "stage1", "stage2", "stage3", "head"]),
                      ("unit", ["stem", *(f"stage{i}.unit{j}" for i in (1, 2, 3) for j in (1, 2)), "head"])):
        groups = gradient_groups(model, by)
        assert list(groups) == names
        ids = [id(p) for params in groups.values() for p in params]
        assert sorted(ids) == sorted(id(p) for p in model.parameters())


def test_grad_norms_are_the_l2_norms_of_each_groups_gradients():
    model = net(depth=8)
    F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
    groups = gradient_groups(model, "stage")
    norms = GradNorms(groups, every=5)
    assert [norms.due(s) for s in (0, 1, 5, 9, 10)] == [True, False, True, False, True]
    norms.record(10)
    [(step, values)] = norms.drain()
    assert step == 10 and norms.drain() == []
    for name, params in groups.items():
        assert values[name] == pytest.approx(torch.cat([p.grad.flatten() for p in params]).norm().item(), rel=1e-5)
    every = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
    assert values["total"] == pytest.approx(every, rel=1e-5)


@pytest.mark.slow
def test_grad_norm_logging_leaves_the_weights_bit_identical(tiny, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from resnet_train.train import train

    for every in (0, 3):
        train(tiny(epochs=2, **{"train.grad_norm_every": every, "train.grad_norm_by": "unit"}), tmp_path / str(every))
    off, on = (torch.load(tmp_path / name / "last.pt", weights_only=True) for name in ("0", "3"))
    assert off["model"].keys() == on["model"].keys()
    assert all(torch.equal(off["model"][k], on["model"][k]) for k in off["model"])
    acc = EventAccumulator(str(tmp_path / "3" / "tb"))
    acc.Reload()
    tags = {t for t in acc.Tags()["scalars"] if t.startswith("grad_norm/")}
    assert tags == {"grad_norm/stem", "grad_norm/stage1.unit1", "grad_norm/stage2.unit1", "grad_norm/stage3.unit1",
                    "grad_norm/head", "grad_norm/total"}
    # 256 images in batches of 64: iterations 0..7, logged at 0, 3 and 6.
    assert [e.step for e in acc.Scalars("grad_norm/total")] == [0, 3, 6]
    assert all(e.value > 0 for e in acc.Scalars("grad_norm/total"))
    off_tb = EventAccumulator(str(tmp_path / "0" / "tb"))
    off_tb.Reload()
    assert not any(t.startswith("grad_norm/") for t in off_tb.Tags()["scalars"])
