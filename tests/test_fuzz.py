"""Fuzzing the user-facing surface: malformed configs, CLI arguments, IDX headers and .npz files.

Every case runs the real CLI entry point in-process. The promise: never a traceback (any exception
escaping ``main`` fails the test), and a rejected input is exactly one ``error:`` line with exit code 2.
Inputs that happen to be valid may train (one step on a few images) and exit 0. The last test checks what
the cases did as a whole: every one ran to its check, and they reached many different checks (a CLI that
refused everything with one early error would pass each case, not that).
"""

from __future__ import annotations

import gzip
import random
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml

from genmodels.cli import main

FAST = [
    "--steps",
    "1",
    "--batch-size",
    "8",
    "--no-progress",
    "--set",
    "train.sample_every=0",
    "--set",
    "train.log_every=1",
]
SEEDS = {"configs": 70, "argv": 70, "idx": 40, "npz": 40}  # 220 cases
OUTCOMES: dict[str, list[tuple[int, str]]] = {kind: [] for kind in SEEDS}  # (exit code, error line) per case run


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)  # an exception here is a traceback for the user: the test fails on it
    err = capsys.readouterr().err
    return code, err


def check(kind: str, code: int, err: str, argv: list[str]) -> None:
    if code != 0:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2, (code, argv, err)
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
    OUTCOMES[kind].append((code, lines[0] if code else ""))


def _value(rng: random.Random, depth: int = 0):
    kinds = ["int", "neg", "float", "str", "bool", "none", "list", "dict", "huge", "nan", "empty"]
    k = rng.choice(kinds if depth < 2 else kinds[:7])
    return {
        "int": lambda: rng.randint(0, 64),
        "neg": lambda: -rng.randint(1, 10**6),
        "float": lambda: rng.uniform(-10, 10),
        "str": lambda: rng.choice(["conv", "mlp", "", "😀", "fashion-mnist", "cosine", "bf16", "../x", "1e-3"]),
        "bool": lambda: rng.random() < 0.5,
        "none": lambda: None,
        "list": lambda: [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))],
        "dict": lambda: {rng.choice(["a", "lr", "steps"]): _value(rng, depth + 1)},
        "huge": lambda: 10 ** rng.randint(12, 400),
        "nan": lambda: float(rng.choice(["nan", "inf", "-inf"])),
        "empty": lambda: {},
    }[k]()


KEYS = {
    "model": ["latent_dim", "hidden", "channels", "blocks", "act", "recon_loss", "arch", "code_momentum", "latnt"],
    "train": [
        "lr",
        "steps",
        "batch_size",
        "schedule",
        "warmup_steps",
        "ema_decay",
        "grad_clip",
        "precision",
        "betas",
        "min_lr_ratio",
        "log_every",
        "keep_checkpoints",
        "device",
        "seed",
        "lrr",
    ],
    "data": ["dataset", "image_size", "channels", "limit", "data_dir"],
}


@pytest.mark.parametrize("seed", range(SEEDS["configs"]))
def test_malformed_configs(seed, tmp_path, capsys):
    rng = random.Random(seed)
    doc: object
    if rng.random() < 0.1:
        doc = rng.choice(["[1, 2", "model: {a: [", "- just\n- a list", "42", "model:\n\t- tab", ""])
        text = doc
    else:
        doc = {}
        for section in rng.sample([*KEYS, "modle", "model_name"], rng.randint(1, 3)):
            if section == "model_name" or rng.random() < 0.15:
                doc[section] = _value(rng)
            else:
                keys = KEYS.get(section, ["x", "y"])
                doc[section] = {k: _value(rng) for k in rng.sample(keys, rng.randint(1, min(3, len(keys))))}
        text = yaml.safe_dump(doc)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    argv = [
        "train",
        "mlp-ae",
        "--dataset",
        "digits",
        "--config",
        str(cfg),
        "--out",
        str(tmp_path / "r"),
        *FAST,
        "--set",
        "data.limit=64",
    ]
    check("configs", *run_main(argv, capsys), argv)


