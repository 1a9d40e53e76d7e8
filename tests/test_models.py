import operator
import re

import pytest
import torch
import torchvision
from omegaconf import OmegaConf
from torch import fx, nn

from resnet_train import published
from resnet_train.models import UNIT_LAYOUTS, ModelError, ModelSpec, ResidualUnit, build_model
from resnet_train.models.blocks import BasicShape, BottleneckShape, PadShortcut, make_shortcut
from resnet_train.models.summary import count_params, model_summary

from .conftest import net, our_line


def preset(compose, name: str) -> ModelSpec:
    return OmegaConf.to_object(compose(f"model={name}")).model


@pytest.mark.parametrize("name", sorted(published.PARAMS))
def test_cifar_param_counts_match_papers(compose, name):
    with torch.device("meta"):  # counting needs no weights drawn
        params, paper = count_params(build_model(preset(compose, name))), published.PARAMS[name]
    assert abs(params - paper) / paper < 0.02, f"{name}: {params} vs {paper}"


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_imagenet_param_counts_equal_torchvision(depth):
    block = "basic" if depth < 50 else "bottleneck"
    with torch.device("meta"):  # counting needs no weights drawn
        ours = net(depth=depth, stem="imagenet", block=block, shortcut="B", num_classes=1000)
        theirs = getattr(torchvision.models, f"resnet{depth}")()
    assert count_params(ours) == count_params(theirs)


@pytest.mark.parametrize("name,image_size", sorted(published.MACS))
def test_macs_match_papers(compose, name, image_size):
    info = model_summary(build_model(preset(compose, name), 1000 if image_size == 224 else 10), image_size)
    paper = published.MACS[name, image_size]
    assert abs(info["macs"] - paper) / paper < 0.03


def test_summary_stage_shapes_cifar_and_imagenet():
    assert model_summary(net(depth=20), 32)["stage_shapes"] == [[16, 32, 32], [32, 16, 16], [64, 8, 8]]
    shapes = model_summary(net(depth=50, stem="imagenet", block="bottleneck", shortcut="B"), 224)
    assert shapes["stage_shapes"] == [[256, 56, 56], [512, 28, 28], [1024, 14, 14], [2048, 7, 7]]


def op_sequence(module: nn.Module) -> list[str]:
    """The order of conv, BN, ReLU, dropout and the addition in a traced forward pass."""
    names = {nn.Conv2d: "conv", nn.BatchNorm2d: "bn", nn.ReLU: "relu", nn.Dropout: "dropout"}
    graph = fx.symbolic_trace(module).graph
    out = []
    for node in graph.nodes:
        if node.op == "call_module" and not isinstance(module.get_submodule(node.target), nn.Identity):
            out.append(names[type(module.get_submodule(node.target))])
        elif node.op == "call_function" and node.target in (operator.add, torch.add):
            out.append("add")
    return out


UNIT_ORDERS = [  # Identity Mappings Fig. 4 (a)-(e) and the Torch blog's ReLU switch
    (dict(unit="original"), "conv bn relu conv bn add relu"),
    (dict(unit="original", relu_after_add=False), "conv bn relu conv bn add"),
    (dict(unit="bn_after_add"), "conv bn relu conv add bn relu"),
    (dict(unit="bn_after_add", relu_after_add=False), "conv bn relu conv add bn"),
    (dict(unit="relu_before_add", relu_after_add=False), "conv bn relu conv bn relu add"),
    (dict(unit="relu_only_preact"), "relu conv bn relu conv bn add"),
    (dict(unit="full_preact"), "bn relu conv bn relu conv add"),
    (dict(unit="full_preact", dropout=0.3), "bn relu conv bn relu dropout conv add"),
]


@pytest.mark.parametrize("kwargs,order", UNIT_ORDERS, ids=[o for _, o in UNIT_ORDERS])
def test_unit_structure_follows_the_paper(kwargs, order):
    unit = ResidualUnit(BasicShape, 16, 16, 1, shortcut="A", **kwargs)
    assert " ".join(op_sequence(unit)) == order


