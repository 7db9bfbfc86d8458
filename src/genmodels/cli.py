"""The ``genmodels`` command line: parse arguments, call the public API, print.

Every user error is one line on stderr starting with ``error:`` and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from genmodels.errors import ConfigError, GenmodelsError

EXAMPLES = {
    "train": """examples:
  genmodels train vae --dataset fashion-mnist --max-time 10 --out runs/vae-fm
  genmodels train mlp-ae --dataset digits --steps 2000 --set model.latent_dim=2
  genmodels train conv-vae --dataset folder:~/faces --set data.image_size=32 --set data.channels=3
  genmodels train --resume runs/vae-fm --steps 20000""",
    "sample": """examples:
  genmodels sample runs/vae-fm -n 64 -o samples.png
  genmodels sample runs/vae-fm -n 10000 -o samples.npz --seed 1   # uint8, N x C x H x W under 'images'
  genmodels sample runs/cvae-fm -n 40 -o bags.png --class 8""",
    "reconstruct": "example:\n  genmodels reconstruct runs/vae-fm -o recon.png -n 30",
    "interpolate": "example:\n  genmodels interpolate runs/vae-fm -o interp.png --pairs 6 --steps 10",
    "latent": "example:\n  genmodels latent runs/ae2d -o latent.png   # needs latent_dim=2",
    "evaluate": """examples:
  genmodels evaluate runs/vae-fm                      # about a minute: FID, KID, precision/recall, a quick NLL, ...
  genmodels evaluate runs/vae-fm --full-likelihood    # plus the tight IWAE bound (k=1000 on 1,000 images: minutes)
  genmodels evaluate runs/pixelcnn-fm -n 1000         # exactly 1,000 samples, however long they take to draw
  genmodels sample runs/vae-fm -n 10000 -o s.npz && genmodels evaluate --samples s.npz --dataset fashion-mnist""",
    "leaderboard": """examples:
  genmodels leaderboard runs/                  # every evaluated run under runs/, per dataset, sorted by FID
  genmodels leaderboard runs/ --out board.md   # also writes board.json and board.png""",
    "inpaint": """examples:
  genmodels inpaint runs/diffusion-fm --input test --mask center -o centre.png      # 8 test images, 4 fills each
  genmodels inpaint runs/vae-fm --input shirt.png --mask holes.png -o shirt.png     # white in holes.png = fill
  genmodels inpaint runs/pixelcnn-fm --input test --mask bottom -n 16 -o fills.npz  # uint8 (N * S) x C x H x W
  genmodels inpaint runs/diffusion-fm --input test --mask left --set resample=10 -o left.png""",
    "edit": """examples:
  genmodels edit runs/diffusion-fm --input test --strength 0.5 -o edits.png          # SDEdit, 4 edits each
  genmodels edit runs/cddpm-fm --input test --to-class 3 --strength 0.6 -o dresses.png  # towards class 3
  genmodels edit runs/vae-fm --input shirt.png --from-class 6 --to-class 3 -o dress.png  # latent arithmetic
  genmodels edit runs/diffusion-emoji --input face.png --strength 0.3 -n 1 --samples 8 -o faces.npz""",
    "translate": """examples:
  genmodels translate runs/pix2pix-emoji --input test -n 10 -o google-to-twitter.png   # input, translation, target
  genmodels translate runs/cyclegan-emoji --input test --direction backward -o back.png
  genmodels translate runs/pix2pix-colorize --input grey.png -o colour.png""",
    "doctor": """examples:
  genmodels doctor               # what this machine offers and which fast paths were chosen, and why
  genmodels doctor --remeasure   # time the fast paths again (on a quiet machine) and cache the decision
  genmodels doctor --json""",
    "complete": """examples:
  genmodels complete runs/pixelcnn-fm --input test --rows 14 -o halves.png      # 8 test images, 4 completions each
  genmodels complete runs/pixelcnn-fm --input shirt.png --rows 10 -o shirt-completed.png
  genmodels complete runs/pixelcnn-fm --input images.npz --rows 7 --samples 6 -o completions.png
  genmodels complete runs/pixelcnn-fm --input test --rows 14 -o completions.npz   # uint8 (N * S) x C x H x W""",
    "datasets": "example:\n  genmodels datasets --data-dir ~/data",
    "models": "example:\n  genmodels models",
    "quickstart": "example:\n  genmodels quickstart --out runs/quickstart",
    "serve": """examples:
  genmodels serve runs/                 # then open http://127.0.0.1:8000/
  genmodels serve runs/ --port 0        # any free port (the address is printed)""",
}


MAX_GRID_IMAGES = 10_000  # images in one PNG grid (a 100 x 100 grid of 28 x 28 images is 2,800 x 2,800 pixels)


