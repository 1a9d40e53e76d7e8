"""resnet-train: a Hydra-configured trainer for the ResNet family."""

__version__ = "0.1.0"