TOKENS = [
    "train",
    "sample",
    "reconstruct",
    "interpolate",
    "latent",
    "evaluate",
    "datasets",
    "models",
    "mlp-ae",
    "vae",
    "conv-vae",
    "cvae",
    "--dataset",
    "digits",
    "fashon",
    "--steps",
    "--max-time",
    "-1",
    "0",
    "abc",
    "1e999",
    "nan",
    "--batch-size",
    "--set",
    "lr=",
    "=1",
    "train.lr=-5",
    "model.latent_dim=0",
    "x=y=z",
    "--seed",
    "--out",
    "-n",
    "-o",
    "/nonexistent/dir/f.png",
    "out.txt",
    "--class",
    "99",
    "--weights",
    "raw",
    "--resume",
    "--config",
    "/nonexistent.yaml",
    "--k",
    "--help-me",
    "--sampler",
    "ddim",
    "--sampling-steps",
    "--truncation",
    "--data-dir",
    "/proc/1",
    "folder:/nonexistent",
    "npz:/nonexistent.npz",
    "",
]


@pytest.mark.parametrize("seed", range(SEEDS["argv"]))
def test_malformed_command_lines(seed, tmp_path, capsys, monkeypatch):
    rng = random.Random(1000 + seed)
    monkeypatch.chdir(tmp_path)  # anything a valid command writes lands here
    argv = [rng.choice(TOKENS[:8])] + [rng.choice(TOKENS) for _ in range(rng.randint(0, 6))]
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "r")]
    try:
        code, err = run_main(argv, capsys)
    except SystemExit as e:  # argparse's own exit for --help (0) or a usage error (2)
        code, err = int(e.code or 0), capsys.readouterr().err
    check("argv", code, err, argv)


def _idx_bytes(rng: random.Random, kind: str) -> bytes:
    n = rng.choice([0, 1, 5, 2**31 - 1, 60000])
    magic = 0x803 if kind == "images" else 0x801
    mutation = rng.choice(["magic", "dtype", "ndim", "count", "truncate", "dims", "empty", "garbage", "labels"])
    body = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 3000)))
    header = struct.pack(">IIII", magic, n, 28, 28) if kind == "images" else struct.pack(">II", magic, n)
    if mutation == "magic":
        header = struct.pack(">I", rng.getrandbits(32)) + header[4:]
    elif mutation == "dtype":
        header = header[:2] + bytes([rng.choice([0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0xFF])]) + header[3:]
    elif mutation == "ndim":
        header = header[:3] + bytes([rng.randint(0, 255)]) + header[4:]
    elif mutation == "dims" and kind == "images":
        header = struct.pack(">IIII", magic, 5, rng.randint(0, 2**32 - 1), rng.randint(0, 2**32 - 1))
    elif mutation == "empty":
        return b""
    elif mutation == "garbage":
        return body
    elif mutation == "labels" and kind == "labels":
        return struct.pack(">II", magic, 5) + bytes([200, 11, 3, 255, 10])
    data = header + body
    if mutation == "truncate":
        data = data[: rng.randint(0, len(data))]
    return data


@pytest.mark.parametrize("seed", range(SEEDS["idx"]))
def test_malformed_idx_files(seed, tmp_path, capsys):
    rng = random.Random(2000 + seed)
    # KMNIST has no published payload hash, so an uncompressed file reaches the IDX header parser itself.
    dataset = "kmnist" if seed % 2 else "fashion-mnist"
    root = tmp_path / "data" / dataset
    root.mkdir(parents=True)
    for name, kind in (("train-images-idx3-ubyte", "images"), ("train-labels-idx1-ubyte", "labels")):
        data = _idx_bytes(rng, kind)
        if rng.random() < 0.5 and dataset == "fashion-mnist":
            (root / f"{name}.gz").write_bytes(gzip.compress(data) if rng.random() < 0.8 else data[:50])
        else:
            (root / name).write_bytes(data)
    argv = [
        "train",
        "mlp-ae",
        "--dataset",
        dataset,
        "--data-dir",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "r"),
        *FAST,
    ]
    code, err = run_main(argv, capsys)
    assert code == 2, "a malformed IDX file must never be used"
    check("idx", code, err, argv)
    assert "train-" in err, "the error must name the file"