class _Parser(argparse.ArgumentParser):
    """argparse with the house error format: one line naming the problem and where the fix is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


INPUT_HELP = (
    "a PNG/JPEG image (resized to the model's size), an .npz with 'images' (and optional 'labels'), "
    "or 'test' / 'train' for -n seeded random images of the run's dataset split"
)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="genmodels",
        description="Train, sample and evaluate classical deep generative image models.",
        epilog="Run 'genmodels COMMAND --help' for each command's options and an example.",
    )
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def cmd(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=EXAMPLES[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    t = cmd("train", "train a model (or a family's recommended model) into a run directory")
    t.add_argument("model", nargs="?", help="model or family name (see 'genmodels models'); omit with --resume")
    t.add_argument("--dataset", help="digits (default), mnist, fashion-mnist, kmnist, cifar10, folder:PATH, npz:PATH")
    t.add_argument(
        "--prior-of",
        metavar="VQ_RUN",
        help="train an autoregressive prior (pixelsnail, a PixelCNN) on the codes of this finished vq-vae run; "
        "sampling the prior's run decodes through that VQ-VAE",
    )
    t.add_argument("--config", help="YAML file with model / train / data sections")
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. train.lr=1e-3 or model.latent_dim=2 (repeatable)",
    )
    lim = t.add_mutually_exclusive_group()
    lim.add_argument("--steps", type=int, help="number of optimiser steps")
    lim.add_argument("--max-time", type=float, metavar="MINUTES", help="train for this many wall-clock minutes")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--out", help="run directory (default runs/<model>-<dataset>-<time>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped or killed run")
    t.add_argument("--data-dir", help="where dataset files are looked for first (and downloaded to)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = cmd("sample", "draw samples from a trained run into a PNG grid or an .npz of uint8 images")
    s.add_argument("run")
    s.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
    s.add_argument("-o", "--output", required=True, help="FILE.png (a grid) or FILE.npz (key 'images', N x C x H x W)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--class", dest="klass", type=int, help="conditional models: sample only this class")
    s.add_argument("--weights", choices=["ema", "raw"], default="ema")
    s.add_argument("--device", default="auto")
    _sampling_flags(s)

    r = cmd("reconstruct", "show test images above their reconstructions")
    r.add_argument("run")
    r.add_argument("-o", "--output", required=True)
    r.add_argument("-n", type=int, default=30)
    r.add_argument("--split", default="test")
    r.add_argument("--seed", type=int, default=0, help="which test images (a seeded random choice)")

    i = cmd("interpolate", "decode along paths between pairs of images (or latent draws)")
    i.add_argument("run")
    i.add_argument("-o", "--output", required=True)
    i.add_argument("--pairs", type=int, default=6)
    i.add_argument("--steps", type=int, default=10)
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--prior", action="store_true", help="interpolate between prior draws (slerp), not test images")

    la = cmd("latent", "2-D latent models: the test set's codes coloured by class, and the decoded manifold")
    la.add_argument("run")
    la.add_argument("-o", "--output", required=True, help="scatter PNG; the manifold goes beside it (*-manifold.png)")
    la.add_argument("-n", type=int, default=5000, help="test images to scatter")

    e = cmd(
        "evaluate",
        "score a run (or a samples file) against the test split: sample quality on the dataset's feature "
        "network, likelihoods, classifier tests; writes eval.json / eval.md",
    )
    e.add_argument("run", nargs="?", help="run directory (or use --samples FILE.npz --dataset NAME)")
    e.add_argument(
        "-n",
        type=int,
        help="samples drawn and test images compared (default: up to 10000, fewer when drawing them would take "
        "over 30 s here; the report says how many and why)",
    )
    e.add_argument(
        "--k", type=int, help="importance samples of a VAE's IWAE bound (default 20; 1000 with --full-likelihood)"
    )
    e.add_argument(
        "--nll-n",
        type=int,
        help="test images for the likelihood (default: up to 500 in a 10 s budget; 1000 with --full-likelihood)",
    )
    e.add_argument(
        "--full-likelihood",
        action="store_true",
        help="the tight likelihood: IWAE k=1000 on 1000 test images, no time budget (minutes)",
    )
    e.add_argument(
        "--cas-samples", type=int, help="samples the classifier tests of conditional models train on (default 2000)"
    )
    e.add_argument("--no-progress", action="store_true", help="no progress bars or lines on stderr")
    e.add_argument("--samples", metavar="FILE.npz", help="score these samples (key 'images', uint8 N x C x H x W)")
    e.add_argument("--dataset", help="with --samples: the dataset whose test split is the reference")
    e.add_argument("--out", help="with --samples: folder for eval.json / eval.md (default: the file's folder)")
    e.add_argument("--name", help="with --samples: the model name shown in the report (default: the file name)")
    e.add_argument("--data-dir", help="with --samples: where dataset files are looked for")
    e.add_argument("--no-cas", action="store_true", help="skip the classifier tests of class-conditional models")
    e.add_argument(
        "--features",
        choices=["auto", "inception"],
        default="auto",
        help="feature space: the dataset's shipped feature net (default) or Inception-v3 (needs pytorch-fid)",
    )
    e.add_argument("--inception-weights", metavar="PATH", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth")
    e.add_argument("--weights", choices=["ema", "raw"], default="ema")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="auto")
    _sampling_flags(e)

    lb = cmd("leaderboard", "table of every evaluated run under a folder, per dataset, sorted by FID, and a PNG")
    lb.add_argument("runs_dir", metavar="RUNS_DIR")
    lb.add_argument("--out", help="base path of the .md / .json / .png written (default RUNS_DIR/leaderboard)")

    co = cmd(
        "complete",
        "autoregressive models: keep the top K rows of images and sample the rest; each output row shows "
        "the kept rows, the completions and the original",
    )
    co.add_argument("run")
    co.add_argument("--input", required=True, metavar="FILE", help=INPUT_HELP)
    co.add_argument("--rows", type=int, required=True, metavar="K", help="rows to keep from the top")
    co.add_argument("-o", "--output", required=True, help="FILE.png (a sheet) or FILE.npz (the completions, uint8)")
    co.add_argument("-n", type=int, default=8, help="images to take from an .npz or dataset split (default 8)")
    co.add_argument("--samples", type=int, default=4, help="completions per image (default 4)")
    co.add_argument("--class", dest="klass", type=int, help="conditional models: complete as this class")
    co.add_argument("--seed", type=int, default=0)
    co.add_argument("--weights", choices=["ema", "raw"], default="ema")
    co.add_argument("--device", default="auto")
    co.add_argument("--temperature", type=float, help="sampling temperature (default 1: the model itself)")
    co.add_argument("--sampler", help="fast (default) | naive")

    ed = cmd(
        "edit",
        "edit images: diffusion by SDEdit (noise to --strength, denoise; towards --to-class with a conditional "
        "model), vae / autoencoder by latent arithmetic (the mean code of --to-class minus that of the image's "
        "class); each output row shows the input, then its edits",
    )
    ed.add_argument("run")
    ed.add_argument("--input", required=True, metavar="FILE", help=INPUT_HELP)
    ed.add_argument("-o", "--output", required=True, help="FILE.png (a sheet) or FILE.npz (the edits, uint8)")
    ed.add_argument(
        "--strength",
        type=float,
        help="diffusion: how far to noise, in (0, 1]: small stays faithful, 1 is a new sample (default 0.5)",
    )
    ed.add_argument("--to-class", type=int, metavar="K", help="the class to edit towards")
    ed.add_argument(
        "--from-class",
        type=int,
        metavar="K",
        help="vae / autoencoder: the inputs' class (default: their labels, from a dataset split or .npz)",
    )
    ed.add_argument("--scale", type=float, default=1.0, help="vae / autoencoder: multiple of the class direction")
    ed.add_argument("-n", type=int, default=8, help="images to take from an .npz or dataset split (default 8)")
    ed.add_argument("--samples", type=int, default=4, help="diffusion: edits per image (default 4)")
    ed.add_argument("--seed", type=int, default=0)
    ed.add_argument("--weights", choices=["ema", "raw"], default="ema")
    ed.add_argument("--device", default="auto")
    ed.add_argument("--sampler", help="diffusion: ddpm | ddim | dpm-solver (default: the model's)")
    ed.add_argument("--sampling-steps", type=int, help="diffusion: the sampler's steps for strength 1")
    ed.add_argument("--guidance", type=float, help="conditional diffusion: classifier-free guidance scale")

    ip = cmd(
        "inpaint",
        "fill the hidden pixels of images: diffusion by RePaint, vae / autoencoder by fitting the code to the "
        "known pixels, pixelcnn / pixelsnail by sampling the bottom rows; each output row shows the known "
        "pixels, the fills and the original",
    )
    ip.add_argument("run")
    ip.add_argument("--input", required=True, metavar="FILE", help=INPUT_HELP)
    ip.add_argument(
        "--mask",
        required=True,
        metavar="MASK",
        help="the pixels to fill: center | left | right | top | bottom (that half) | random (half the pixels, "
        "seeded), or a black-and-white PNG of the model's size, white = fill",
    )
    ip.add_argument("-o", "--output", required=True, help="FILE.png (a sheet) or FILE.npz (the fills, uint8)")
    ip.add_argument("-n", type=int, default=8, help="images to take from an .npz or dataset split (default 8)")
    ip.add_argument("--samples", type=int, default=4, help="fills per image (default 4)")
    ip.add_argument("--class", dest="klass", type=int, help="conditional models: inpaint as this class")
    ip.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an inpainting option (repeatable): diffusion steps, jump_length, resample, guidance; vae / "
        "autoencoder steps, lr, pixel_std, init_noise; pixelcnn temperature, sampler",
    )
    ip.add_argument("--seed", type=int, default=0)
    ip.add_argument("--weights", choices=["ema", "raw"], default="ema")
    ip.add_argument("--device", default="auto")

    tr = cmd(
        "translate",
        "translate images with a pix2pix, cyclegan or l1-unet run (source style to target style; cyclegan also "
        "backward); a sheet's rows are the inputs, their translations and, for a dataset split, the targets",
    )
    tr.add_argument("run")
    tr.add_argument(
        "--input", required=True, metavar="FILE", help=INPUT_HELP.replace("model's size", "source side's size")
    )
    tr.add_argument("-o", "--output", required=True, help="FILE.png (a sheet) or FILE.npz (the translations, uint8)")
    tr.add_argument("-n", type=int, default=8, help="images to take from an .npz or dataset split (default 8)")
    tr.add_argument(
        "--direction",
        choices=["forward", "backward"],
        default="forward",
        help="forward: source to target (default); backward: target to source (cyclegan)",
    )
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--weights", choices=["ema", "raw"], default="ema")
    tr.add_argument("--device", default="auto")

    dr = cmd("doctor", "what this machine offers (CPU features, bf16, CUDA) and which fast paths are used, and why")
    dr.add_argument("--remeasure", action="store_true", help="time the fast paths again and replace the cache")
    dr.add_argument("--json", action="store_true", help="print the report as JSON")

    d = cmd("datasets", "list datasets: shape, classes, and where each was found or why not")
    d.add_argument("--data-dir")
    d.add_argument("--json", action="store_true")

    m = cmd("models", "list every registered model with its family and a one-line description")
    m.add_argument("--json", action="store_true")

    q = cmd(
        "quickstart",
        "train a small VAE on the bundled digits (under 2 minutes on 2 cores) and write its grids",
    )
    q.add_argument("--out", default="runs/quickstart")
    q.add_argument("--max-time", type=float, default=1.5, metavar="MINUTES")

    sv = cmd(
        "serve",
        "a local web app: browse runs (loss curves, sample grids, metrics, leaderboard) and play with their "
        "models (generate, interpolate, explore 2-D latents, complete images)",
    )
    sv.add_argument("runs_dir", metavar="RUNS_DIR", help="the folder holding your run directories")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    sv.add_argument("--device", default="auto", help="where models run: auto (CUDA when present; default), cpu, cuda")
    return p


def _sampling_flags(p: argparse.ArgumentParser) -> None:
    """Family-specific sampling options; a model that does not take one says so."""
    g = p.add_argument_group("sampling options (where the model takes them)")
    g.add_argument("--sampler", help="diffusion: ddpm | ddim | dpm-solver; pixelcnn: fast | naive")
    g.add_argument("--sampling-steps", type=int, help="diffusion: number of sampler steps")
    g.add_argument("--guidance", type=float, help="conditional diffusion: classifier-free guidance scale")
    g.add_argument("--truncation", type=float, help="GANs: truncate latents to this many standard deviations")
    g.add_argument("--temperature", type=float, help="autoregressive models: softmax temperature")


def sample_options(a: argparse.Namespace) -> dict[str, Any]:
    """The sampling options given on the command line, under the names models take them."""
    pairs = {
        "sampler": a.sampler,
        "steps": a.sampling_steps,
        "guidance": a.guidance,
        "truncation": a.truncation,
        "temperature": a.temperature,
    }
    return {k: v for k, v in pairs.items() if v is not None}


def _version() -> str:
    from genmodels import __version__

    return f"genmodels {__version__}"


def _check_output(output: str, *suffixes: str) -> str:
    """The lower-case suffix of ``output``, which must be one of ``suffixes``."""
    suffix = Path(output).suffix.lower()
    if suffix not in suffixes:
        raise ConfigError(f"output {output} must end in {' or '.join(suffixes)}")
    return suffix


def _save_images(images: Any, output: str, labels: Any = None) -> None:
    """Write images as a PNG grid or an .npz of uint8 N x C x H x W under 'images' (see ``_write_npz``)."""
    from genmodels.viz import save_grid

    suffix = _check_output(output, ".png", ".npz")
    try:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".png":
            save_grid(images, output)
        else:
            _write_npz(output, [images], len(images), labels)
    except OSError as e:
        raise GenmodelsError(f"cannot write {output}: {e.strerror or e}; choose another -o path") from None


def _write_npz(output: str, batches: Any, n: int, labels: Any = None, shape: Any = None) -> None:
    """Stream image batches ((b, C, H, W) in [0, 1]) into an .npz holding uint8 'images' (n, C, H, W), and
    'labels' (n,) when given, as ``np.load`` reads it; written to a temporary name and renamed into place,
    so memory holds one batch, not all n images."""
    import zipfile

    import numpy as np

    from genmodels.viz import to_uint8

    out = Path(output)
    tmp = out.with_name(f".{out.name}.tmp.npz")
    wrote = 0
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            with zf.open("images.npy", "w", force_zip64=True) as f:
                header_written = False
                for b in batches:
                    arr = np.ascontiguousarray(to_uint8(b))
                    if not header_written:
                        header = {"descr": "|u1", "fortran_order": False, "shape": (n, *arr.shape[1:])}
                        np.lib.format.write_array_header_2_0(f, header)
                        header_written = True
                    f.write(arr.tobytes())
                    wrote += len(arr)
                if not header_written:  # n = 0
                    np.lib.format.write_array_header_2_0(
                        f, {"descr": "|u1", "fortran_order": False, "shape": (0, *(shape or ()))}
                    )
            if labels is not None:
                with zf.open("labels.npy", "w") as f:
                    np.lib.format.write_array(f, np.asarray(labels, dtype=np.int64))
        if wrote != n:
            raise RuntimeError(f"wrote {wrote} images, expected {n}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def cmd_train(a: argparse.Namespace) -> int:
    from genmodels.api import train
    from genmodels.config import parse_set

    if a.data_dir:
        a.set = [*a.set, f"data.data_dir={a.data_dir}"]
    dataset = a.dataset
    if a.prior_of is not None:
        if a.dataset is not None:
            raise ConfigError("--prior-of trains on the vq-vae run's codes; drop --dataset")
        dataset = "codes:" + a.prior_of
    run = train(
        a.model,
        dataset,
        steps=a.steps,
        max_time=a.max_time,
        batch_size=a.batch_size,
        seed=a.seed,
        out=a.out,
        config=a.config,
        overrides=parse_set(a.set),
        resume=a.resume,
        progress=not a.no_progress,
    )
    res = run.extra["result"]
    last = {k: round(v, 4) for k, v in res.metrics.items() if k not in ("step", "time", "epoch")}
    print(f"trained {run.model_name} for {res.step} steps in {res.elapsed:.1f} s ({res.stopped_by}); run: {run.path}")
    if last:
        print("last metrics: " + ", ".join(f"{k}={v}" for k, v in last.items()))
    plan = run.meta.get("training_step")
    if isinstance(plan, dict):
        print(f"training step: {plan.get('plan')} ({plan.get('why')})")
    return 130 if res.stopped_by == "interrupt" else 0


def _class_labels(model: Any, name: str, klass: int | None, n: int) -> Any:
    """The labels to sample n images with: all ``klass`` (checked), or every class in turn."""
    import torch

    from genmodels.models.base import default_labels, is_conditional, num_classes

    if klass is None:
        return default_labels(model, n)
    if not is_conditional(model):
        raise ConfigError(f"--class needs a class-conditional model; {name} is not one")
    k = num_classes(model)
    if not 0 <= klass < k:
        raise ConfigError(f"--class must be in 0..{k - 1}, got {klass}")
    return torch.full((n,), klass, dtype=torch.long)


def _progress(total: int, what: str) -> Any:
    """A progress bar on a terminal, else a plain line on stderr at most every 10 s; call it with the count done."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=what, unit="img", disable=None, leave=False, mininterval=1.0)
    state = {"last": time.monotonic(), "t0": time.monotonic(), "done": 0}

    def update(done: int) -> None:
        if not bar.disable:
            bar.update(done - state["done"])
        elif time.monotonic() - state["last"] > 10.0 and done < total:
            state["last"] = time.monotonic()
            print(f"{what}: {done:,}/{total:,} ({time.monotonic() - state['t0']:.0f} s)", file=sys.stderr, flush=True)
        state["done"] = done
        if done >= total:
            bar.close()

    return update


