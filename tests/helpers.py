"""Shared test helpers: real images at test-friendly sizes, and tiny model configs."""

from __future__ import annotations

import numpy as np
import torch

# One tiny config per registered model (a test fails when a model has none): small enough to
# train a few steps in well under a second.
TINY: dict[str, dict] = {
    "mlp-ae": {"hidden": [32, 16], "latent_dim": 2},
    "conv-ae": {"channels": [8, 16], "blocks": 0, "latent_dim": 4},
    "vq-vae": {"channels": [8, 16], "res_blocks": 1, "res_channels": 4, "code_dim": 4, "codebook_size": 8},
    "mlp-vae": {"hidden": [32], "latent_dim": 4},
    "tutorial-vae": {"hidden": [32]},
    "broken-vae": {"hidden": [32]},
    "conv-vae": {"channels": [8, 16], "blocks": 0, "latent_dim": 4},
    "cvae": {"channels": [8, 16], "blocks": 0, "latent_dim": 4},
    "ddpm": {"channels": [8, 16], "groups": 4, "timesteps": 50, "sampling_steps": 4, "nll_timesteps": 4},
    "cddpm": {"channels": [8, 16], "groups": 4, "timesteps": 50, "sampling_steps": 4, "nll_timesteps": 4},
    "masked-pixelcnn": {"channels": 6, "layers": 1, "first_kernel": 3, "output": "logistic", "mixtures": 2},
    "gated-pixelcnn": {"channels": 6, "layers": 2, "first_kernel": 3, "output": "logistic", "mixtures": 2},
    "conditional-pixelcnn": {"channels": 6, "layers": 2, "first_kernel": 3, "output": "bernoulli"},
    "pixelsnail": {"channels": 6, "layers": 1, "res_blocks": 1, "first_kernel": 3, "output": "logistic", "mixtures": 2},
    "conditional-pixelsnail": {"channels": 6, "layers": 1, "res_blocks": 1, "first_kernel": 3, "output": "bernoulli"},
    "gan-mlp": {"g_hidden": [16, 32], "d_hidden": [32, 16], "latent_dim": 8},
    "keras-gan-1h": {"g_hidden": [16], "d_hidden": [16], "latent_dim": 8},
    "tf-gan": {"g_hidden": [16, 32], "d_hidden": [32, 16], "latent_dim": 8},
    "dcgan": {"g_channels": [16, 8], "d_channels": [8, 16], "latent_dim": 8},
    "wgan-gp": {"g_channels": [16, 8], "d_channels": [8, 16], "latent_dim": 8, "n_critic": 2},
    "sngan": {"g_channels": [16, 8], "d_channels": [8, 16], "latent_dim": 8},
    "cgan": {"g_channels": [16, 8], "d_channels": [8, 16], "latent_dim": 8},
    "pix2pix": {"width": 4, "d_width": 4, "depth": 2},
    "cyclegan": {"width": 4, "d_width": 4, "depth": 2},
    "l1-unet": {"width": 4, "depth": 2},
}
# Translators train on a translation dataset (a source and a target image stacked along the channels).
TRANSLATORS = ("pix2pix", "cyclegan", "l1-unet")
TRANSLATION_DATA = "edges:digits"


def data_of(name: str) -> str:
    """The small dataset a model's tests train on: digits, or their sketches beside them for a translator."""
    return TRANSLATION_DATA if name in TRANSLATORS else "digits"


def stacked(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) images as translation pairs (N, 2C, H, W): each image beside its negative."""
    return torch.cat([images, 255 - images], dim=1)


def digits_images(n: int | None = None, size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """Real handwritten digits (scikit-learn's bundled set) as uint8 (N, 1, size, size) and labels."""
    from genmodels.data import load_dataset

    ds = load_dataset("digits", "train", image_size=size if size != 28 else None)
    imgs, labels = ds.images, ds.labels
    if n is not None:
        imgs, labels = imgs[:n], labels[:n]
    return torch.from_numpy(np.ascontiguousarray(imgs)), torch.from_numpy(labels)


def nn_distance(samples: torch.Tensor, data: torch.Tensor) -> float:
    """Mean distance from each sample to its nearest data image (both flattened, in [0, 1])."""
    d = torch.cdist(samples.flatten(1).float(), data.flatten(1).float())
    return float(d.min(1).values.mean())


# ----------------------------------------------------------------- the CLI as a forked process

# What the fork server imports once: a forked ``genmodels`` process then starts in a fraction of a second
# instead of the 2-3 s an interpreter takes to import torch.
FORK_PRELOAD = ["torch", "numpy", "yaml", "safetensors.torch", "sklearn.datasets", "genmodels.cli", "genmodels.api"]


def _forked_main(args: list[str], env: dict[str, str], cwd: str | None, out: str, err: str) -> None:
    """A forked child: the CLI's ``main`` with this environment, directory and output files, then exit."""
    import os
    import sys
    import traceback

    os.environ.clear()
    os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    for fd, path in ((1, out), (2, err)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(f, fd)
        os.close(f)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115  (the process's own streams, left open)
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    torch.set_num_threads(1)
    from genmodels.cli import main

    try:
        code = main(args)
    except SystemExit as e:  # argparse's usage errors
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    except BaseException:  # what an uncaught exception does to a process: a traceback and exit status 1
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def forked_cli(*args: str, timeout: float = 180, cwd=None):
    """``genmodels ARGS`` run to the end as a forked process (``ForkedCLI``), killed on timeout; returns a
    ``subprocess.CompletedProcess``."""
    import subprocess

    p = ForkedCLI(*args, cwd=cwd)
    try:
        out, err = p.communicate(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


class ForkedCLI:
    """``genmodels ARGS`` started as a new process forked from the preloaded fork server, with the part of
    ``subprocess.Popen`` the tests use (``poll``, ``wait``, ``kill``, ``communicate``, ``returncode``)."""

    def __init__(self, *args: str, cwd=None) -> None:
        import multiprocessing
        import os
        import tempfile

        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(FORK_PRELOAD)
        self._tmp = tempfile.TemporaryDirectory()
        self._out, self._err = os.path.join(self._tmp.name, "out"), os.path.join(self._tmp.name, "err")
        env = dict(os.environ)
        self._p = ctx.Process(target=_forked_main, args=(list(args), env, cwd and str(cwd), self._out, self._err))
        self._p.start()
        self.pid, self.args = self._p.pid, ["genmodels", *args]

    @property
    def returncode(self):
        return self._p.exitcode

    def poll(self):
        return self._p.exitcode

    def kill(self) -> None:
        self._p.kill()

    def wait(self, timeout=None):
        import subprocess

        self._p.join(timeout)
        if self._p.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self._p.exitcode

    def communicate(self, timeout=None) -> tuple[str, str]:
        self.wait(timeout)
        with open(self._out, errors="replace") as fo, open(self._err, errors="replace") as fe:
            return fo.read(), fe.read()


def lively(gan, factor: float = 2.0):
    """A GAN whose untrained generator makes varied images: PyTorch's default initialisation with the
    weights scaled by ``factor`` (the DCGAN init's N(0, 0.02) makes nearly the same grey image for every
    code, which no inversion test could tell from a constant). Returns the GAN, in eval mode."""
    import torch

    with torch.no_grad():
        for m in gan.generator.modules():
            if m is not gan.generator and hasattr(m, "reset_parameters"):
                m.reset_parameters()
            w = getattr(m, "weight", None)
            if w is not None and w.dim() > 1:
                w.mul_(factor)
    return gan.eval()
