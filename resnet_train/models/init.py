"""Weight initialisation, as each reference code did it (`model.init`).

The references differ only in the spread of the convs, the BN scales and the classifier's bias.
Read off the code behind each published number:

- fb: fb.resnet.torch models/preresnet.lua@985e569:197-223 (and He's resnet-pre-act.lua@fde7ee9:
  127-137, the same): convs N(0, sqrt(2 / (k*k*C_out))), He et al. 2015's fan-out normal; BN scale
  1; classifier bias 0.
- gcr: gcr/torch-residual-networks@3d1ed05, behind the Torch blog's ResNet-110 tables: every conv
  nninit.kaiming with gain 'relu', i.e. N(0, sqrt(2 / (k*k*C_in))) (residual-layers.lua:53-64,
  train-cifar.lua:68-70; Kaixhin/nninit@5f896b1:nninit.lua:195-210); the BN right after a unit's
  first conv N(1, 0.002) (residual-layers.lua:57-59); every other BN keeps cudnn's default reset,
  scale U(0, 1) (soumith/cudnn.torch@056ed89:SpatialBatchNormalization.lua:48-51); the classifier
  keeps Torch7's default, weight and bias U(+-1/sqrt(fan_in)) (torch/nn@0a42c19:Linear.lua:14-33).
  Its convs also carry a bias, initialised to 0: each feeds a BN, so that bias gets no gradient and
  stays 0, and we leave it out.
- gcr_fec67c0: the same repository at fec67c0 (2016-01-14), which ran the blog's ResNet-20 rows
  (run ids of 2016-01-14 17:09, on the branch that had fec67c0; the nninit commits f16f517 and
  b738d66 were merged only on 2016-01-15, at 865f47f): one pass over all modules, every conv
  N(0, sqrt(2 / (k*k*C_in))) and every BN scale N(1, 0.002) (train-cifar.lua:84-94); the classifier
  keeps Torch7's default.
- wrn: szagoruyko/wide-residual-networks@ae6d0d0, whose model and training code are those of
  5e7ed6c (2016-11-29), the commit that brought the per-channel mean/std runs behind the paper's
  4.00 / 3.89 (the earlier code read only ZCA-whitened data, behind v1's 4.17 / 4.39):
  wide-resnet.lua:106-109 resets every module (utils.lua:24-31), which leaves each BN scale at
  Torch7's U(0, 1) (torch/nn@55f4c44:BatchNormalization.lua:65-74), then sets the convs to
  N(0, sqrt(2 / (k*k*C_in))) (utils.lua:3-9; fan-out before ea02518, 2016-09-08, for v1's runs)
  and the classifier's bias to 0 (utils.lua:11-15).

BN shifts start at 0 in all. The classifier's weight is U(+-1/sqrt(fan_in)) in all:
Torch7's default, and PyTorch's, which nn.Linear has drawn already.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .blocks import ResidualUnit, branch_output_scale, first_branch_bn


@dataclass(frozen=True)
class InitScheme:
    conv_fan: str  # "fan_out" | "fan_in": N(0, sqrt(2 / fan)), fan = k*k*C_out or k*k*C_in
    bn_scale: str  # every BN's scale: "one" | "uniform" (U(0, 1)) | "normal" (N(1, 0.002))
    first_bn_scale: str  # the BN after a residual unit's first conv, if it differs
    fc_bias: str  # "zero" | "uniform" (U(+-1/sqrt(fan_in)), as nn.Linear draws it)


INIT_SCHEMES = {
    "fb": InitScheme(conv_fan="fan_out", bn_scale="one", first_bn_scale="one", fc_bias="zero"),
    "gcr": InitScheme(conv_fan="fan_in", bn_scale="uniform", first_bn_scale="normal", fc_bias="uniform"),
    "gcr_fec67c0": InitScheme(conv_fan="fan_in", bn_scale="normal", first_bn_scale="normal", fc_bias="uniform"),
    "wrn": InitScheme(conv_fan="fan_in", bn_scale="uniform", first_bn_scale="uniform", fc_bias="zero"),
}


def _scale(bn: nn.BatchNorm2d, how: str) -> None:
    if how == "one":
        nn.init.ones_(bn.weight)
    elif how == "uniform":
        nn.init.uniform_(bn.weight, 0.0, 1.0)
    else:
        nn.init.normal_(bn.weight, 1.0, 0.002)
    nn.init.zeros_(bn.bias)


def init_weights(model: nn.Module, scheme: str = "fb", zero_init_residual: bool = False) -> None:
    """Initialises `model` in place as INIT_SCHEMES[scheme] says. zero_init_residual then zeroes
    the layer that scales each residual branch's output, so every unit starts as the identity
    (Goyal et al. 2017; in none of the references)."""
    how = INIT_SCHEMES[scheme]
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=how.conv_fan, nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            _scale(m, how.bn_scale)
        elif isinstance(m, nn.Linear) and how.fc_bias == "zero":
            nn.init.zeros_(m.bias)
    units = [m for m in model.modules() if isinstance(m, ResidualUnit)]
    if how.first_bn_scale != how.bn_scale:
        for unit in units:
            _scale(first_branch_bn(unit), how.first_bn_scale)
    if zero_init_residual:
        for unit in units:
            nn.init.zeros_(branch_output_scale(unit).weight)