def cmd_sample(a: argparse.Namespace) -> int:
    import torch

    from genmodels.runs import MAX_SAMPLES, load_run

    if not 1 <= a.n <= MAX_SAMPLES:
        raise ConfigError(f"-n must be in 1..{MAX_SAMPLES:,}, got {a.n:,}")
    suffix = _check_output(a.output, ".png", ".npz")
    if suffix == ".png" and a.n > MAX_GRID_IMAGES:
        raise ConfigError(f"a PNG grid holds at most {MAX_GRID_IMAGES:,} images, got -n {a.n:,}; write an .npz instead")
    run = load_run(a.run, weights=a.weights, device=a.device)
    labels = _class_labels(run.model, run.model_name, a.klass, a.n)
    t0 = time.perf_counter()
    progress = _progress(a.n, "sampling")
    done = 0

    def batches() -> Any:
        nonlocal done
        for b in run.sample_batches(a.n, seed=a.seed, labels=labels, **sample_options(a)):
            done += len(b)
            progress(done)
            yield b

    if suffix == ".png":
        _save_images(torch.cat(list(batches())), a.output)
    else:
        try:
            Path(a.output).parent.mkdir(parents=True, exist_ok=True)
            _write_npz(a.output, batches(), a.n, labels, run.model.config.image_shape)
        except OSError as e:
            raise GenmodelsError(f"cannot write {a.output}: {e.strerror or e}; choose another -o path") from None
    secs = time.perf_counter() - t0
    print(
        f"wrote {a.n} samples of {run.model_name} (step {run.step}, {run.weights} weights) to {a.output} "
        f"in {secs:.2f} s ({1000 * secs / a.n:.1f} s per 1,000)"
    )
    return 0


