"""Known-answer control data: procedural images whose best colorization under each loss is known in advance.

A benchmark earns trust by recovering effects whose answer is known. Every control image is a grid of square tiles
rendered in CIE Lab and written as 8-bit sRGB PNGs (so every target is in gamut):

- *texture tiles*: stripes or a checker of two lightness levels; the pattern decides the tile's colour (horizontal
  stripes → green, vertical → magenta, checker → yellow). Their colour is a function of the lightness a network
  sees: every loss can learn it to the 8-bit noise floor.
- *flat tiles*: one constant lightness, coloured A (orange) or B (grey). The lightness is the same for both (the
  8-bit triples are chosen so that their L agrees to 0.01), so no network can tell them apart; a fixed share of an
  image's flat tiles is B (3 of 10 in ``controls``). The Bayes-optimal prediction there depends on the loss only:
  MSE → the mean 0.7 A + 0.3 B (a paler orange), L1 → the per-channel median (A), KL → the annealed mean of the
  soft-encoded mixture, between the two. A and B lie on centres of the KL bins (a colour between bins moves the KL mode).

``controls-varying`` changes one thing: the share of B varies between images (0 or 6 of 10 flat tiles, in turn;
0.3 over the set). Pooled PSNR (over all pixels) and the mean of per-image PSNRs then rank MSE and L1 in opposite
orders: MSE minimises the pooled squared error, L1 is exact on the images without B.

Images are deterministic from (variant, seed, split, index); training and test images come from different seeds.
``write`` makes a data folder (``train/``, ``test/``, each with a SHA256SUMS manifest, and ``controls.json`` with
the generator's parameters); ``ensure`` keeps one per variant in the cache, which is what ``--data controls`` uses.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.data.abbins import ANNEAL_T, ABBins
from bench.data.colour import lab_to_rgb, rgb_to_lab, split_lab

#: Version of the generator: with the variant's parameters part of the cache folder's name (``ensure``), so a
#: changed generator never reuses old images.
GENERATOR_VERSION = 1
#: Lightness of the flat tiles and the two lightness levels of the texture tiles.
L_FLAT, L_LOW, L_HIGH = 60.0, 45.0, 70.0
#: ab of the flat tiles' two colours (centres of KL bins, in gamut at ``L_FLAT``): A (orange) and B (grey). B is
#: 50 ab units from A: far enough for the losses' answers to separate (mean, median and annealed mean are 0.75 dB
#: apart), near enough that the learnable texture tiles keep every trained cell dB above the mean colour.
AB_A, AB_B = (30.0, 40.0), (0.0, 0.0)
#: ab of the texture tiles by pattern: horizontal stripes, vertical stripes, checker (in gamut at both levels).
AB_TEXTURE = ((-40.0, 40.0), (50.0, -20.0), (20.0, 50.0))
PATTERNS = ("horizontal stripes", "vertical stripes", "checker")


@dataclass(frozen=True)
class Variant:
    """One control data set.

    Args:
        name: the ``--data`` name.
        size: side of the square images (the ``controls`` preset trains and tests at this size).
        tile: side of a tile (``size`` must be a multiple).
        textures: texture tiles per pattern in every image.
        flat: flat tiles in every image (the rest of the grid).
        b_tiles: how many flat tiles are B, image by image in turn (``(3,)``: always 3; ``(0, 6)``: 0, 6, 0, ...).
        n_train: images in ``train/`` (one in 10 of them is the validation split).
        n_test: images in ``test/``.
    """

    name: str
    size: int = 32
    tile: int = 8
    textures: int = 2
    flat: int = 10
    b_tiles: tuple = (3,)
    n_train: int = 400
    n_test: int = 48

    @property
    def b_share(self) -> float:
        """The share of B among the flat pixels over the whole set."""
        return float(np.mean(self.b_tiles)) / self.flat


VARIANTS = {
    "controls": Variant("controls"),
    "controls-varying": Variant("controls-varying", b_tiles=(0, 6)),
}
#: the seed of ``--data controls`` (a data folder of another seed: ``colorbench data controls --seed N``)
DEFAULT_SEED = 0


def _lab_of(rgb_u8: np.ndarray) -> np.ndarray:
    """Lab of ``N×3`` uint8 triples (float64)."""
    t = torch.from_numpy(np.ascontiguousarray(rgb_u8.T[None, :, :, None])).to(torch.uint8)
    return rgb_to_lab(t.double() / 255.0)[0, :, :, 0].T.numpy()


def _candidates(L: float, ab) -> tuple[np.ndarray, np.ndarray]:
    """The 8-bit triples within ±2 of the rounded sRGB of (L, ab), and their Lab, nearest first."""
    lab = torch.tensor([L, *ab], dtype=torch.float64).view(1, 3, 1, 1)
    rgb = lab_to_rgb(lab, clamp=False)[0, :, 0, 0].numpy() * 255.0
    if (rgb < 0).any() or (rgb > 255).any():
        raise ValueError(f"Lab ({L}, {ab[0]}, {ab[1]}) is outside the sRGB gamut")
    steps = np.stack(np.meshgrid(*[np.arange(-2, 3)] * 3, indexing="ij"), -1).reshape(-1, 3)
    trip = np.clip(np.round(rgb) + steps, 0, 255).astype(np.uint8)
    got = _lab_of(trip)
    err = np.linalg.norm(got - np.array([L, *ab]), axis=1)
    order = np.argsort(err, kind="stable")
    return trip[order], got[order]


def render(L: float, ab) -> np.ndarray:
    """The 8-bit sRGB triple nearest to (L, ab) in Lab."""
    return _candidates(L, ab)[0][0]


def flat_pair() -> tuple[np.ndarray, np.ndarray]:
    """8-bit triples of A and B at ``L_FLAT`` whose lightness agrees best (then nearest to their ab): what the
    network sees of a flat tile must not tell A from B."""
    (ta, la), (tb, lb) = _candidates(L_FLAT, AB_A), _candidates(L_FLAT, AB_B)
    ta, la, tb, lb = ta[:20], la[:20], tb[:20], lb[:20]
    dl = np.abs(la[:, None, 0] - lb[None, :, 0])
    dab = (np.linalg.norm(la[:, 1:] - AB_A, axis=1)[:, None] + np.linalg.norm(lb[:, 1:] - AB_B, axis=1)[None, :])
    i, j = np.unravel_index(np.argmin(dl * 100 + dab), dl.shape)
    return ta[i], tb[j]


@dataclass(frozen=True)
class Palette:
    """The 8-bit triples every control image is made of: A, B, and each pattern's (low, high) pair."""

    a: tuple
    b: tuple
    textures: tuple  # ((low triple, high triple) per pattern)

    @classmethod
    def make(cls) -> "Palette":
        a, b = flat_pair()
        tex = tuple((tuple(int(v) for v in render(L_LOW, ab)), tuple(int(v) for v in render(L_HIGH, ab)))
                    for ab in AB_TEXTURE)
        return cls(tuple(int(v) for v in a), tuple(int(v) for v in b), tex)

    def lab(self, which: str) -> np.ndarray:
        """Lab of ``"a"`` or ``"b"``."""
        return _lab_of(np.array([getattr(self, which)], dtype=np.uint8))[0]