def _npz_arrays(rng: random.Random) -> dict[str, np.ndarray]:
    shapes = [
        (8, 28, 28),
        (8, 1, 28, 28),
        (8, 28, 28, 3),
        (8,),
        (0, 28, 28),
        (8, 5, 28, 28),
        (8, 28, 28, 2),
        (8, 2, 3, 4, 5),
        (),
        (8, 1, 1),
    ]
    dtypes = [np.uint8, np.float32, np.float64, np.int64, np.int8, np.bool_, np.complex64, np.uint16]
    shape = rng.choice(shapes)
    dtype = rng.choice(dtypes)
    arr = (np.random.default_rng(rng.getrandbits(32)).random(shape) * rng.choice([1, 255, 1e6, -3])).astype(dtype)
    out = {rng.choice(["images", "images", "x_train", "imgs"]): arr}
    if rng.random() < 0.5:
        n = rng.choice([8, 7, 0])
        out["labels"] = np.asarray([rng.randint(-3, 12) for _ in range(n)], dtype=rng.choice([np.int64, np.float32]))
    return out


@pytest.mark.parametrize("seed", range(SEEDS["npz"]))
def test_malformed_npz_files(seed, tmp_path, capsys):
    rng = random.Random(3000 + seed)
    f = tmp_path / "d.npz"
    if rng.random() < 0.15:
        f.write_bytes(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 500))))
    elif rng.random() < 0.1:
        np.savez(f, images=np.array([{"a": 1}], dtype=object))
    else:
        np.savez(f, **_npz_arrays(rng))
    argv = ["train", "mlp-ae", "--dataset", f"npz:{f}", "--out", str(tmp_path / "r"), *FAST]
    check("npz", *run_main(argv, capsys), argv)


def kind_of_error(line: str) -> str:
    """Which check refused: an error line's first words before any detail, particulars (quoted values,
    paths, numbers) blanked, e.g. "unknown config section", "argument --seed", "_ not an"."""
    body = re.sub(r"'[^']*'|\"[^\"]*\"|/\S*|-?\d[\w.+-]*", "_", line.removeprefix("error: "))
    return " ".join(re.split(r"[:;(]", body, maxsplit=1)[0].split()[:3])


# Different checks each kind of case must reach: about half of the 7, 14, 4 and 7 that they reach today.
MIN_CHECKS = {"configs": 4, "argv": 7, "idx": 3, "npz": 4}


def test_every_case_ran_and_the_cases_reached_many_different_checks(request):
    """Runs after the cases (pytest keeps file order); only where this session selected all of them."""
    selected = sum(1 for item in request.session.items if item.path == Path(__file__) and item is not request.node)
    if selected < sum(SEEDS.values()):
        pytest.skip(f"{selected} of the {sum(SEEDS.values())} fuzz cases selected: run the whole file")
    ran = {kind: len(outcomes) for kind, outcomes in OUTCOMES.items()}
    assert ran == SEEDS, f"cases that did not reach their check: {ran} of {SEEDS}"
    for kind, outcomes in OUTCOMES.items():
        checks = {kind_of_error(msg) for code, msg in outcomes if code == 2}
        assert len(checks) >= MIN_CHECKS[kind], (kind, sorted(checks))
    for kind in ("configs", "argv", "npz"):  # some inputs are valid: the CLI does not refuse everything
        assert any(code == 0 for code, _ in OUTCOMES[kind]), kind