def _test_images(run: Any, split: str, n: int, seed: int) -> tuple[Any, Any, Any]:
    import numpy as np
    import torch

    if split not in ("train", "test"):
        raise ConfigError(f"--split must be train or test, got {split!r}")
    ds = run.load_data(split)
    idx = np.random.default_rng(seed).choice(len(ds), size=min(n, len(ds)), replace=False)
    x = torch.from_numpy(ds.images[idx]).float().div_(255.0)
    y = torch.from_numpy(ds.labels[idx]) if ds.labels is not None else None
    return ds, x, y


def cmd_reconstruct(a: argparse.Namespace) -> int:
    from genmodels.runs import load_run
    from genmodels.viz import reconstruction_sheet

    if not 1 <= a.n <= 1000:
        raise ConfigError(f"-n must be in 1..1000, got {a.n}")
    _check_output(a.output, ".png")
    run = load_run(a.run)
    _, x, y = _test_images(run, a.split, a.n, a.seed)
    rec = reconstruction_sheet(run.model, x, y, a.output)
    err = float((rec - x).abs().mean())
    print(f"wrote {len(x)} {a.split} images and their reconstructions to {a.output} (mean abs error {err:.4f})")
    return 0


def cmd_interpolate(a: argparse.Namespace) -> int:
    import torch

    from genmodels.models.base import Encodable
    from genmodels.runs import load_run
    from genmodels.viz import interpolation_sheet

    if not 1 <= a.pairs <= 64:
        raise ConfigError(f"--pairs must be in 1..64, got {a.pairs}")
    if not 2 <= a.steps <= 100:
        raise ConfigError(f"--steps must be in 2..100, got {a.steps}")
    _check_output(a.output, ".png")
    run = load_run(a.run)
    x = y = None
    if not a.prior and isinstance(run.model, Encodable):
        _, x, y = _test_images(run, "test", 2 * a.pairs, a.seed)
        if len(x) < 2 * a.pairs:
            raise ConfigError(f"the test split has {len(x)} images, too few for {a.pairs} pairs; lower --pairs")
    g = torch.Generator(device=run.device).manual_seed(a.seed)
    interpolation_sheet(run.model, x, a.output, steps=a.steps, pairs=a.pairs, generator=g, y=y)
    print(f"wrote {a.pairs} interpolations of {a.steps} steps to {a.output}")
    return 0