def test_bottleneck_unit_structure():
    unit = ResidualUnit(BottleneckShape, 64, 16, 1, shortcut="B")
    assert " ".join(op_sequence(unit)) == "conv bn relu conv bn relu conv bn add relu"
    kernels = [m.kernel_size for m in unit.branch if isinstance(m, nn.Conv2d)]
    assert kernels == [(1, 1), (3, 3), (1, 1)]


VARIANTS = [dict(unit=u) for u in ("original", "bn_after_add", "relu_before_add", "relu_only_preact", "full_preact")]
VARIANTS += [dict(unit="original", relu_after_add=False), dict(unit="bn_after_add", relu_after_add=False)]


@pytest.mark.parametrize("shortcut", ["A", "B", "C"])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(str(x) for x in v.values()))
def test_every_variant_and_shortcut_trains(variant, shortcut):
    model = net(depth=8, shortcut=shortcut, num_classes=7, **variant)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_bottleneck_and_wide_forward_shapes():
    assert net(depth=11, block="bottleneck", shortcut="B")(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    wrn = net(family="wrn", depth=10, widen_factor=2, dropout=0.3, shortcut="B")
    assert wrn(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert any(isinstance(m, nn.Dropout) and m.p == 0.3 for m in wrn.modules())


def test_shortcut_a_pads_and_subsamples():
    sc = make_shortcut("A", 16, 32, 2, with_bn=True)
    assert isinstance(sc, PadShortcut) and count_params(sc) == 0
    x = torch.randn(2, 16, 8, 8)
    y = sc(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2]) and torch.all(y[:, 16:] == 0)
    assert isinstance(make_shortcut("A", 16, 16, 1, with_bn=True), nn.Identity)


def test_shortcut_b_projects_only_on_shape_change_and_c_everywhere():
    assert isinstance(make_shortcut("B", 16, 16, 1, with_bn=True), nn.Identity)
    b = make_shortcut("B", 16, 32, 2, with_bn=True)
    assert [type(m) for m in b] == [nn.Conv2d, nn.BatchNorm2d]
    c = make_shortcut("C", 16, 16, 1, with_bn=False)
    assert isinstance(c, nn.Conv2d) and c.kernel_size == (1, 1)


def test_shortcut_a_has_fewer_params_than_b_than_c():
    a, b, c = (count_params(net(depth=20, shortcut=s)) for s in "ABC")
    assert a < b < c


def test_init_he_normal_and_bn_and_zero_init_residual():
    model = net(depth=20)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)
    conv = model.stages[2][0].branch[0]
    fan_out = conv.out_channels * 9
    assert abs(conv.weight.std().item() - (2 / fan_out) ** 0.5) < 0.15 * (2 / fan_out) ** 0.5
    zero = net(depth=20, zero_init_residual=True).eval()
    unit = zero.stages[1][1]
    x = torch.randn(2, 32, 16, 16).relu()
    assert torch.allclose(unit(x), x)  # each unit starts as the identity


def test_preact_network_has_final_bn_relu_and_cifar_stem_without_bn():
    model = net(family="preresnet", depth=20)
    assert [type(m) for m in model.final_act] == [nn.BatchNorm2d, nn.ReLU]
    assert [type(m) for m in model.stem] == [nn.Conv2d]
    assert len(net(depth=20).final_act) == 0


def test_unit_defaults_follow_family():
    assert net(family="preresnet", depth=8).stages[0][0].layout == UNIT_LAYOUTS["full_preact"]
    assert net(family="resnet", depth=8).stages[0][0].layout == UNIT_LAYOUTS["original"]
    assert net(family="resnet", depth=8, unit="full_preact").stages[0][0].layout == UNIT_LAYOUTS["full_preact"]


