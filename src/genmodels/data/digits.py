"""scikit-learn's 8x8 handwritten digits, brought to MNIST's geometry: the offline default dataset.

``sklearn.datasets.load_digits`` ships 1,797 real digits as 8x8 images with values 0..16. We scale the
values to 0..255 (uint8, rounded), enlarge each digit to 20x20 with Pillow's bicubic filter (clipped to
0..255) and paste it in the centre of a black 28x28 frame, because MNIST digits are size-normalised to
20x20 inside a 28x28 box. The result has shape (1, 28, 28), a 4-pixel black border, and classes "0".."9".

Split: a fixed permutation of all 1,797 digits, ``numpy.random.default_rng(0).permutation(1797)``; its
first 1,500 are "train" and the remaining 297 "test", in permutation order (so ``limit`` keeps a
class-mixed prefix). ``image_size=8`` returns the original 8x8 pixels (scaled to 0..255) instead of a
shrunken copy of the 28x28 frame.
"""

from __future__ import annotations

import numpy as np

from genmodels.data.dataset import ImageDataset

NUM_TRAIN = 1500
DIGIT_SIZE = 20  # MNIST's size-normalised digit box
FRAME_SIZE = 28
SEED = 0


def load_digits_raw(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 digits of ``split`` scaled to uint8 0..255, shape (N, 8, 8), and their int64 labels."""
    from sklearn.datasets import load_digits  # heavy import, only when this dataset is used

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(images))
    keep = order[:NUM_TRAIN] if split == "train" else order[NUM_TRAIN:]
    return images[keep], labels[keep]


def frame(images: np.ndarray) -> np.ndarray:
    """Enlarge (N, 8, 8) uint8 digits to 20x20 (bicubic, clipped) centred in black 28x28 frames."""
    from PIL import Image

    out = np.zeros((len(images), FRAME_SIZE, FRAME_SIZE), dtype=np.uint8)
    lo = (FRAME_SIZE - DIGIT_SIZE) // 2
    for i, img in enumerate(images):
        big = Image.fromarray(img).resize((DIGIT_SIZE, DIGIT_SIZE), Image.Resampling.BICUBIC)
        out[i, lo : lo + DIGIT_SIZE, lo : lo + DIGIT_SIZE] = np.asarray(big)
    return out


def load_digits_dataset(split: str, *, image_size: int | None, limit: int | None) -> ImageDataset:
    """One split of the digits dataset, (N, 1, 28, 28) uint8, or (N, 1, 8, 8) when ``image_size == 8``."""
    images, labels = load_digits_raw(split)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    if image_size != 8:
        images = frame(images)
    return ImageDataset(
        name="digits",
        split=split,
        images=images[:, None],
        labels=labels,
        classes=[str(i) for i in range(10)],
        source="sklearn.datasets.load_digits",
    )