def cmd_latent(a: argparse.Namespace) -> int:
    from genmodels.models.base import HasPrior
    from genmodels.runs import load_run
    from genmodels.viz import latent_scatter, manifold_sheet

    if not 1 <= a.n <= 100_000:
        raise ConfigError(f"-n must be in 1..100000, got {a.n}")
    _check_output(a.output, ".png")
    run = load_run(a.run)
    ds, x, y = _test_images(run, "test", a.n, 0)
    codes = latent_scatter(run.model, x, y, list(ds.classes), a.output, title=f"{run.model_name} on {ds.name} test")
    out = Path(a.output)
    sheet = out.with_name(out.stem + "-manifold.png")
    manifold_sheet(run.model, sheet, codes=None if isinstance(run.model, HasPrior) else codes)
    print(f"wrote the latent scatter of {len(x)} test images to {a.output} and the manifold to {sheet}")
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from genmodels.eval.report import evaluate_run, evaluate_samples

    if a.samples is not None:
        if a.run is not None:
            raise ConfigError("pass either a run directory or --samples FILE.npz, not both")
        if not a.dataset:
            raise ConfigError("--samples needs --dataset NAME: the dataset whose test split the samples imitate")
        run_only = {
            "--k": a.k,
            "--nll-n": a.nll_n,
            "--full-likelihood": a.full_likelihood or None,
            "--cas-samples": a.cas_samples,
            "--no-cas": a.no_cas or None,
        }
        given = [flag for flag, v in run_only.items() if v is not None] + ["sampling options"] * bool(sample_options(a))
        if given:
            raise ConfigError(f"{', '.join(given)} apply to runs; a samples file is scored as it is")
        report = evaluate_samples(
            a.samples,
            a.dataset,
            out=a.out,
            n=a.n,
            name=a.name,
            seed=a.seed,
            device=a.device,
            data_dir=a.data_dir,
            features=a.features,
            inception_weights=a.inception_weights,
            progress=not a.no_progress,
        )
    else:
        if a.run is None:
            raise ConfigError("name a run directory to evaluate, or pass --samples FILE.npz --dataset NAME")
        for flag in ("dataset", "out", "name", "data_dir"):
            if getattr(a, flag) is not None:
                raise ConfigError(f"--{flag.replace('_', '-')} goes with --samples; a run knows its own dataset")
        report = evaluate_run(
            a.run,
            n=a.n,
            k=a.k,
            nll_n=a.nll_n,
            full_likelihood=a.full_likelihood,
            seed=a.seed,
            device=a.device,
            options=sample_options(a),
            cas=not a.no_cas,
            cas_samples=a.cas_samples,
            weights=a.weights,
            features=a.features,
            inception_weights=a.inception_weights,
            progress=not a.no_progress,
        )
    for line in report["summary_lines"]:
        print(line)
    where = Path(report["run"])
    print("wrote " + " and ".join(report.get("written") or [str(where / "eval.json"), str(where / "eval.md")]))
    return 0


def cmd_leaderboard(a: argparse.Namespace) -> int:
    from genmodels.eval.leaderboard import leaderboard

    res = leaderboard(a.runs_dir, out=a.out)
    print(res["text"])
    print("wrote " + ", ".join(res["files"]))
    return 0


