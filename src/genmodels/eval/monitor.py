"""The class monitor a GAN's training runs with: class coverage of fresh samples on the dataset's
feature net, to warn of mode collapse. Built here and handed to the Trainer (``genmodels.api.train``),
so training never imports the evaluation."""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

from genmodels.data.config import DataConfig


def class_monitor(
    data_cfg: DataConfig, shape: tuple[int, ...], device: torch.device
) -> Callable[[torch.Tensor], dict[str, float]] | None:
    """samples -> class coverage and KL against the test split, on the dataset's feature net; None
    (and one note) when the dataset has no feature net of this image shape."""
    from genmodels.eval.features import load_feature_net, shipped_feature_nets
    from genmodels.eval.metrics import class_coverage
    from genmodels.runs import load_data

    dataset = data_cfg.dataset
    card = shipped_feature_nets().get(dataset)
    if card is None or tuple(card["config"]["image_shape"]) != tuple(shape):
        print(f"note: no feature net for {dataset} at {tuple(shape)}; class coverage is not monitored", file=sys.stderr)
        return None
    net = load_feature_net(dataset, device)
    test = load_data(data_cfg, "test")
    real = net.classify(torch.from_numpy(test.images[:2000]).to(device).float() / 255.0)
    k = int(card["config"]["num_classes"])

    def monitor(samples: torch.Tensor) -> dict[str, float]:
        cc = class_coverage(net.classify(samples.float()), real, k)
        return {"class_coverage": float(cc["covered"]), "class_kl": float(cc["kl"])}

    return monitor