# One table of bad model settings, checked where a library user meets them (build_model) and
# where a command-line user does (the one error line, which names the config key).
BAD_MODELS = [
    (dict(depth=21), "depth=21 does not fit resnet with basic blocks on CIFAR, whose depth is 6n\\+2 "
                     "\\(n >= 1\\); nearest valid: 20 or 26"),
    (dict(depth=-2), "depth=-2 .* nearest valid: 8$"),
    (dict(depth=21, block="bottleneck"), "depth=21 .* 9n\\+2.*nearest valid: 20 or 29"),
    (dict(family="wrn", depth=26, widen_factor=10), "depth=26 .*6n\\+4.*nearest valid: 22 or 28"),
    (dict(depth=51, stem="imagenet", block="bottleneck"), "depth=51 .*\\[18, 34, 50, 101, 152, 200\\].*50 or 101"),
    (dict(depth=50, stem="imagenet", block="basic"), "block='basic' .*uses bottleneck blocks"),
    (dict(family="wrn", stem="imagenet", depth=18), "family='wrn' is a CIFAR family"),
    (dict(family="wrn", depth=13, block="bottleneck"), "block='bottleneck' does not fit wrn"),
    (dict(depth=20, unit="sideways"), "unit='sideways' is not valid; choose one of original, "),
    (dict(depth=20, shortcut="D"), "shortcut='D' is not valid"),
    (dict(depth=20, bottleneck_stride="2x2"), "bottleneck_stride='2x2' is not valid"),
    (dict(depth=20, init="torch"), "init='torch' is not valid; choose one of fb, gcr, gcr_fec67c0, wrn"),
    (dict(depth=20, widen_factor=0), "widen_factor=0 must be a positive integer"),
    (dict(depth=20, widen_factor=-2), "widen_factor=-2 must be a positive integer"),
    (dict(depth=20, dropout=1.0), "dropout=1.0 must lie in \\[0, 1\\)"),
    (dict(depth=20, dropout=-0.1), "dropout=-0.1 must lie in \\[0, 1\\)"),
    (dict(family="dense", depth=20), "family='dense' is not valid"),
    (dict(depth=20, block="triple"), "block='triple' is not valid"),
    (dict(depth=20, unit="full_preact", relu_after_add=True), "relu_after_add=True but unit full_preact has no ReLU"),
    (dict(depth=20, unit="relu_before_add", relu_after_add=True), "relu_after_add=True .*no ReLU after the addition"),
    (dict(depth=8, unit="relu_before_add", zero_init_residual=True), "zero_init_residual=True cannot zero a branch"),
    (dict(depth=20, shortcut="none", unit="full_preact"), "shortcut='none' \\(a plain net, He 2015 Sec. 4.2\\) is "
                                                          "defined with unit=original only, not full_preact"),
    (dict(family="wrn", depth=16, shortcut="none"), "shortcut='none' .* not full_preact"),
    (dict(depth=20, shortcut="none", relu_after_add=False), "relu_after_add=False with shortcut=none leaves no "
                                                            "nonlinearity"),
    (dict(depth=20, shortcut="none", zero_init_residual=True), "zero_init_residual=True with shortcut=none zeroes"),
    (dict(depth=20, projection_bn=False), "projection_bn=False but shortcut A has no projection; use shortcut B or C"),
    (dict(depth=20, stage_entry="both"), "stage_entry='both' but unit original has no pre-activation to place"),
    (dict(family="preresnet", depth=20, stage_entry="split"), "stage_entry='split' is not valid; choose one of "
                                                              "branch, both, none"),
]
BAD_IDS = [m.split(" ")[0] + "-" + "-".join(map(str, kw.values())) for kw, m in BAD_MODELS]


@pytest.mark.parametrize("spec,message", BAD_MODELS, ids=BAD_IDS)
def test_invalid_models_fail_at_construction(spec, message):
    with pytest.raises(ModelError, match="^" + message):
        net(**spec)


