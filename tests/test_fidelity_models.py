"""The models against the reference code behind the published numbers (docs/fidelity.md).

Each reference network is written out here as the Lua file builds it, with its own modules;
our network's weights are copied into it in order, and the outputs must agree."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_train.models.summary import model_summary

from .conftest import net


def _bn_relu(c: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(c), nn.ReLU()]


class _PadA(nn.Module):
    """preresnet.lua:35-41: SpatialAveragePooling(1, 1, s, s), then Concat(Identity, MulConstant(0))."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        x = x[:, :, ::self.stride, ::self.stride]
        return torch.cat([x, torch.zeros_like(x)], 1)


class _LuaUnit(nn.Module):
    """nn.Sequential(block..., ConcatTable(s, shortcut), CAddTable, after...)."""

    def __init__(self, block: list[nn.Module], s: list[nn.Module], shortcut: nn.Module, after: tuple = ()):
        super().__init__()
        self.block, self.s, self.shortcut = nn.Sequential(*block), nn.Sequential(*s), shortcut
        self.after = nn.Sequential(*after)

    def forward(self, x):
        x = self.block(x)
        return self.after(self.s(x) + self.shortcut(x))


def fb_preresnet_cifar(depth: int, shortcut_type: str) -> nn.Sequential:
    """facebookarchive/fb.resnet.torch@985e569 models/preresnet.lua, the CIFAR-10 branch (lines
    59-82, 114-125, 159-175): the first unit of every stage is 'both_preact' (BN-ReLU before the
    split), the others pre-activate inside the branch."""
    n = (depth - 2) // 6
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, padding=1, bias=False)]
    channels = 16
    for width, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(n):
            s_in, st = channels, stride if i == 0 else 1
            block, s = (_bn_relu(s_in), []) if i == 0 else ([], _bn_relu(s_in))
            s += [nn.Conv2d(s_in, width, 3, st, 1, bias=False), *_bn_relu(width),
                  nn.Conv2d(width, width, 3, 1, 1, bias=False)]
            if shortcut_type == "C" or (shortcut_type == "B" and s_in != width):
                sc = nn.Conv2d(s_in, width, 1, st, bias=False)
            elif s_in != width:
                sc = _PadA(st)
            else:
                sc = nn.Identity()
            layers.append(_LuaUnit(block, s, sc))
            channels = width
    layers += [*_bn_relu(64), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


def he_preresnet_bottleneck(depth: int) -> nn.Sequential:
    """KaimingHe/resnet-1k-layers@fde7ee9 resnet-pre-act.lua:34-122: bottleneck units whose first
    1x1 conv strides; a stage's first unit applies BN-ReLU before the split and projects the
    activated input with a 1x1 conv."""
    n = (depth - 2) // 9
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, padding=1, bias=False)]
    channels = 16
    for out, stride in ((64, 1), (128, 2), (256, 2)):
        mid = out // 4
        for i in range(n):
            c_in, st = channels, stride if i == 0 else 1
            convs = [nn.Conv2d(c_in, mid, 1, st, bias=False), *_bn_relu(mid), nn.Conv2d(mid, mid, 3, 1, 1, bias=False),
                     *_bn_relu(mid), nn.Conv2d(mid, out, 1, bias=False)]
            if c_in == out:
                layers.append(_LuaUnit([], _bn_relu(c_in) + convs, nn.Identity()))
            else:
                layers.append(_LuaUnit(_bn_relu(c_in), convs, nn.Conv2d(c_in, out, 1, st, bias=False)))
            channels = out
    layers += [*_bn_relu(256), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 10)]
    return nn.Sequential(*layers)


FB_IMAGENET = {18: ("basic", (2, 2, 2, 2)), 50: ("bottleneck", (3, 4, 6, 3))}


def _fb_imagenet_net(depth: int, make_unit, final: list[nn.Module]) -> nn.Sequential:
    """The ImageNet trunk both Lua files share: 7x7/2 conv, BN, ReLU, 3x3/2 max-pool, four stages of
    make_unit(c_in, width, stride, expansion), `final`, global pool, Linear."""
    block, counts = FB_IMAGENET[depth]
    expansion = 1 if block == "basic" else 4
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), *_bn_relu(64), nn.MaxPool2d(3, 2, 1)]
    channels = 64
    for width, count, stride in zip((64, 128, 256, 512), counts, (1, 2, 2, 2), strict=True):
        for i in range(count):
            layers.append(make_unit(channels, width, stride if i == 0 else 1, expansion))
            channels = width * expansion
    return nn.Sequential(*layers, *final(channels), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 1000))


