import operator

import pytest
import torch
import torchvision
from torch import fx, nn

from resnet_train.models import PostActUnit, PreActUnit, build_model
from resnet_train.models.blocks import BasicShape, BottleneckShape, PadShortcut, make_shortcut
from resnet_train.models.summary import count_params, model_summary

CIFAR_PARAMS = [  # published counts, CIFAR-10 (He 2015 Table 6, He 2016 Table 3, WRN Table 4)
    ("resnet20", dict(depth=20), 0.27e6),
    ("resnet32", dict(depth=32), 0.46e6),
    ("resnet44", dict(depth=44), 0.66e6),
    ("resnet56", dict(depth=56), 0.85e6),
    ("resnet110", dict(depth=110), 1.7e6),
    ("resnet1202", dict(depth=1202), 19.4e6),
    ("preresnet164", dict(family="preresnet", depth=164, block="bottleneck", shortcut="B"), 1.7e6),
    ("preresnet1001", dict(family="preresnet", depth=1001, block="bottleneck", shortcut="B"), 10.2e6),
    ("wrn_16_4", dict(family="wrn", depth=16, widen_factor=4, shortcut="B"), 2.7e6),
    ("wrn_16_8", dict(family="wrn", depth=16, widen_factor=8, shortcut="B"), 11.0e6),
    ("wrn_28_10", dict(family="wrn", depth=28, widen_factor=10, shortcut="B"), 36.5e6),
    ("wrn_40_4", dict(family="wrn", depth=40, widen_factor=4, shortcut="B"), 8.9e6),
]


@pytest.mark.parametrize("name,kwargs,published", CIFAR_PARAMS, ids=[c[0] for c in CIFAR_PARAMS])
def test_cifar_param_counts_match_papers(name, kwargs, published):
    params = count_params(build_model(**kwargs))
    assert abs(params - published) / published < 0.02, f"{name}: {params} vs {published}"


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_imagenet_param_counts_equal_torchvision(depth):
    block = "basic" if depth < 50 else "bottleneck"
    ours = build_model(depth=depth, stem="imagenet", block=block, shortcut="B", num_classes=1000)
    theirs = getattr(torchvision.models, f"resnet{depth}")()
    assert count_params(ours) == count_params(theirs)


@pytest.mark.parametrize("kwargs,image_size,published", [
    (dict(depth=20), 32, 41e6),
    (dict(depth=110), 32, 253e6),
    (dict(family="wrn", depth=28, widen_factor=10, shortcut="B"), 32, 5.25e9),
    (dict(depth=50, stem="imagenet", block="bottleneck", shortcut="B", num_classes=1000), 224, 4.1e9),
])
def test_macs_match_papers(kwargs, image_size, published):
    info = model_summary(build_model(**kwargs), image_size)
    assert abs(info["macs"] - published) / published < 0.03


def test_summary_stage_shapes_cifar_and_imagenet():
    assert model_summary(build_model(depth=20), 32)["stage_shapes"] == [[16, 32, 32], [32, 16, 16], [64, 8, 8]]
    shapes = model_summary(build_model(depth=50, stem="imagenet", block="bottleneck", shortcut="B"), 224)
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
    (PostActUnit, dict(unit="original"), "conv bn relu conv bn add relu"),
    (PostActUnit, dict(unit="original", relu_after_add=False), "conv bn relu conv bn add"),
    (PostActUnit, dict(unit="bn_after_add"), "conv bn relu conv add bn relu"),
    (PostActUnit, dict(unit="bn_after_add", relu_after_add=False), "conv bn relu conv add bn"),
    (PostActUnit, dict(unit="relu_before_add", relu_after_add=False), "conv bn relu conv bn relu add"),
    (PreActUnit, dict(unit="relu_only_preact"), "relu conv bn relu conv bn add"),
    (PreActUnit, dict(unit="full_preact"), "bn relu conv bn relu conv add"),
    (PreActUnit, dict(unit="full_preact", dropout=0.3), "bn relu conv bn relu dropout conv add"),
]


@pytest.mark.parametrize("cls,kwargs,order", UNIT_ORDERS, ids=[o for _, _, o in UNIT_ORDERS])
def test_unit_structure_follows_the_paper(cls, kwargs, order):
    unit = cls(BasicShape, 16, 16, 1, shortcut="A", **kwargs)
    assert " ".join(op_sequence(unit)) == order