def _completion_input(run: Any, a: argparse.Namespace, shape: Any = None) -> tuple[Any, Any, str]:
    """Images (N, C, H, W) in [0, 1], labels or None, and a description, from --input; a file's images
    must have (or are resized to) ``shape`` (C, H, W), by default the model's image shape."""
    import numpy as np
    import torch

    c, h, w = shape or run.model.config.image_shape
    if a.input in ("test", "train"):
        ds, x, y = _test_images(run, a.input, a.n, a.seed)
        return x, y, f"{len(x)} {ds.name} {a.input} images"
    path = Path(a.input).expanduser()
    if not path.is_file():
        raise ConfigError(f"--input {a.input} is not a file; pass a PNG/JPEG image, an .npz, or 'test' / 'train'")
    if path.suffix.lower() == ".npz":
        from genmodels.data.arrays import load_npz

        ds = load_npz(str(path), "train")
        if ds.images.shape[1:] != (c, h, w):
            got = "x".join(map(str, ds.images.shape[1:]))
            raise ConfigError(f"{path} holds {got} images but the model takes {c}x{h}x{w}; resize them first")
        x = torch.from_numpy(np.ascontiguousarray(ds.images[: a.n])).float().div_(255.0)
        y = torch.from_numpy(ds.labels[: a.n]) if ds.labels is not None else None
        return x, y, f"{len(x)} images from {path}"
    from PIL import Image, UnidentifiedImageError

    from genmodels.data.folder import MAX_PIXELS, pixel_limit

    try:
        with pixel_limit():
            img = Image.open(path)
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ConfigError(
            f"{path} is larger than {MAX_PIXELS:,} pixels (a decompression bomb?); pass a smaller image"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path} as an image ({e}); pass a PNG/JPEG file or an .npz") from None
    size = img.size
    img = img.convert("L" if c == 1 else "RGB")
    if size != (w, h):
        img = img.resize((w, h), Image.LANCZOS)
    arr = np.asarray(img, dtype=np.uint8).reshape(h, w, c).transpose(2, 0, 1)
    resized = f", resized from {size[0]}x{size[1]}" if size != (w, h) else ""
    return torch.from_numpy(arr.copy())[None].float().div_(255.0), None, f"{path}{resized}"


def _input_labels(run: Any, klass: int | None, y: Any, n: int, what: str) -> Any:
    """The classes to condition n input images on: --class K for all, else their own labels; None for an
    unconditional model."""
    from genmodels.models.base import is_conditional

    if not is_conditional(run.model):
        return None
    if klass is not None:
        return _class_labels(run.model, run.model_name, klass, n)
    if y is None:
        raise ConfigError(f"{run.model_name} is class-conditional and {what} has no labels; pass --class K")
    return y


def cmd_complete(a: argparse.Namespace) -> int:
    import torch

    from genmodels.models.base import Completable
    from genmodels.runs import load_run
    from genmodels.viz import save_grid
    from genmodels.viz.completion import complete_images, completion_sheet

    if not 1 <= a.n <= 1000 or not 1 <= a.samples <= 100:
        raise ConfigError(f"-n must be in 1..1000 and --samples in 1..100, got n={a.n}, samples={a.samples}")
    suffix = _check_output(a.output, ".png", ".npz")
    run = load_run(a.run, weights=a.weights, device=a.device)
    model = run.model
    if not isinstance(model, Completable):
        raise ConfigError(
            f"{run.model_name} cannot complete images; completion needs an autoregressive model "
            "(train one with genmodels train pixelcnn)"
        )
    x, y, what = _completion_input(run, a)
    height = model.config.image_shape[1]
    if not 0 <= a.rows <= height:
        raise ConfigError(f"--rows must be in 0..{height} (the image height), got {a.rows}")
    y = _input_labels(run, a.klass, y, len(x), what)
    g = torch.Generator(device=run.device).manual_seed(a.seed)
    t0 = time.perf_counter()
    result = complete_images(
        model, x, a.rows, samples=a.samples, generator=g, labels=y, temperature=a.temperature, sampler=a.sampler
    )
    secs = time.perf_counter() - t0
    if suffix == ".npz":
        ys = y.repeat_interleave(a.samples, 0) if y is not None else None
        _save_images(result.completions.flatten(0, 1), a.output, ys)
    else:
        try:
            save_grid(completion_sheet(result, a.rows), a.output, nrow=a.samples + 2)
        except OSError as e:
            raise GenmodelsError(f"cannot write {a.output}: {e.strerror or e}; choose another -o path") from None
    print(
        f"completed {what} from their top {a.rows} rows, {a.samples} samples each, with {run.model_name} "
        f"(step {run.step}) in {secs:.1f} s; wrote {a.output}"
    )
    return 0


def cmd_edit(a: argparse.Namespace) -> int:
    import torch

    from genmodels.runs import load_run
    from genmodels.viz import save_grid
    from genmodels.viz.editing import (
        METHODS,
        can_edit,
        class_codes,
        edit_sheet,
        is_diffusion,
        latent_edit_images,
        sdedit_images,
    )

    if not 1 <= a.n <= 1000 or not 1 <= a.samples <= 100:
        raise ConfigError(f"-n must be in 1..1000 and --samples in 1..100, got n={a.n}, samples={a.samples}")
    suffix = _check_output(a.output, ".png", ".npz")
    run = load_run(a.run, weights=a.weights, device=a.device)
    model = run.model
    if not can_edit(model):
        raise ConfigError(f"{run.model_name} cannot edit images; editing works with {METHODS}")
    x, y, what = _completion_input(run, a)
    g = torch.Generator(device=run.device).manual_seed(a.seed)
    t0 = time.perf_counter()
    if is_diffusion(model):
        if a.from_class is not None:
            raise ConfigError(
                "--from-class is for vae / autoencoder / gan runs; a diffusion edit needs only --to-class"
            )
        strength = 0.5 if a.strength is None else a.strength
        target = None
        if a.to_class is not None:
            target = torch.full((len(x),), a.to_class, dtype=torch.long)
        elif model.conditional:
            if y is None:
                raise ConfigError(f"{run.model_name} is class-conditional and {what} has no labels; pass --to-class K")
            target = y
        options = {"sampler": a.sampler, "steps": a.sampling_steps, "guidance": a.guidance}
        result = sdedit_images(model, x, strength, samples=a.samples, generator=g, labels=target, **options)
        t = model.edit_timestep(strength, a.sampler, a.sampling_steps)
        how = f"SDEdit at strength {strength:g} (noised to t = {t} of {model.config.timesteps})"
        if target is not None and a.to_class is not None:
            how += f" towards class {a.to_class}"
    else:
        if a.strength is not None or a.sampler or a.sampling_steps or a.guidance is not None:
            raise ConfigError(
                "--strength, --sampler, --sampling-steps and --guidance are for diffusion runs; "
                f"{run.model_name} edits by latent arithmetic (--to-class K, --from-class K, --scale S)"
            )
        if a.to_class is None:
            raise ConfigError(f"{run.model_name} edits by latent arithmetic between classes; pass --to-class K")
        if a.from_class is not None:
            source = torch.full((len(x),), a.from_class, dtype=torch.long)
        elif y is not None:
            source = y.long()
        else:
            raise ConfigError(f"{what} has no labels; pass --from-class K (the inputs' class)")
        target = torch.full((len(x),), a.to_class, dtype=torch.long)
        codes = None
        if not model.conditional:
            train = run.load_data("train")
            if train.labels is None:
                raise ConfigError(f"{run.model_name}'s training data have no labels; latent arithmetic needs classes")
            classes = {*source.tolist(), a.to_class}
            k = int(train.labels.max()) + 1
            codes = class_codes(model, train.images, train.labels, k, classes=classes, generator=g)
        result = latent_edit_images(model, x, source, target, codes, a.scale, generator=g)
        how = f"latent arithmetic to class {a.to_class} (scale {a.scale:g})"
    secs = time.perf_counter() - t0
    try:
        Path(a.output).parent.mkdir(parents=True, exist_ok=True)
        per = result.edits.shape[1]
        if suffix == ".npz":
            _write_npz(a.output, [result.edits.flatten(0, 1)], len(x) * per)
        else:
            save_grid(edit_sheet(result), a.output, nrow=per + 1)
    except OSError as e:
        raise GenmodelsError(f"cannot write {a.output}: {e.strerror or e}; choose another -o path") from None
    print(f"edited {what} by {how} with {run.model_name} (step {run.step}) in {secs:.1f} s; wrote {a.output}")
    return 0