def _fb_convs(c_in: int, width: int, stride: int, expansion: int) -> list[nn.Module]:
    """resnet.lua:53-57 (basic) and 73-80 (bottleneck, the 3x3 strided): the convs with BN-ReLU
    between them, without the last BN."""
    if expansion == 1:
        return [nn.Conv2d(c_in, width, 3, stride, 1, bias=False), *_bn_relu(width),
                nn.Conv2d(width, width, 3, 1, 1, bias=False)]
    return [nn.Conv2d(c_in, width, 1, bias=False), *_bn_relu(width), nn.Conv2d(width, width, 3, stride, 1, bias=False),
            *_bn_relu(width), nn.Conv2d(width, width * 4, 1, bias=False)]


def _fb_projection(c_in: int, c_out: int, stride: int, with_bn: bool) -> nn.Module:
    """resnet.lua:27-34, shortcut B: a 1x1 conv (and BN) where the channels change."""
    if c_in == c_out:
        return nn.Identity()
    conv = nn.Conv2d(c_in, c_out, 1, stride, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(c_out)) if with_bn else conv


def fb_resnet_imagenet(depth: int, projection_bn: bool, bn_after_add: bool) -> nn.Sequential:
    """facebookarchive/fb.resnet.torch@985e569 models/resnet.lua:26-128 (ImageNet, shortcut B), with
    the two ways its released models differ from it: no BN after the shortcut's 1x1 conv (ResNet-18,
    -34, -50: issues #49, #191) and the branch's last BN moved after the addition (ResNet-50:
    pretrained/README.md:13)."""
    def unit(c_in, width, stride, expansion):
        c_out = width * expansion
        last_bn = [] if bn_after_add else [nn.BatchNorm2d(c_out)]
        after = (nn.BatchNorm2d(c_out), nn.ReLU()) if bn_after_add else (nn.ReLU(),)
        return _LuaUnit([], _fb_convs(c_in, width, stride, expansion) + last_bn,
                        _fb_projection(c_in, c_out, stride, projection_bn), after)

    return _fb_imagenet_net(depth, unit, lambda c: [])


def fb_preresnet_imagenet_c530106(depth: int) -> nn.Sequential:
    """facebookarchive/fb.resnet.torch@c530106 models/preresnet.lua:28-137 (ImageNet), the code of
    the released ResNet-200: `layer` drops its 'first' argument (97-103), so every unit pre-activates
    inside its branch, even the first after the stem's BN-ReLU, and the shortcut, conv-BN where
    it projects, takes the raw input. Its bottleneck's middle BN is declared with n * 4 features for
    n channels (85; fixed in 3beb17b): only the first n are ever used, as a BN of n."""
    def unit(c_in, width, stride, expansion):
        convs = _fb_convs(c_in, width, stride, expansion)
        return _LuaUnit([], _bn_relu(c_in) + convs, _fb_projection(c_in, width * expansion, stride, True))

    return _fb_imagenet_net(depth, unit, _bn_relu)


def copy_in_order(src: nn.Module, dst: nn.Module) -> None:
    """Both networks register their tensors in the Lua file's order; copy them one by one."""
    a, b = list(src.state_dict().values()), list(dst.state_dict().values())
    assert [t.shape for t in a] == [t.shape for t in b]
    with torch.no_grad():
        for x, y in zip(a, b, strict=True):
            y.copy_(x)


def randomise_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g))
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def assert_computes_as(ours: nn.Module, ref: nn.Module, x: torch.Tensor, tol: float = 1e-5) -> None:
    """Our weights copied into the reference, BN statistics randomised first: the same outputs in
    evaluation and in training mode."""
    randomise_bn(ours)
    copy_in_order(ours, ref)
    for mode in (False, True):
        ours.train(mode), ref.train(mode)
        torch.testing.assert_close(ours(x), ref(x), rtol=tol, atol=tol)


