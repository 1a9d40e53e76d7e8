# Makes conf/ importable as the package `resnet_train.conf` (see pyproject.toml), so the
# installed command finds its configs through Hydra's pkg:// source, from a wheel as well.