def test_bottleneck_unit_structure():
    unit = PostActUnit(BottleneckShape, 64, 16, 1, shortcut="B")
    assert " ".join(op_sequence(unit)) == "conv bn relu conv bn relu conv bn add relu"
    kernels = [m.kernel_size for m in unit.branch if isinstance(m, nn.Conv2d)]
    assert kernels == [(1, 1), (3, 3), (1, 1)]


VARIANTS = [dict(unit=u) for u in ("original", "bn_after_add", "relu_before_add", "relu_only_preact", "full_preact")]
VARIANTS += [dict(unit="original", relu_after_add=False), dict(unit="bn_after_add", relu_after_add=False)]


@pytest.mark.parametrize("shortcut", ["A", "B", "C"])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(str(x) for x in v.values()))
def test_every_variant_and_shortcut_trains(variant, shortcut):
    model = build_model(depth=8, shortcut=shortcut, num_classes=7, **variant)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_bottleneck_and_wide_forward_shapes():
    assert build_model(depth=11, block="bottleneck", shortcut="B")(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    wrn = build_model(family="wrn", depth=10, widen_factor=2, dropout=0.3, shortcut="B")
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
    a, b, c = (count_params(build_model(depth=20, shortcut=s)) for s in "ABC")
    assert a < b < c


def test_init_he_normal_and_bn_and_zero_init_residual():
    model = build_model(depth=20)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)
    conv = model.stages[2][0].branch[0]
    fan_out = conv.out_channels * 9
    assert abs(conv.weight.std().item() - (2 / fan_out) ** 0.5) < 0.15 * (2 / fan_out) ** 0.5
    zero = build_model(depth=20, zero_init_residual=True).eval()
    unit = zero.stages[1][1]
    x = torch.randn(2, 32, 16, 16).relu()
    assert torch.allclose(unit(x), x)  # each unit starts as the identity


def test_preact_network_has_final_bn_relu_and_cifar_stem_without_bn():
    model = build_model(family="preresnet", depth=20)
    assert [type(m) for m in model.final_act] == [nn.BatchNorm2d, nn.ReLU]
    assert [type(m) for m in model.stem] == [nn.Conv2d]
    assert len(build_model(depth=20).final_act) == 0


def test_unit_defaults_follow_family():
    assert isinstance(build_model(family="preresnet", depth=8).stages[0][0], PreActUnit)
    assert isinstance(build_model(family="resnet", depth=8).stages[0][0], PostActUnit)
    assert isinstance(build_model(family="resnet", depth=8, unit="full_preact").stages[0][0], PreActUnit)


BAD = [
    (dict(depth=21), "6n\\+2.*nearest valid: 20 or 26"),
    (dict(depth=21, block="bottleneck"), "9n\\+2.*nearest valid: 20 or 29"),
    (dict(family="wrn", depth=28 - 2, widen_factor=10), "6n\\+4.*nearest valid: 22 or 28"),
    (dict(depth=51, stem="imagenet", block="bottleneck"), "one of \\[18, 34, 50, 101, 152, 200\\].*50 or 101"),
    (dict(depth=50, stem="imagenet", block="basic"), "uses bottleneck blocks"),
    (dict(depth=20, unit="sideways"), "unknown unit 'sideways'"),
    (dict(depth=20, shortcut="D"), "unknown shortcut 'D'"),
    (dict(depth=20, widen_factor=0), "widen_factor must be a positive integer"),
    (dict(depth=20, widen_factor=-2), "widen_factor must be a positive integer"),
    (dict(depth=20, dropout=1.0), "dropout must lie in \\[0, 1\\)"),
    (dict(depth=20, dropout=-0.1), "dropout must lie in \\[0, 1\\)"),
    (dict(family="dense", depth=20), "unknown model family"),
    (dict(depth=20, block="triple"), "unknown block"),
    (dict(depth=20, unit="full_preact", relu_after_add=True), "no ReLU after the addition"),
    (dict(depth=20, unit="relu_before_add", relu_after_add=True), "no ReLU after the addition"),
]


@pytest.mark.parametrize("kwargs,message", BAD, ids=[m.split(".")[0][:30] for _, m in BAD])
def test_invalid_models_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(**kwargs)
