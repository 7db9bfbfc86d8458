"""Datasets as uint8 (N, C, H, W) arrays: the catalog (MNIST, Fashion-MNIST, KMNIST, CIFAR-10, digits),
folders of images and ``.npz`` files, with verified, resumable downloads.

Importing this package is light: torch, matplotlib and scikit-learn are never imported here, and
Pillow / scikit-learn only when a loader needs them.
"""

from genmodels.data.catalog import dataset_names, describe_datasets
from genmodels.data.dataset import ImageDataset, cache_dir
from genmodels.data.load import load_dataset

__all__ = ["ImageDataset", "cache_dir", "dataset_names", "describe_datasets", "load_dataset"]