def test_num_classes_is_checked_as_a_data_key(compose):
    from omegaconf import OmegaConf

    from resnet_train.config import validate

    with pytest.raises(ValueError, match="^data.num_classes=0 must be a positive integer"):
        validate(OmegaConf.to_object(compose("data.num_classes=0")))


@pytest.mark.parametrize("spec,message", BAD_MODELS, ids=BAD_IDS)
def test_invalid_models_end_the_command_with_one_line(cli, spec, message):
    code, err = cli(*(f"model.{k}={v}" for k, v in spec.items()), "hydra.run.dir=run")
    assert code == 1 and re.match("resnet-train: error: model." + message, our_line(err))


def test_labels_are_the_papers_names():
    assert ModelSpec(family="wrn", depth=28, widen_factor=10).label == "wrn-28-10"  # mode=info once said wrn-28
    assert ModelSpec(family="preresnet", depth=1001).label == "preresnet-1001"
    assert ModelSpec(depth=110, widen_factor=2).label == "resnet-110"
    assert ModelSpec(depth=56, shortcut="none").label == "plain-56"


def traced_ops(model: nn.Module) -> list[str]:
    """Every module type and function a traced forward pass calls, in order."""
    out = []
    for node in fx.symbolic_trace(model).graph.nodes:
        if node.op == "call_module":
            out.append(type(model.get_submodule(node.target)).__name__)
        elif node.op == "call_function":
            out.append(getattr(node.target, "__name__", str(node.target)))
    return out


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_plain_nets_have_no_shortcut_and_the_resnets_parameters(compose, depth):
    plain, resnet = build_model(preset(compose, f"plain{depth}")), build_model(preset(compose, f"resnet{depth}"))
    ops = traced_ops(plain)
    assert "add" not in ops and "pad" not in ops and "PadShortcut" not in ops
    layers = [op for op in ops if op in ("Conv2d", "BatchNorm2d", "ReLU")]
    assert layers == ["Conv2d", "BatchNorm2d", "ReLU"] * (depth - 1)  # He 2015 Fig. 3 (middle): conv-BN-ReLU
    assert traced_ops(resnet).count("add") == 3 * (depth - 2) // 6  # the same tracer sees every addition
    assert count_params(plain) == count_params(resnet)  # shortcut A adds no parameters
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in resnet.state_dict().items()}


def test_plain_net_trains_every_parameter():
    model = net(depth=8, shortcut="none", num_classes=7)
    model(torch.randn(2, 3, 32, 32)).logsumexp(1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_bn_momentum_sets_every_bn_and_null_averages_the_batches_since_each_restart():
    """model.bn_momentum=m is each batch's weight in every BN's running statistics; null gives
    gcr's "dynamic" momentum 1 / (1 + n), n the batches since the count was zeroed: the running
    mean is then the mean of those batches' means (gcr@5549988:train-cifar.lua:173-183)."""
    from resnet_train.models import restart_bn_averages

    bns = lambda model: [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]  # noqa: E731
    assert {m.momentum for m in bns(net(depth=8, bn_momentum=0.01))} == {0.01}
    assert {m.momentum for m in bns(net(depth=8))} == {0.1}
    model = net(depth=8, bn_momentum=None).train()
    first = bns(model)[0]
    seen = []
    first.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].detach().mean(dim=(0, 2, 3))))
    torch.manual_seed(0)
    with torch.no_grad():
        model(torch.randn(4, 3, 32, 32))  # a batch of an earlier epoch
        restart_bn_averages(model)
        seen.clear()
        for shift in (0.0, 1.0, 3.0):
            model(torch.randn(4, 3, 32, 32) + shift)
    gcr = torch.zeros_like(seen[0])
    for n, mean in enumerate(seen):  # Torch's running_mean update with gcr's momentum
        gcr = (1 - 1 / (n + 1)) * gcr + 1 / (n + 1) * mean
    torch.testing.assert_close(first.running_mean, gcr)
    torch.testing.assert_close(first.running_mean, torch.stack(seen).mean(0))
    assert int(first.num_batches_tracked) == 3