def _pattern(kind: int, tile: int) -> np.ndarray:
    """The ``tile×tile`` boolean lightness pattern of a texture (True = high), 2-pixel stripes or checks."""
    r, c = np.mgrid[0:tile, 0:tile] // 2
    return [(r % 2) == 0, (c % 2) == 0, ((r + c) % 2) == 0][kind]


def image(variant: Variant, palette: Palette, seed: int, split: str, index: int) -> np.ndarray:
    """Control image ``index`` of a split as ``size×size×3`` uint8: its tiles shuffled by a generator seeded with
    (seed, split, index) alone."""
    v = variant
    n_side = v.size // v.tile
    if v.size % v.tile or v.textures * len(PATTERNS) + v.flat != n_side * n_side:
        raise ValueError(f"{v.name}: {v.textures}×{len(PATTERNS)} texture + {v.flat} flat tiles do not fill a "
                         f"{n_side}×{n_side} grid")
    n_b = v.b_tiles[index % len(v.b_tiles)]
    tiles = [k for k in range(len(PATTERNS)) for _ in range(v.textures)] + ["a"] * (v.flat - n_b) + ["b"] * n_b
    rng = np.random.default_rng([seed, {"train": 0, "test": 1}[split], index])
    order = rng.permutation(len(tiles))
    out = np.zeros((v.size, v.size, 3), dtype=np.uint8)
    for pos, t in enumerate(order):
        kind = tiles[t]
        r, c = divmod(pos, n_side)
        block = out[r * v.tile:(r + 1) * v.tile, c * v.tile:(c + 1) * v.tile]
        if isinstance(kind, str):
            block[:] = getattr(palette, kind)
        else:
            low, high = palette.textures[kind]
            block[:] = np.where(_pattern(kind, v.tile)[..., None], high, low)
    return out