def cmd_inpaint(a: argparse.Namespace) -> int:
    import torch

    from genmodels.models.base import Inpaints
    from genmodels.runs import load_run
    from genmodels.viz import save_grid
    from genmodels.viz.inpainting import MASKS, METHODS, inpaint_images, inpaint_sheet, named_mask, read_mask

    if not 1 <= a.n <= 1000 or not 1 <= a.samples <= 100:
        raise ConfigError(f"-n must be in 1..1000 and --samples in 1..100, got n={a.n}, samples={a.samples}")
    suffix = _check_output(a.output, ".png", ".npz")
    options = {}
    for item in a.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set takes KEY=VALUE, got {item!r}")
        options[key.strip()] = value.strip()
    run = load_run(a.run, weights=a.weights, device=a.device)
    model = run.model
    if not isinstance(model, Inpaints):
        raise ConfigError(f"{run.model_name} cannot inpaint; inpainting works with {METHODS}")
    x, y, what = _completion_input(run, a)
    _, h, w = model.config.image_shape
    g = torch.Generator(device=run.device).manual_seed(a.seed)
    if a.mask in MASKS:
        keep = named_mask(a.mask, len(x), h, w, torch.Generator().manual_seed(a.seed))
    elif Path(a.mask).suffix.lower() in (".png", ".bmp", ".gif", ".webp", ".jpg", ".jpeg"):
        keep = read_mask(Path(a.mask).expanduser(), h, w)
    else:
        raise ConfigError(f"--mask {a.mask} is not a mask; use one of {', '.join(MASKS)} or a black-and-white PNG")
    y = _input_labels(run, a.klass, y, len(x), what)
    t0 = time.perf_counter()
    result = inpaint_images(model, x, keep, samples=a.samples, generator=g, labels=y, **options)
    secs = time.perf_counter() - t0
    try:
        Path(a.output).parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npz":
            ys = y.repeat_interleave(a.samples, 0) if y is not None else None
            _write_npz(a.output, [result.fills.flatten(0, 1)], len(x) * a.samples, ys)
        else:
            save_grid(inpaint_sheet(result), a.output, nrow=a.samples + 2)
    except OSError as e:
        raise GenmodelsError(f"cannot write {a.output}: {e.strerror or e}; choose another -o path") from None
    hidden = 1.0 - float(result.keep.mean())
    print(
        f"inpainted {what} ({hidden:.0%} of the pixels hidden by --mask {a.mask}), {a.samples} fills each, "
        f"with {run.model_name} (step {run.step}) in {secs:.1f} s; wrote {a.output}"
    )
    return 0


def cmd_translate(a: argparse.Namespace) -> int:
    import torch

    from genmodels.models.base import Translates
    from genmodels.runs import load_run
    from genmodels.viz import save_grid
    from genmodels.viz.translation import split_pairs, translate_images

    if not 1 <= a.n <= 1000:
        raise ConfigError(f"-n must be in 1..1000, got {a.n}")
    suffix = _check_output(a.output, ".png", ".npz")
    run = load_run(a.run, weights=a.weights, device=a.device)
    model = run.model
    if not isinstance(model, Translates):
        raise ConfigError(
            f"{run.model_name} is not a translator; translate works with pix2pix, cyclegan and l1-unet runs "
            "(e.g. genmodels train pix2pix --dataset pair:emoji,twemoji)"
        )
    model.generator_for(a.direction)  # a direction the model lacks: one line
    x, _, what = _completion_input(run, a, model.config.source_shape)
    rows, targets = 2, None
    if a.input in ("test", "train"):  # the split's stacked pairs: the side translated from, and the other
        src, dst = split_pairs(x)
        x, targets = (src, dst) if a.direction == "forward" else (dst, src)
        rows = 3
    t0 = time.perf_counter()
    out = translate_images(model, x, a.direction)
    secs = time.perf_counter() - t0
    try:
        Path(a.output).parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npz":
            _write_npz(a.output, [out], len(out))
        else:
            sheet = [x, out] + ([targets] if targets is not None else [])
            save_grid(torch.cat(sheet), a.output, nrow=len(x))
    except OSError as e:
        raise GenmodelsError(f"cannot write {a.output}: {e.strerror or e}; choose another -o path") from None
    layout = "rows: input, translation" + (", target" if rows == 3 else "") if suffix == ".png" else "uint8"
    print(
        f"translated {what} {a.direction} with {run.model_name} (step {run.step}) in {secs:.1f} s; "
        f"wrote {a.output} ({layout})"
    )
    return 0


