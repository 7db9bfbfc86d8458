"""How well a translator works, on its dataset's test split: the translations of the test sources against
the test targets, beside the untranslated inputs (the baseline every translator must beat).

Per direction (CycleGAN: both), over the test split's n examples:

* FID, KID, precision and recall of the translations against the other side's test images, in the feature
  space of that side's feature net (``twemoji`` has none of its own: the ``emoji`` net, trained on Google's
  drawings of the same 9 groups, embeds both);
* for paired data, the mean absolute error per pixel (grey levels in [0, 1]) between each translation
  and its own target;
* the same for the inputs themselves (``input`` rows): what doing nothing scores.

Written to ``translation.json`` in the run directory.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from genmodels.errors import ConfigError, GenmodelsError

FEATURE_NET_OF = {"twemoji": "emoji"}  # a side without a feature net of its own -> the net that embeds it


def side_feature_net(name: str) -> Any:
    """The feature net for one side of a translation dataset (``colorize:emoji``'s target is ``emoji``)."""
    from genmodels.eval.features import load_feature_net

    base = name.split(" (", 1)[0]
    return load_feature_net(FEATURE_NET_OF.get(base, base))


def _net_for(name: str, shape: tuple[int, ...]) -> tuple[Any, str]:
    """(the feature net of a side, "") or (None, why not): none shipped, or one for another image shape."""
    try:
        net = side_feature_net(name)
    except GenmodelsError as e:
        return None, str(e).split(";")[0]
    want = tuple(net.config.image_shape)
    if want != shape:
        size = "x".join
        return (
            None,
            f"the {net.dataset} feature net takes {size(map(str, want))} images, these are {size(map(str, shape))}",
        )
    return net, ""


def translation_metrics(
    translated: torch.Tensor, targets: torch.Tensor, net: Any, *, paired: bool, name: str
) -> dict[str, Any]:
    """FID, KID, precision, recall (and, for paired data, L1) of translations (N, C, H, W) in [0, 1] against
    targets (N, C, H, W) in [0, 1]; without a feature net (None) only L1."""
    from genmodels.data.dataset import ImageDataset
    from genmodels.eval.reference import real_reference
    from genmodels.eval.report import sample_metrics
    from genmodels.viz import to_uint8

    out: dict[str, Any] = {"n": len(translated)}
    if net is not None:
        real = ImageDataset(name, "test", to_uint8(targets), None)
        ref = real_reference(net, real, use_cache=False)
        m = sample_metrics(torch.from_numpy(to_uint8(translated)), net, ref)
        out.update({k: m[k] for k in ("fid", "kid", "precision", "recall")})
    if paired:
        out["l1"] = float((translated.float() - targets.float()).abs().mean())
    return out


def evaluate_translation(
    run_dir: str | os.PathLike,
    *,
    n: int | None = None,
    device: str = "auto",
    run: Any = None,
    dataset: str | None = None,
    out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Evaluate a translator run on its test split (see the module docstring); writes ``translation.json``.

    Args:
        dataset: another translation dataset's test split to translate (a CycleGAN trained on
            ``unpaired:emoji,twemoji`` scored on ``pair:emoji,twemoji``, whose pairs give an L1 too); its
            sides must have the run's image shape.
        out: where to write the report (default ``RUN/translation.json``).

    Raises:
        ConfigError: the run is not a translator, n < 1, or a dataset of another shape.
    """
    from genmodels.models.base import Translates
    from genmodels.runs import load_run
    from genmodels.viz.translation import split_pairs, translate_images

    if n is not None and n < 1:
        raise ConfigError(f"-n must be >= 1, got {n}")
    run = run or load_run(run_dir, device=device)
    if not isinstance(run.model, Translates):
        raise ConfigError(f"{run.model_name} is not a translator")
    if dataset is None:
        ds = run.load_data("test")
    else:
        from dataclasses import replace

        from genmodels.runs import load_data

        ds = load_data(replace(run.data_config, dataset=dataset, limit=None), "test")
        if tuple(ds.shape) != tuple(run.model.config.image_shape):
            raise ConfigError(
                f"{dataset} has {ds.shape} examples; {run.model_name} translates {run.model.config.image_shape}"
            )
    if len(ds) == 0:
        raise GenmodelsError(f"{ds.name} has no test examples to translate")
    pairs = torch.from_numpy(ds.images[: n or len(ds)]).float().div_(255.0)
    a, b = split_pairs(pairs)
    paired = ds.pairing == "paired"
    report: dict[str, Any] = {
        "model": run.model_name,
        "step": run.step,
        "dataset": ds.name,
        "sides": list(ds.sides),
        "pairing": ds.pairing,
        "n": len(pairs),
        "directions": {},
    }
    lines = [f"{run.model_name} on {ds.name} ({len(pairs)} test examples, step {run.step})"]
    for direction in run.model.directions:
        src, dst = (a, b) if direction == "forward" else (b, a)
        target_name = ds.sides[1] if direction == "forward" else ds.sides[0]
        net, why = _net_for(target_name, tuple(src.shape[1:]))
        t0 = time.perf_counter()
        moved = translate_images(run.model, src, direction)
        secs = time.perf_counter() - t0
        row = {
            "translated": translation_metrics(moved, dst, net, paired=paired, name=f"{ds.name} {direction} target"),
            "input": translation_metrics(src, dst, net, paired=paired, name=f"{ds.name} {direction} target"),
            "feature_net": net.dataset if net is not None else None,
            "target": target_name,
            "seconds_per_1000": round(1000 * secs / len(src), 2),
        }
        report["directions"][direction] = row
        if net is None:
            row["no_feature_metrics"] = why
            lines.append(f"{direction} to {target_name}: no FID / KID / precision / recall ({why})")
        for what in ("translated", "input"):
            r = row[what]
            l1 = f"L1 {r['l1']:.4f}" if "l1" in r else ""
            if net is None:
                if l1:
                    lines.append(f"{direction} to {target_name}, {what}: {l1}")
                continue
            lines.append(
                f"{direction} to {target_name}, {what}: FID {r['fid']:.2f}, KID {1000 * r['kid']['mean']:.1f} "
                f"x1e-3, precision {r['precision']:.3f}, recall {r['recall']:.3f}" + (f", {l1}" if l1 else "")
            )
    report["summary_lines"] = lines
    path = Path(out) if out is not None else Path(run_dir) / "translation.json"
    report["run"], report["written"] = str(Path(run_dir)), [str(path)]
    tmp = path.with_name(".translation.json.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, path)
    return report
