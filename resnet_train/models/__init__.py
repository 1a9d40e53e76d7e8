from .blocks import (
    BOTTLENECK_STRIDES,
    POST_ACTIVATION_UNITS,
    PRE_ACTIVATION_UNITS,
    SHORTCUTS,
    UNITS,
    PostActUnit,
    PreActUnit,
)
from .resnet import (
    FAMILIES,
    IMAGENET_DEPTHS,
    STEMS,
    ResNet,
    Stage,
    build_model,
    check_model_args,
    default_unit,
    init_weights,
)

__all__ = ["BOTTLENECK_STRIDES", "FAMILIES", "IMAGENET_DEPTHS", "POST_ACTIVATION_UNITS", "PRE_ACTIVATION_UNITS",
           "SHORTCUTS", "STEMS", "UNITS", "PostActUnit", "PreActUnit", "ResNet", "Stage", "build_model",
           "check_model_args", "default_unit", "init_weights"]