def cmd_doctor(a: argparse.Namespace) -> int:
    import genmodels.nets
    import genmodels.training  # noqa: F401  (importing them registers their fast paths)
    from genmodels.device import forget_decisions, report
    from genmodels.models.sampling_layout import SAMPLE_PREFIX
    from genmodels.training.speed import PLAN_PREFIX, describe_machine_plans

    r = report(remeasure=a.remeasure)
    r["step_plans_forgotten"] = forget_decisions(PLAN_PREFIX) + forget_decisions(SAMPLE_PREFIX) if a.remeasure else 0
    r["step_plans"] = describe_machine_plans()
    if a.json:
        print(json.dumps(r, indent=1))
        return 0
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in r["cpu_flags"].items())
    print(f"machine: {r['cpu']}, {r['cores']} cores; torch {r['torch']} on {r['threads']} threads")
    print(f"CPU: torch's kernels use {r['cpu_capability']}; {flags}")
    bf16 = "native (autocast where a model's precision is auto)" if r["bf16_autocast_cpu"] else "not native"
    print(f"bf16 on the CPU: {bf16}")
    gpus = "; ".join(f"{g['name']} (bf16 {'yes' if g['bf16'] else 'no'})" for g in r["cuda"]) or "none"
    print(f"CUDA devices: {gpus}; --device auto picks {r['default_device']}")
    print(f"fast paths ({'GENMODELS_FASTPATHS=' + r['fast_paths_setting']}; decisions cached in {r['cache']}):")
    for name, d in r["fast_paths"].items():
        print(f"  {name}: {'on' if d['chosen'] else 'off'} - {d['why']}")
    if a.remeasure:
        print(
            f"training steps and sampling layouts: {r['step_plans_forgotten']} cached plans dropped; "
            "each is timed again at its next use"
        )
    else:
        print(
            "training steps (timed by each model's first run here: precision, layout, compile) "
            "and sampling layouts (timed by its first draw):"
        )
        for p in r["step_plans"]:
            print(f"  {p['model']}: {p['plan']} - {p['why']}")
        if not r["step_plans"]:
            print("  none timed yet")
    return 0


def cmd_datasets(a: argparse.Namespace) -> int:
    from genmodels.data import describe_datasets

    rows = describe_datasets(a.data_dir)
    if a.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'name':<14} {'shape':<10} {'classes':<8} {'status':<13} where / how to get it")
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        print(f"{r['name']:<14} {shape:<10} {r['num_classes']:<8} {r['status']:<13} {r['where']}")
    print("also: folder:PATH (PNG/JPEG files, labels from sub-folders) and npz:PATH (key 'images', optional 'labels')")
    print(
        "translation (pix2pix, cyclegan): pair:emoji,twemoji (paired by code point), colorize:NAME (grey to colour), "
        "edges:NAME (sketch to image), unpaired:A,B (CycleGAN)"
    )
    return 0


def cmd_models(a: argparse.Namespace) -> int:
    from genmodels.models import FAMILIES, MODELS

    rows = [{"name": n, "family": s.family, "description": s.description} for n, s in MODELS.items()]
    if a.json:
        print(json.dumps({"models": rows, "families": FAMILIES}, indent=1))
        return 0
    print(f"{'name':<16} {'family':<13} description")
    for r in rows:
        print(f"{r['name']:<16} {r['family']:<13} {r['description']}")
    print(
        "family names pick the recommended model and config: " + ", ".join(f"{f} -> {m}" for f, m in FAMILIES.items())
    )
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    from genmodels.serve import serve

    if not 0 <= a.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {a.port}")
    try:
        serve(a.runs_dir, host=a.host, port=a.port, device=a.device)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    return 0


def cmd_quickstart(a: argparse.Namespace) -> int:
    import torch

    from genmodels.api import train
    from genmodels.checkpoints import latest_checkpoint
    from genmodels.viz import interpolation_sheet, save_grid

    t0 = time.perf_counter()
    out = Path(a.out)
    if latest_checkpoint(out / "checkpoints") is not None:
        raise GenmodelsError(f"{out} already holds a run; pass another --out or delete it")
    run = train("vae", "digits", max_time=a.max_time, out=out, config=_quickstart_config())
    save_grid(run.sample(64, seed=0), out / "samples.png", nrow=8)
    ds = run.load_data("test")
    x = torch.from_numpy(ds.images[:12]).float().div_(255.0)
    interpolation_sheet(run.model, x, out / "interpolation.png", steps=10, pairs=6)
    res = run.extra["result"]
    shown = ", ".join(f"{k}={v:.4g}" for k, v in res.metrics.items() if k not in ("step", "time", "epoch"))
    print(f"quickstart: trained {run.model_name} on digits for {res.step} steps in {time.perf_counter() - t0:.0f} s")
    print(f"  last metrics: {shown}")
    for name in ("samples.png", "reconstructions.png", "interpolation.png", "loss.png"):
        print(f"  {out / name}")
    print(f"next: genmodels sample {out} -n 64 -o more.png; genmodels evaluate {out}")
    return 0


def _quickstart_config() -> str:
    from importlib import resources

    return str(resources.files("genmodels").joinpath("configs", "quickstart.yaml"))


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": cmd_train,
    "sample": cmd_sample,
    "reconstruct": cmd_reconstruct,
    "interpolate": cmd_interpolate,
    "latent": cmd_latent,
    "complete": cmd_complete,
    "inpaint": cmd_inpaint,
    "translate": cmd_translate,
    "edit": cmd_edit,
    "evaluate": cmd_evaluate,
    "leaderboard": cmd_leaderboard,
    "datasets": cmd_datasets,
    "doctor": cmd_doctor,
    "models": cmd_models,
    "quickstart": cmd_quickstart,
    "serve": cmd_serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if getattr(args, "seed", None) is not None:
            from genmodels.runs import check_seed

            check_seed(args.seed)
        return COMMANDS[args.command](args)
    except GenmodelsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the file system said no: a full or read-only disk, a missing permission
        where = f" {e.filename}" if e.filename else ""
        print(
            f"error: cannot use{where}: {e.strerror or e}; free space, fix permissions or choose another path",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