def _manifest(folder: Path) -> None:
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}" for p in sorted(folder.glob("*.png"))]
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def write(out: str | os.PathLike, name: str = "controls", seed: int = DEFAULT_SEED) -> Path:
    """Write a control data set: ``out/train/*.png``, ``out/test/*.png`` (each with a SHA256SUMS manifest) and
    ``out/controls.json`` (the generator's parameters, read back by :func:`spec`).

    Args:
        out: the folder to create (or refill).
        name: a key of :data:`VARIANTS`.
        seed: the generator seed (training and test images are drawn from different streams of it).
    """
    if name not in VARIANTS:
        raise ValueError(f"unknown control data set {name!r}; available: {', '.join(VARIANTS)}")
    v, palette = VARIANTS[name], Palette.make()
    out = Path(out)
    for split, n in (("train", v.n_train), ("test", v.n_test)):
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(image(v, palette, seed, split, i)).save(folder / f"{split}{i:05d}.png")
        _manifest(folder)
    meta = {"variant": asdict(v), "seed": seed, "generator_version": GENERATOR_VERSION,
            "palette": asdict(palette), "lab_a": palette.lab("a").tolist(), "lab_b": palette.lab("b").tolist(),
            "b_share": v.b_share, "patterns": list(PATTERNS)}
    tmp = out / "controls.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    tmp.replace(out / "controls.json")  # written last: a folder with controls.json is complete
    return out


def cache_root() -> Path:
    """Where ``--data controls`` keeps its generated folders: ``COLORBENCH_CACHE``, else ``~/.cache/colorbench``."""
    return Path(os.environ.get("COLORBENCH_CACHE") or Path.home() / ".cache" / "colorbench").expanduser()


