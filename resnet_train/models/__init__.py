from .blocks import BOTTLENECK_STRIDES, SHORTCUTS, UNIT_LAYOUTS, UNITS, ResidualUnit, UnitLayout
from .init import INIT_SCHEMES, init_weights
from .resnet import ResNet, Stage, build_model, restart_bn_averages
from .spec import FAMILIES, IMAGENET_DEPTHS, STEMS, ModelError, ModelSpec

__all__ = ["BOTTLENECK_STRIDES", "FAMILIES", "IMAGENET_DEPTHS", "INIT_SCHEMES", "SHORTCUTS", "STEMS", "UNITS",
           "UNIT_LAYOUTS", "ModelError", "ModelSpec", "ResNet", "ResidualUnit", "Stage", "UnitLayout", "build_model",
           "init_weights", "restart_bn_averages"]
