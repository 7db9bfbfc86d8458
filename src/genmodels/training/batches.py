"""The order of training batches: a pure function of (seed, batch counter), so a resumed or rescaled run
sees exactly the batches an uninterrupted one would."""

from __future__ import annotations

import numpy as np
import torch

from genmodels.errors import GenmodelsError
from genmodels.seeding import derive_seed

MAX_PER_PROCESS = 4096  # images per process and step: a bigger batch of even small images can exhaust 24 GB


class BatchStream:
    """Deterministic batches: global batch k holds positions [kB, (k+1)B) of the endless concatenation
    of per-epoch permutations; a process of a distributed run takes its contiguous share of it.

    The whole state is the batch counter, so resuming needs nothing else.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if batch_size // max(world, 1) > MAX_PER_PROCESS:
            raise GenmodelsError(
                f"train.batch_size={batch_size} gives each of {world} process(es) {batch_size // world} images, more "
                f"than {MAX_PER_PROCESS}; lower --batch-size or train with more processes (torchrun)"
            )
        if batch_size % world:
            raise GenmodelsError(
                f"train.batch_size={batch_size} does not split over {world} processes; make it a multiple"
            )
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, 7919))
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = torch.randperm(self.n, generator=g)
        return self._perms[epoch]

    def indices(self, k: int) -> torch.Tensor:
        """Indices of this process's share of global batch ``k``."""
        per = self.batch_size // self.world
        start = k * self.batch_size + self.rank * per
        if start // self.n == (start + per - 1) // self.n:  # within one epoch: a slice of its permutation
            offset = start % self.n
            return self._perm(start // self.n)[offset : offset + per]
        pos = torch.arange(start, start + per)  # across an epoch boundary: position by position
        epochs, offsets = pos // self.n, pos % self.n
        return torch.stack([self._perm(int(e))[int(o)] for e, o in zip(epochs, offsets, strict=True)])

    def epoch(self, k: int) -> float:
        return k * self.batch_size / self.n


def images_tensor(images: np.ndarray) -> torch.Tensor:
    """A uint8 (N, C, H, W) numpy array as a torch tensor without copying."""
    return torch.from_numpy(np.ascontiguousarray(images))
