"""Optional: FID's original feature space, Inception-v3's 2048-d pool3 layer, for users who have its weights.

The shipped per-dataset feature networks are the default; this is for comparing with published numbers.
It needs the ``pytorch-fid`` package (which needs torchvision) and the weights file pytorch-fid uses,
``pt_inception-2015-12-05-6726825d.pth`` (the TF FID Inception ported to PyTorch), given as a path, in
``$GENMODELS_INCEPTION_WEIGHTS``, or in torch's hub cache. Nothing is downloaded: a missing file is an
error. Grey images are repeated to three channels and resized to 299x299 bilinearly (pytorch-fid's own
resizing). These features have no dataset classes, so class coverage is skipped with them.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from genmodels.errors import GenmodelsError

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"


def default_weights_path() -> Path:
    """Where torch's hub cache keeps the file when pytorch-fid has downloaded it once."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


class InceptionFeatures(nn.Module):
    """pytorch-fid's InceptionV3 up to the final average pool: (N, C, H, W) in [0, 1] -> (N, 2048).

    Offers the FeatureNet methods the evaluation uses (``features``, ``features_and_classes``), with
    no class predictions.
    """

    def __init__(self, inception: nn.Module, sha256: str, path: Path) -> None:
        super().__init__()
        self.inception = inception
        self.dataset = "inception"
        self.sha256 = sha256
        self.card: dict[str, Any] = {"weights": str(path), "test_accuracy": None, "train_data": "ImageNet"}
        self.config = SimpleNamespace(image_shape=None, num_classes=0)

    feature_dim = 2048

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def features(self, x: torch.Tensor, batch: int = 100) -> torch.Tensor:
        """Pool3 features (N, 2048) float32 on the CPU; x uint8 0..255 or float in [0, 1], 1 or 3 channels."""
        self.eval()
        out = []
        for i in range(0, len(x), batch):
            xb = x[i : i + batch].to(self.device)
            xb = xb.float() / 255.0 if xb.dtype == torch.uint8 else xb.float()
            if xb.shape[1] == 1:
                xb = xb.expand(-1, 3, -1, -1)
            out.append(self.inception(xb)[0].flatten(1).cpu())
        return torch.cat(out) if out else torch.empty(0, self.feature_dim)

    def features_and_classes(self, x: torch.Tensor, batch: int = 100) -> tuple[torch.Tensor, None]:
        """Features and no classes (Inception's ImageNet labels are not the dataset's classes)."""
        return self.features(x, batch), None


def load_inception(weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> InceptionFeatures:
    """FID's Inception-v3 from a local weights file.

    Args:
        weights: the .pth file; default ``$GENMODELS_INCEPTION_WEIGHTS``, then torch's hub cache.

    Raises:
        GenmodelsError: the file or pytorch-fid is missing.
    """
    from genmodels.device import pick_device
    from genmodels.eval.features import file_sha256

    path = Path(weights or os.environ.get("GENMODELS_INCEPTION_WEIGHTS") or default_weights_path()).expanduser()
    if not path.is_file():
        raise GenmodelsError(
            f"Inception weights not found at {path}; put pytorch-fid's {WEIGHTS_FILE} there or pass "
            f"--inception-weights PATH (genmodels never downloads them), or use the shipped feature networks"
        )
    try:
        import pytorch_fid.inception as pfi
    except ImportError:
        raise GenmodelsError(
            "Inception features need the pytorch-fid package: pip install pytorch-fid (and torchvision)"
        ) from None
    original = pfi.load_state_dict_from_url
    # pytorch-fid fetches its weights by URL; serve them from the local file instead (tensors only).
    pfi.load_state_dict_from_url = lambda *a, **k: torch.load(path, map_location="cpu", weights_only=True)
    try:
        model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    finally:
        pfi.load_state_dict_from_url = original
    return InceptionFeatures(model, file_sha256(path), path).to(pick_device(str(device))).eval()


__all__ = ["InceptionFeatures", "default_weights_path", "load_inception"]