def _inputs(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shortcut", ["A", "B", "C"])
def test_preresnet_equals_fb_resnet_torch_preresnet_lua(shortcut):
    assert_computes_as(net(family="preresnet", depth=20, shortcut=shortcut), fb_preresnet_cifar(20, shortcut),
                       _inputs(4, 32, 1))


def test_preresnet110_first_units_feed_the_shortcut_the_activated_input():
    model = net(family="preresnet", depth=110, shortcut="A")
    firsts = [stage[0] for stage in model.stages]
    assert all(u.shortcut_sees_preact for u in firsts)
    assert not any(u.shortcut_sees_preact for stage in model.stages for u in list(stage)[1:])


def test_preresnet_bottleneck_equals_he_resnet_pre_act_lua():
    ours = net(family="preresnet", depth=20, block="bottleneck", shortcut="B", bottleneck_stride="1x1")
    assert_computes_as(ours, he_preresnet_bottleneck(20), _inputs(4, 32, 2))


def test_bottleneck_stride_position_and_resnet164_macs():
    he = net(family="preresnet", depth=164, block="bottleneck", shortcut="B", bottleneck_stride="1x1")
    tv = net(family="preresnet", depth=164, block="bottleneck", shortcut="B")
    strides = [m.stride for m in he.stages[1][0].branch if isinstance(m, nn.Conv2d)]
    assert strides == [(2, 2), (1, 1), (1, 1)]
    assert [m.stride for m in tv.stages[1][0].branch if isinstance(m, nn.Conv2d)] == [(1, 1), (2, 2), (1, 1)]
    # ResNet-164, per image at 32 px: 244.5M MACs with He's layout, 247.6M with the 3x3 strided.
    assert round(model_summary(he, 32)["macs"] / 1e5) == 2445
    assert round(model_summary(tv, 32)["macs"] / 1e5) == 2476


def test_imagenet_preresnet_stage1_first_unit_has_no_preactivation():
    model = net(family="preresnet", depth=18, stem="imagenet", shortcut="B", num_classes=1000)
    assert len(model.stages[0][0].preact) == 0
    assert all(stage[0].shortcut_sees_preact for stage in list(model.stages)[1:])


@pytest.mark.parametrize("depth, projection_bn, unit", [(18, False, "original"), (50, False, "bn_after_add"),
                                                         (50, True, "original")], ids=["18", "50", "50-public"])
def test_released_fb_resnets_equal_resnet_lua_changed_as_their_readme_and_issues_say(depth, projection_bn, unit):
    block = FB_IMAGENET[depth][0]
    ours = net(depth=depth, block=block, stem="imagenet", shortcut="B", unit=unit, projection_bn=projection_bn,
               num_classes=1000)
    ref = fb_resnet_imagenet(depth, projection_bn, bn_after_add=unit == "bn_after_add")
    assert_computes_as(ours, ref, _inputs(2, 64, 3), tol=1e-4)


def test_preresnet_with_stage_entry_branch_equals_fb_resnet_torch_at_c530106():
    ours = net(family="preresnet", depth=50, block="bottleneck", stem="imagenet", shortcut="B", stage_entry="branch",
               projection_bn=True, num_classes=1000)
    assert_computes_as(ours, fb_preresnet_imagenet_c530106(50), _inputs(2, 64, 4), tol=1e-4)


ZERO_INIT_UNITS = [
    dict(unit="original"), dict(unit="original", relu_after_add=False), dict(unit="bn_after_add"),
    dict(unit="bn_after_add", relu_after_add=False), dict(unit="relu_only_preact"), dict(unit="full_preact"),
    dict(unit="full_preact", block="bottleneck", depth=20), dict(unit="original", block="bottleneck", depth=20),
]


@pytest.mark.parametrize("kwargs", ZERO_INIT_UNITS, ids=lambda k: "-".join(map(str, k.values())))
def test_zero_init_residual_starts_at_identity_and_every_branch_learns(kwargs):
    kwargs = {"depth": 14, "shortcut": "B", **kwargs}  # two units a stage: units[1] has an identity shortcut
    torch.manual_seed(0)
    model = net(zero_init_residual=True, **kwargs)
    units = [u for stage in model.stages for u in stage]
    zeroed = [u.branch[-1].weight for u in units]
    assert all(torch.all(w == 0) for w in zeroed)
    x = torch.randn(4, units[1].out_channels, 32, 32)
    model.eval()
    y = units[1](x)
    expect = units[1].after_add(x) if not units[1].layout.preact else x
    torch.testing.assert_close(y, expect)  # the unit starts as its identity path
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    data, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(data), labels).backward()
        opt.step()
    still_zero = [i for i, w in enumerate(zeroed) if torch.all(w == 0)]
    assert not still_zero, f"units {still_zero} never left zero"