def ensure(name: str, seed: int = DEFAULT_SEED) -> Path:
    """The cached data folder of a control variant, generated on first use (a few seconds)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown control data set {name!r}; available: {', '.join(VARIANTS)}")
    what = json.dumps([asdict(VARIANTS[name]), GENERATOR_VERSION, L_FLAT, L_LOW, L_HIGH, AB_A, AB_B, AB_TEXTURE])
    folder = cache_root() / f"{name}-seed{seed}-{hashlib.sha1(what.encode()).hexdigest()[:8]}"
    if (folder / "controls.json").is_file():
        return folder
    # Generated into a folder of its own and renamed into place, so that workers started together never read
    # images that another one is still writing; the first rename wins, the others drop their copy.
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        write(tmp, name, seed)
        for _ in range(3):
            try:
                os.rename(tmp, folder)
                break
            except OSError:
                if (folder / "controls.json").is_file():
                    break  # another worker finished first
                shutil.rmtree(folder, ignore_errors=True)  # an unfinished folder (a killed run): replace it
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def spec(folder: str | os.PathLike) -> dict | None:
    """The generator's parameters of a control data folder (or of its ``train``/``test`` subfolder); None if the
    folder is not one."""
    folder = Path(folder)
    for f in (folder / "controls.json", folder.parent / "controls.json"):
        if f.is_file():
            try:
                return json.loads(f.read_text())
            except (OSError, ValueError):
                return None
    return None


def split_of(name: str | None) -> tuple[str, str] | None:
    """(variant, ``train`` or ``test``) for a control data set's name (``controls``, ``controls-test``, ...); None
    for any other name."""
    if not isinstance(name, str):
        return None
    if name in VARIANTS:
        return name, "train"
    if name.endswith("-test") and name[: -len("-test")] in VARIANTS:
        return name[: -len("-test")], "test"
    return None


# ----------------------------------------------------------------------------------------------- known answers
#: The reference rows of a control test set: row name → (loss it belongs to, how the flat tiles are predicted).
#: Texture tiles are predicted exactly (their colour is learnable) by every row, in the form the loss decodes
#: (the bins rows decode the soft-encoded true colour).
BAYES_ROWS = {
    "bayes:mse": "the mean of A and B at the split",
    "bayes:l1": "the per-channel median of A and B at the split",
    "bayes:huber": "the per-channel minimiser of the expected Huber loss (delta 0.1 of ab/110)",
    "bayes:kl": "the annealed mean (T = 0.38) of the soft-encoded mixture of A and B",
    "bayes:kl_T1": "the mean (T = 1) of the soft-encoded mixture",
    "bayes:kl_mode": "the centre of the mixture's most probable bin",
    "bayes:kl_rebal": "the annealed mean (T = 0.38) of the mixture reweighted by the rebalancing weights",
}


def _huber_minimiser(a: float, b: float, share_b: float, delta: float = 0.1, scale: float = 110.0) -> float:
    """argmin_x (1 − s)·h((x − a)/scale) + s·h((x − b)/scale) for the Huber function h (by a fine grid)."""
    x = np.linspace(min(a, b), max(a, b), 200_001)

    def h(r):
        r = np.abs(r) / scale
        return np.where(r < delta, 0.5 * r * r, delta * (r - 0.5 * delta))

    return float(x[np.argmin((1 - share_b) * h(x - a) + share_b * h(x - b))])


class Bayes:
    """The Bayes-optimal colorizations of a control test set under each loss, from the generator's parameters.

    Args:
        meta: :func:`spec` of the data folder.
        class_weights: the rebalancing weights of the KL bins (``ABBins.rebalance_weights`` of the training prior),
            for ``bayes:kl_rebal``; without them that row is left out.
    """

    def __init__(self, meta: dict, class_weights: torch.Tensor | None = None):
        self.meta = meta
        self.bins = ABBins()
        self.a, self.b = (torch.tensor(meta["palette"][k], dtype=torch.uint8) for k in ("a", "b"))
        self.lab_a, self.lab_b = (torch.tensor(meta[k], dtype=torch.float64) for k in ("lab_a", "lab_b"))
        self.share = float(meta["b_share"])
        self.class_weights = class_weights

    def rows(self) -> list[str]:
        return [r for r in BAYES_ROWS if r != "bayes:kl_rebal" or self.class_weights is not None]

    def flat_mask(self, u8: torch.Tensor) -> torch.Tensor:
        """``B×1×H×W``: the pixels of a flat tile (their 8-bit triple is A's or B's)."""
        is_a = (u8 == self.a.view(1, 3, 1, 1).to(u8.device)).all(1, keepdim=True)
        is_b = (u8 == self.b.view(1, 3, 1, 1).to(u8.device)).all(1, keepdim=True)
        return is_a | is_b

    def _mixture(self, weights=(1.0, 1.0)) -> torch.Tensor:
        """The flat tiles' target distribution over the bins: (1 − s)·enc(A) + s·enc(B), each term times its
        weight, normalised."""
        enc = self.bins.encode(torch.stack([self.lab_a[1:], self.lab_b[1:]]).float().view(2, 2, 1, 1))[:, :, 0, 0]
        wa, wb = (1 - self.share) * weights[0], self.share * weights[1]
        return (wa * enc[0] + wb * enc[1]) / (wa + wb)

    def flat_ab(self, row: str) -> torch.Tensor:
        """The constant ab a row predicts on flat tiles."""
        A, B, s = self.lab_a[1:].float(), self.lab_b[1:].float(), self.share
        if row == "bayes:mse":
            return (1 - s) * A + s * B
        if row == "bayes:l1":
            return A if s < 0.5 else B
        if row == "bayes:huber":
            return torch.tensor([_huber_minimiser(float(A[c]), float(B[c]), s) for c in range(2)])
        weights = (1.0, 1.0)
        if row == "bayes:kl_rebal":
            idx = self.bins.hard_index(torch.stack([A, B]).view(2, 2, 1, 1)).flatten()
            weights = tuple(float(self.class_weights[i]) for i in idx)
        p = self._mixture(weights)
        if row == "bayes:kl_mode":
            return self.bins.centres[int(p.argmax())]
        T = 1.0 if row == "bayes:kl_T1" else ANNEAL_T
        return self.bins.decode(torch.log(p.clamp_min(1e-30)).view(1, -1, 1, 1), T)[0, :, 0, 0]

    def texture_ab(self, row: str, ab: torch.Tensor) -> torch.Tensor:
        """What a row predicts where the colour is learnable: the true ab, decoded as the loss's head decodes it."""
        if not row.startswith("bayes:kl"):
            return ab
        p = self.bins.encode(ab.float())
        if row == "bayes:kl_mode":
            return self.bins.centres.to(ab.device)[p.argmax(1)].permute(0, 3, 1, 2)
        T = 1.0 if row == "bayes:kl_T1" else ANNEAL_T
        return self.bins.decode(torch.log(p.clamp_min(1e-30)), T)

    def predict_ab(self, row: str, u8: torch.Tensor) -> torch.Tensor:
        """``B×2×H×W`` ab of a row's colorization of uint8 images ``u8``."""
        _, ab = split_lab(u8)  # uint8 in: the exact conversion the metrics use for the truth
        const = self.flat_ab(row).to(ab).view(1, 2, 1, 1).expand_as(ab)
        return torch.where(self.flat_mask(u8), const, self.texture_ab(row, ab).to(ab))
