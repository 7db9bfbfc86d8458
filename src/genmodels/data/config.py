"""The ``data`` section of a run's config: which dataset, and how its images are prepared."""

from __future__ import annotations

from dataclasses import dataclass

from genmodels.errors import ConfigError

MAX_IMAGE_SIZE = 512  # pixels per side: a 3x512x512 uint8 image is 0.8 MB; 100,000 px would be 30 GB each


@dataclass
class DataConfig:
    dataset: str = "digits"  # a catalog name, folder:PATH or npz:PATH
    image_size: int | None = None  # resize to image_size x image_size
    channels: int | None = None  # convert to 1 or 3 channels
    limit: int | None = None  # use only the first N training images
    data_dir: str | None = None  # where to look for (and download) dataset files first

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"data.limit must be >= 1, got {self.limit}")
        if self.image_size is not None and not 2 <= self.image_size <= MAX_IMAGE_SIZE:
            raise ConfigError(f"data.image_size must be in 2..{MAX_IMAGE_SIZE}, got {self.image_size}")
        if self.channels is not None and self.channels not in (1, 3):
            raise ConfigError(f"data.channels must be 1 or 3, got {self.channels}")