def test_classifier_bias_starts_at_zero():
    for kwargs in (dict(depth=20), dict(family="preresnet", depth=20), dict(family="wrn", depth=16, shortcut="B"),
                   dict(family="wrn", depth=16, shortcut="B", init="wrn")):
        assert torch.all(net(**kwargs).fc.bias == 0)


def _bn_kind(bn: nn.BatchNorm2d) -> str:
    """Which draw a BN scale came from: 1, N(1, 0.002) or U(0, 1)."""
    w = bn.weight.detach()
    if torch.all(w == 1):
        return "one"
    if (w - 1).abs().max() < 0.002 * 6:
        return "normal"
    assert w.min() >= 0 and w.max() < 1 and w.numel() >= 16
    return "uniform"


def _conv_fans(model: nn.Module, fan: str) -> None:
    """Every conv's weights are N(0, sqrt(2 / fan)) with fan = k*k*C_in or k*k*C_out."""
    for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d)):
        k = conv.kernel_size[0] * conv.kernel_size[1]
        expect = (2 / (k * (conv.in_channels if fan == "fan_in" else conv.out_channels))) ** 0.5
        assert abs(conv.weight.std().item() / expect - 1) < 0.15, conv
        assert abs(conv.weight.mean().item()) < 0.2 * expect, conv


# The order of BN draws as each reference builds a CIFAR ResNet-20 (stem BN, then each of the 9
# units' two BNs): gcr@3d1ed05 train-cifar.lua:71 leaves the stem's BN to cudnn's reset, U(0, 1),
# residual-layers.lua:57-59 draws the first BN of a unit from N(1, 0.002), :87 leaves the second to
# cudnn; gcr@fec67c0 train-cifar.lua:84-94 draws every BN from N(1, 0.002); fb.resnet.torch sets 1.
GCR_RESNET20 = {"gcr": ["uniform"] + ["normal", "uniform"] * 9, "gcr_fec67c0": ["normal"] * 19, "fb": ["one"] * 19}


@pytest.mark.parametrize("scheme", sorted(GCR_RESNET20))
def test_init_schemes_draw_as_their_reference_code(scheme):
    torch.manual_seed(0)
    model = net(depth=20, init=scheme)
    assert [_bn_kind(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d)] == GCR_RESNET20[scheme]
    assert all(torch.all(m.bias == 0) for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    _conv_fans(model, "fan_out" if scheme == "fb" else "fan_in")
    bound = 64 ** -0.5  # Torch7's nn.Linear reset (torch/nn@0a42c19:Linear.lua:14-33) for both in gcr
    for param in (model.fc.weight, model.fc.bias):
        assert param.abs().max() <= bound
    if scheme != "fb":
        assert model.fc.bias.abs().min() > 0 and model.fc.weight.std() > bound / 3 ** 0.5 * 0.8


def test_wrn_init_is_the_papers_code():
    """wide-resnet.lua@ae6d0d0:106-109: every BN scale U(0, 1) from the reset, convs fan-in
    (utils.lua:3-9), classifier bias 0 (utils.lua:11-15)."""
    torch.manual_seed(0)
    model = net(family="wrn", depth=16, widen_factor=4, dropout=0.3, init="wrn")
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {_bn_kind(m) for m in bns} == {"uniform"}
    scales = torch.cat([m.weight.detach() for m in bns])
    assert abs(scales.mean().item() - 0.5) < 0.03 and abs(scales.std().item() - 12 ** -0.5) < 0.03
    _conv_fans(model, "fan_in")
    assert torch.all(model.fc.bias == 0)

