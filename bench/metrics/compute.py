"""Metrics: colorize held-out images and score them against the originals (used by training, by the baselines and
by the ``bench.evaluate`` command). What the metrics are, their directions and names, is the metric table
(``bench.metrics.stats.METRICS``); this module runs their computations.

PSNR and SSIM are computed by torchmetrics on RGB in [0, 1] (data range 1.0), one value per image, then averaged.
RGB is rebuilt from the true L and the predicted ab, so only colour errors count. Colourfulness is the metric of
Hasler & Süsstrunk (2003) on 0-255 RGB. ``delta_e2000`` is the mean CIEDE2000 difference over the pixels (Lab of
both RGB images; lower is better). ``lpips`` is LPIPS-VGG (``models.lpips``; lower is better): it needs a VGG-16
backbone, ``imagenet`` or explicitly ``random``; when the ImageNet checkpoint is missing the values are NaN and the
run's ``lpips_backbone`` says ``missing`` (see :func:`lpips_metric`).

Per-set metrics (one value per test set): ``delta_cf`` = |mean colourfulness of the colorizations − mean
colourfulness of the ground truth|; ``fid`` and ``kid`` (Fréchet and kernel Inception distances, computed here as
torchmetrics computes them) on the 2048-d pool features of the standard FID Inception-v3 (torch-fidelity's weights,
read from torch's hub cache, downloaded when online; without them the values are NaN and ``inception_backbone``
says ``missing``).

The ground truth's network features (LPIPS activations, Inception features) depend on the test set only: they are
computed once per test images, network and batch size (:class:`Truth`), not once per scored model.
"""
from __future__ import annotations

import io
import importlib
import math
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from bench.core.device import autocast
from bench.core.records import atomic_write_bytes, slug
from bench.data.colour import delta_e2000, merge_lab, rgb_to_lab, split_lab
from bench.metrics import stats

#: Up to this many bytes of a test set's LPIPS truth activations are kept between scored models.
TRUTH_CACHE_BYTES = 1 << 30
#: The Inception used by fid/kid: ``inception`` (the standard FID weights) or ``random`` (tests only: every row
#: then says inception_backbone=random).
INCEPTION_BACKBONE = "inception"
KID_SUBSETS = 100  # KID: mean and spread over this many random subsets (torchmetrics' defaults: 100 × 1000)
KID_SUBSET_SIZE = 1000


def psnr_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) of each image of two ``B×3×H×W`` batches in [0, 1]."""
    return peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM (Gaussian window 11, σ 1.5) of each image of two ``B×3×H×W`` batches in [0, 1]."""
    return structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none")


def colourfulness(rgb: torch.Tensor, absolute: bool = False) -> torch.Tensor:
    """Hasler & Süsstrunk's colourfulness M = σ_rgyb + 0.3 μ_rgyb of each image (``B×3×H×W`` in [0, 1]);
    ``absolute``: of the absolute opponent channels, as DDColor's evaluation code computes it."""
    x = rgb.float() * 255.0
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    rg = (r - g).flatten(1)
    yb = (0.5 * (r + g) - b).flatten(1)
    if absolute:
        rg, yb = rg.abs(), yb.abs()
    std = torch.sqrt(rg.std(dim=1, unbiased=False) ** 2 + yb.std(dim=1, unbiased=False) ** 2)
    mean = torch.sqrt(rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2)
    return std + 0.3 * mean


def delta_e2000_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean CIEDE2000 difference over the pixels of each image of two ``B×3×H×W`` RGB batches in [0, 1]."""
    return delta_e2000(rgb_to_lab(pred), rgb_to_lab(target)).flatten(1).mean(dim=1).float()


def colourfulness_of_pred(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The ``colourfulness`` metric: the colorization's own colourfulness (the truth is not used)."""
    return colourfulness(pred)


def lpips_per_image(pred: torch.Tensor, target: torch.Tensor, net) -> torch.Tensor:
    """LPIPS distance of each image (``net``: the network of :func:`lpips_metric`)."""
    return net(pred, target).float()


def colourfulness_features(rgb: torch.Tensor, net=None) -> torch.Tensor:
    """Per-image features of ``delta_cf``: each image's colourfulness (``B×1``)."""
    return colourfulness(rgb.float())[:, None]


def delta_cf(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """ΔCF: |mean colourfulness of the colorizations − mean colourfulness of the ground truth|."""
    return abs(float(pred.double().mean()) - float(truth.double().mean()))


def colourfulness_ddcolor(pred: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """The colourfulness variant of DDColor's evaluation code: σ and μ of the *absolute* opponent channels
    |R − G| and |½(R + G) − B| (0–255 RGB), M = √(σ_rg² + σ_yb²) + 0.3 √(μ_rg² + μ_yb²); for comparing ΔCF with
    tables that used it (it is lower than Hasler & Süsstrunk's, see results/controls-cpu.md)."""
    return colourfulness(pred, absolute=True)


#: Below this RMS deviation from its own mean ab (Lab units) a prediction counts as one constant colour (r = 0).
SPATIAL_MIN_AB = 0.05


def spatial_colour(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """How much of the colour a prediction gets right beyond a tint: the correlation of predicted and true ab over
    the pixels of each image after each image's own mean ab is removed (both channels together). 0 for any
    constant colour (grey, the mean colour, a per-image tint); 1 for the truth."""
    pa, ta = rgb_to_lab(pred)[:, 1:].double().flatten(2), rgb_to_lab(target)[:, 1:].double().flatten(2)
    pa, ta = pa - pa.mean(-1, keepdim=True), ta - ta.mean(-1, keepdim=True)
    num = (pa * ta).sum(dim=(1, 2))
    den = torch.sqrt(pa.square().sum(dim=(1, 2)) * ta.square().sum(dim=(1, 2)))
    # a constant colour comes back from RGB with float noise of ~1e-4 ab; a correlation of that noise is no colour
    flat = pa.square().mean(dim=(1, 2)).sqrt() < SPATIAL_MIN_AB
    return torch.where(flat | (den <= 1e-9), torch.zeros_like(num), num / den.clamp_min(1e-12)).float()


def squared_error_features(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image features of ``psnr_pooled``: each image's mean squared RGB error (``B×1``, float64)."""
    return (pred.double() - target.double()).square().flatten(1).mean(1, keepdim=True)


def pooled_psnr(pred: torch.Tensor, truth: torch.Tensor | None = None) -> float:
    """Pooled PSNR (dB): −10 log10 of the mean squared error over every pixel of the set (the images are crops of
    one size, so the mean of their per-image MSEs). Beside the mean of per-image PSNRs: the two rank colorizers
    differently when errors are spread unevenly over the images."""
    mse = float(pred.double().mean())
    return math.inf if mse <= 0 else -10.0 * math.log10(mse)


def inception_features(rgb: torch.Tensor, net) -> torch.Tensor:
    """2048-d pool features of each image (``net``: the network of :func:`inception_metric`)."""
    return net(rgb).double()


def fid(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (``n×d``, ``m×d``), as torchmetrics'
    ``FrechetInceptionDistance`` computes it (sample covariances, ddof 1). Tr √(Σ₁Σ₂) is taken as the nuclear norm
    of ``A Bᵀ`` (A, B the centred features) / √((n−1)(m−1)): the same value from an n×m instead of a d×d problem,
    cheap enough for a bootstrap."""
    a, b = pred.double(), truth.double()
    if len(a) < 2 or len(b) < 2:
        return math.nan
    mu1, mu2 = a.mean(0), b.mean(0)
    ac, bc = a - mu1, b - mu2
    n, m = len(a), len(b)
    tr1 = ac.square().sum() / (n - 1)
    tr2 = bc.square().sum() / (m - 1)
    cross = torch.linalg.matrix_norm(ac @ bc.T, ord="nuc") / math.sqrt((n - 1) * (m - 1))
    return float((mu1 - mu2).square().sum() + tr1 + tr2 - 2 * cross)


def poly_kernel(x: torch.Tensor, y: torch.Tensor, degree: int = 3, coef: float = 1.0) -> torch.Tensor:
    """The polynomial kernel k(x, y) = (x·y / d + coef)^degree between the rows of ``x`` (``n×d``) and ``y``
    (``m×d``): an ``n×m`` matrix.

    Args:
        x, y: feature sets with the same dimension ``d``.
        degree: the kernel's power (3 for KID).
        coef: the constant added to the scaled dot product (1 for KID).
    """
    return (x @ y.T / x.shape[1] + coef) ** degree


def poly_mmd(x: torch.Tensor, y: torch.Tensor, degree: int = 3, coef: float = 1.0) -> torch.Tensor:
    """The unbiased estimate of the squared maximum mean discrepancy between two feature sets under
    :func:`poly_kernel`: the mean of the off-diagonal entries of K_xx and of K_yy minus twice the mean of K_xy
    (Bińkowski et al. 2018; torchmetrics' ``poly_mmd`` for sets of equal size).

    Args:
        x, y: feature sets (``n×d``, ``m×d``, at least 2 rows each); symmetric in ``x`` and ``y``.
        degree, coef: as :func:`poly_kernel`.
    """
    n, m = len(x), len(y)
    k_xx, k_yy, k_xy = poly_kernel(x, x, degree, coef), poly_kernel(y, y, degree, coef), poly_kernel(x, y, degree, coef)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (n * (n - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return within_x + within_y - 2 * k_xy.mean()


def kid(pred: torch.Tensor, truth: torch.Tensor, subsets: int | None = None, subset_size: int | None = None,
        seed: int = 0) -> dict[str, float]:
    """Kernel Inception distance (the unbiased polynomial-kernel MMD², :func:`poly_mmd`, as torchmetrics' KID): the
    mean over ``subsets`` random subsets of ``subset_size`` images of each set (default: 100 of min(1000, n/2)) and
    its spread (``kid_std``, the SD over the subsets). Seeded: the same features give the same value."""
    a, b = pred.double(), truth.double()
    n = min(len(a), len(b))
    if n < 2:
        return {"kid": math.nan, "kid_std": math.nan}
    subsets = KID_SUBSETS if subsets is None else subsets
    size = subset_size or min(KID_SUBSET_SIZE, max(2, n // 2))
    g = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(subsets):
        ia, ib = torch.randperm(len(a), generator=g)[:size], torch.randperm(len(b), generator=g)[:size]
        vals.append(poly_mmd(b[ib], a[ia]))
    v = torch.stack(vals)
    return {"kid": float(v.mean()), "kid_std": float(v.std(unbiased=False))}


def resolve(ref):
    """A metric's computation: a callable, or ``"module:function"`` imported now; None stays None."""
    if ref is None or callable(ref):
        return ref
    mod, _, name = str(ref).partition(":")
    return getattr(importlib.import_module(mod), name)


# ------------------------------------------------------------------------------------------------ networks
_NETS: dict = {}  # (network, backbone, device) -> (net or None, status)
_LPIPS = _NETS  # the name tests clear


def lpips_metric(backbone: str, device) -> tuple[object | None, str]:
    """The LPIPS-VGG network of the ``lpips`` metric on ``device`` (built once per process) and its status.

    Args:
        backbone: ``"imagenet"`` or ``"random"`` (the configuration's ``lpips_backbone``).
        device: where the network runs.

    Returns:
        (network, ``"imagenet"`` | ``"random"``), or (None, ``"missing"``) when the ImageNet checkpoint cannot be
        had: the metric is then NaN and every row says so.
    """
    from models.lpips import LPIPS, read_lin_weights
    from models.vgg import EncoderWeightsError

    key = ("lpips", backbone, str(device))
    if key not in _NETS:
        read_lin_weights()  # damaged shipped weights are an error (EncoderWeightsError), never a "missing" metric
        try:
            _NETS[key] = (LPIPS(backbone).to(device), backbone)
        except EncoderWeightsError:
            _NETS[key] = (None, "missing")
    return _NETS[key]


def release_networks() -> None:
    """Drop the metric networks built so far (``lpips_metric``, ``inception_metric``): a process that scores
    nothing more, e.g. the launcher of ``ablate --workers`` once it has checked them, frees their memory."""
    _NETS.clear()


class _RandomInception(torch.nn.Module):
    """A seeded, untrained torchvision Inception-v3 on 75×75 inputs (its smallest), unit-length features: tests
    only, labelled ``random`` in every row; never the standard FID network."""

    def __init__(self, seed: int = 0):
        super().__init__()
        from torchvision.models import inception_v3

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = inception_v3(weights=None, aux_logits=False, init_weights=False)
        self.net.fc = torch.nn.Identity()
        self.eval()

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(rgb.float(), size=(75, 75), mode="bilinear", align_corners=False)
        f = self.net(x * 2 - 1)  # untrained batch norms do not normalise: unit-length features keep FID/KID finite
        return f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)


class _StandardInception(torch.nn.Module):
    """torchmetrics' ``NoTrainInceptionV3`` (torch-fidelity's FID Inception, 2048-d pool features) on RGB in
    [0, 1]."""

    def __init__(self):
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"])

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.net((rgb.float().clamp(0, 1) * 255).round().to(torch.uint8)).reshape(len(rgb), -1)


def inception_metric(backbone: str | None = None, device="cpu") -> tuple[object | None, str]:
    """The Inception-v3 of ``fid``/``kid`` on ``device`` (built once per process) and its status.

    ``inception`` (default, :data:`INCEPTION_BACKBONE`): the standard FID weights through torchmetrics and
    torch-fidelity (``pip install colorbench[fid]``), from torch's hub cache or downloaded; (None, ``"missing"``)
    when torch-fidelity or the weights cannot be had (offline): the values are then NaN and every row says so.
    ``random``: a seeded untrained network (tests; flagged ``random`` in every row).
    """
    backbone = backbone or INCEPTION_BACKBONE
    key = ("inception", backbone, str(device))
    if key not in _NETS:
        if backbone == "random":
            _NETS[key] = (_RandomInception().to(device), "random")
        else:
            try:
                _NETS[key] = (_StandardInception().to(device), "inception")
            except (ImportError, ModuleNotFoundError, OSError, RuntimeError, ValueError):
                # no torch-fidelity, or its weights neither cached nor downloadable (URLError is an OSError)
                _NETS[key] = (None, "missing")
    return _NETS[key]


def networks(device, lpips_backbone: str = "imagenet", names=None) -> dict[str, tuple[object | None, str]]:
    """``{network: (net or None, status)}`` for the networks the metric table needs (``names``: only those)."""
    getters = {"lpips": lambda: lpips_metric(lpips_backbone, device), "inception": lambda: inception_metric(None, device)}
    need = {m.network for m in stats.METRICS.values() if m.network}
    return {n: getters[n]() for n in sorted(need) if names is None or n in names}


# ------------------------------------------------------------------------------------------------ truth features
class Truth:
    """The ground truth's network features of one test-image tensor, computed once and reused by every model
    scored on it (per network, status and batch size: batches are scored exactly as without the cache)."""

    def __init__(self):
        self.batches: dict = {}  # (network status, device, batch size, start) -> per-image activations
        self.sets: dict = {}  # (metric name, status, device) -> N×k features of the whole set
        self.bytes = 0

    def batch(self, key, compute):
        if key in self.batches:
            return self.batches[key]
        out = compute()
        size = sum(t.numel() * t.element_size() for t in (out if isinstance(out, (list, tuple)) else [out]))
        if self.bytes + size <= TRUTH_CACHE_BYTES:
            self.batches[key] = out
            self.bytes += size
        return out


_TRUTH: dict[int, tuple] = {}


def truth_of(images: torch.Tensor) -> Truth:
    """The :class:`Truth` cache of a test-image tensor (dropped with the tensor)."""
    k = id(images)
    hit = _TRUTH.get(k)
    if hit is None or hit[0]() is not images:
        _TRUTH[k] = (weakref.ref(images, lambda _r, k=k: _TRUTH.pop(k, None)), Truth())
    return _TRUTH[k][1]


# ------------------------------------------------------------------------------------------------ scoring
@dataclass
class Scores:
    """A colorizer's scores on a test set: per-image values, per-set values, and the status (backbone) of every
    network the table needs (``missing``: that metric's values are NaN)."""

    per_image: dict[str, list[float]]
    per_set: dict[str, float] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    features: dict[str, torch.Tensor] = field(default_factory=dict)  # per-set metrics' features, per image
    truth: dict[str, torch.Tensor] = field(default_factory=dict)  # the same features of the ground truth

    @property
    def n(self) -> int:
        return len(next(iter(self.per_image.values()), []))

    def row(self) -> dict:
        """The run row's metric columns: per-image means, per-set values and the backbones."""
        means = {k: (sum(v) / len(v) if v else math.nan) for k, v in self.per_image.items()}
        return {**means, **self.per_set, **self.status}


def _pixel_metrics(names=None) -> list[stats.Metric]:
    return [m for m in stats.METRICS.values() if m.per == "image" and m.compute is not None
            and (names is None or m.name in names)]


def _set_metrics() -> list[stats.Metric]:
    return [m for m in stats.METRICS.values() if m.per == "set"]


@torch.no_grad()
def score_set(colorize_batch, images: torch.Tensor, device, batch_size: int = 16, nets: dict | None = None,
              only=None) -> Scores:
    """Score a colorizer on uint8 test images (``N×3×H×W``) with every metric of the table.

    Args:
        colorize_batch: ``u8 batch (on device), start index -> predicted RGB in [0, 1]`` (a model, a baseline).
        images: the test images (centre crops).
        device: where to run.
        batch_size: images per forward pass.
        nets: :func:`networks` (None: metrics that need a network are left out, as in validation).
        only: names of per-image metrics to compute (None: all; per-set metrics only when None).
    """
    truth = truth_of(images)
    nets = nets or {}
    per_image: dict[str, list[float]] = {}
    feats: dict[str, list[torch.Tensor]] = {}
    true_feats: dict[str, list[torch.Tensor]] = {}
    set_ms = [m for m in _set_metrics() if only is None and (m.network is None or m.network in nets)]
    for s in range(0, len(images), batch_size):
        u8 = images[s : s + batch_size].to(device)
        target = u8.float() / 255.0
        pred = colorize_batch(u8, s).float()
        for name, v in _pixel_values(pred, target, u8, s, nets, only, truth, device, batch_size):
            per_image.setdefault(name, []).extend(v.float().cpu().tolist())
        _set_features(pred, target, set_ms, nets, feats, true_feats, truth, (str(device), batch_size))
    for tkey, parts in true_feats.items():
        truth.sets[tkey] = torch.cat(parts)
    out = Scores(per_image, status={stats.NETWORKS[n][0]: st for n, (_, st) in nets.items()})
    for m in set_ms:
        fkey = (str(m.features), m.network)
        if fkey not in feats:
            continue
        status = nets.get(m.network, (None, ""))[1]
        if not isinstance(feats[fkey], torch.Tensor):  # fid and kid share one tensor (saved once)
            feats[fkey] = torch.cat(feats[fkey])
        out.features[m.name] = feats[fkey]
        out.truth[m.name] = truth.sets[(*fkey, status, str(device), batch_size)]
        v = resolve(m.compute)(out.features[m.name], out.truth[m.name])
        out.per_set.update(v if isinstance(v, dict) else {m.name: float(v)})
    if only is None:
        for m in _set_metrics():  # a missing network: NaN, and its status column says missing
            out.per_set.setdefault(m.name, math.nan)
    return out


def _pixel_values(pred, target, u8, s: int, nets: dict, only, truth, device, batch_size: int):
    """(name, per-image values) of every per-image metric on one batch; a metric whose network is not loaded is
    left out, one whose network is missing gives NaN."""
    for m in _pixel_metrics(only):
        if m.network is None:
            yield m.name, resolve(m.compute)(pred, target)
        elif m.network not in nets:
            continue
        else:
            net, status = nets[m.network]
            if net is None:
                yield m.name, torch.full((len(u8),), math.nan)
            elif hasattr(net, "features") and hasattr(net, "distance"):  # truth activations: once per set
                ft = truth.batch((m.network, status, str(device), batch_size, s), lambda: net.features(target))
                yield m.name, net.distance(net.features(pred), ft).float()
            else:
                yield m.name, resolve(m.compute)(pred, target, net)


def _set_features(pred, target, set_ms: list, nets: dict, feats: dict, true_feats: dict, truth, where: tuple) -> None:
    """The per-set metrics' features of one batch (fid and kid share one pass), appended to ``feats``; the truth's,
    unless cached for this set, to ``true_feats``."""
    for fkey in dict.fromkeys((str(m.features), m.network) for m in set_ms):
        net, status = nets.get(fkey[1], (None, ""))
        if fkey[1] is not None and net is None:
            continue
        first = next(m for m in set_ms if (str(m.features), m.network) == fkey)
        fn = resolve(first.features)
        # a paired metric's features compare the colorization with the truth (pooled PSNR: squared errors);
        # the truth's own are then zeros (no error), kept only so that every per-set metric has the same form
        feats.setdefault(fkey, []).append((fn(pred, target) if first.paired else fn(pred, net)).cpu())
        tkey = (*fkey, status, *where)
        if tkey not in truth.sets:
            true_feats.setdefault(tkey, []).append(torch.zeros(len(pred), 1, dtype=torch.float64) if first.paired
                                                   else fn(target, net).cpu())


def whole_set(parts: list[Scores]) -> Scores:
    """The scores of several parts of one test set (e.g. the grey baseline on every fold's test images) as one:
    per-image values joined, per-set metrics recomputed on all the images together."""
    if len(parts) == 1:
        return parts[0]
    out = Scores({k: [v for p in parts for v in p.per_image.get(k, [])] for k in parts[0].per_image},
                 status=dict(parts[0].status))
    for name in parts[0].features:
        m = stats.METRICS[name]
        out.features[name] = torch.cat([p.features[name] for p in parts])
        out.truth[name] = torch.cat([p.truth[name] for p in parts])
        v = resolve(m.compute)(out.features[name], out.truth[name])
        out.per_set.update(v if isinstance(v, dict) else {name: float(v)})
    for k, v in parts[0].per_set.items():
        out.per_set.setdefault(k, v if math.isnan(v) else math.nan)
    return out


def kid_full(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """KID on the whole sets (one subset of every image): the statistic of the bootstrap over images (100 subsets
    per resample would be too slow)."""
    return float(poly_mmd(truth.double(), pred.double())) if min(len(pred), len(truth)) >= 2 else math.nan


kid.resampled = kid_full  # see set_value


def set_value(m: stats.Metric, pred: torch.Tensor, truth: torch.Tensor, resampled: bool = False) -> float:
    """A per-set metric's value from per-image features (``resampled``: the statistic of a bootstrap resample,
    which may be a cheaper form of the same estimate, e.g. KID without subsets)."""
    fn = resolve(m.compute)
    fn = getattr(fn, "resampled", fn) if resampled else fn
    v = fn(pred, truth)
    return float(v[m.name] if isinstance(v, dict) else v)


# ------------------------------------------------------------------------------------------------ saved features
def features_file(folder: Path, model, cell, seed, fold=None) -> Path:
    """Where the per-set metrics' per-image features of one run on one test set are kept (``folder``: the run's
    ``features/<test set>/``), for the paired bootstrap between cells (``bench.reporting.leaderboard``)."""
    fold_part = "" if fold is None or str(fold) == "" else f"__fold{fold}"
    return Path(folder) / f"{slug(model)}__{slug(cell)}__seed{seed}{fold_part}.pt"


def save_features(path: Path, scores: Scores, image_keys: list[str]) -> None:
    """Save a run's per-set features (and the truth's, same images in the same order); nothing when there are none."""
    if not scores.features:
        return
    done: dict[int, torch.Tensor] = {}  # fid and kid share their features: one copy in the file

    def f32(t):
        if id(t) not in done:
            done[id(t)] = t.float()
        return done[id(t)]

    buf = io.BytesIO()  # then a temporary file of its own: two workers scoring one baseline at once shared one .tmp
    torch.save({"images": list(image_keys), "pred": {k: f32(v) for k, v in scores.features.items()},
                "truth": {k: f32(v) for k, v in scores.truth.items()}}, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_features(path: Path) -> dict | None:
    """A file of :func:`save_features` (None if absent or unreadable)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError):
        return None


@torch.no_grad()
def colorize(model, L: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
    """Predicted ab for lightness ``L`` (``B×1×H×W``), in evaluation mode."""
    out = model(L, ref) if getattr(model, "needs_reference", False) else model(L)
    return model.to_ab(out)


def model_colorizer(model, device, refs: torch.Tensor | None = None, autocast_dtype: torch.dtype | None = None,
                    batch_size: int = 16):
    """``colorize_batch`` of :func:`score_set` for a model (``refs``: its uint8 colour references, per image)."""

    def run(u8, start):
        L, _ = split_lab(u8)
        ref = refs[start : start + len(u8)].to(device).float() / 255.0 if refs is not None else None
        with autocast(device, autocast_dtype):
            ab = colorize(model, L, ref)
        return merge_lab(L, ab.float())

    return run


def grey_colorizer(u8, start=0):
    """``colorize_batch`` of the greyscale baseline: ab = 0 everywhere. Every colorizer must beat it."""
    L, ab = split_lab(u8)
    return merge_lab(L, torch.zeros_like(ab))


@torch.no_grad()
def evaluate(model, images: torch.Tensor, device, batch_size: int = 16, refs: torch.Tensor | None = None,
             autocast_dtype: torch.dtype | None = None, nets: dict | None = None, only=None) -> Scores:
    """Score a model on uint8 images (``N×3×H×W``), batch by batch (see :func:`score_set`).

    Args:
        model: a registered colorization model (switched to eval mode, then back).
        images: uint8 test images, already preprocessed (centre crops).
        device: where to run.
        batch_size: images per forward pass.
        refs: uint8 colour references, one per image, for models with ``needs_reference``.
        autocast_dtype: e.g. ``torch.bfloat16`` on CUDA; None for full precision.
        nets: :func:`networks`, for the metrics that need one (validation does without).
        only: per-image metrics to compute (validation: ``["psnr"]``).
    """
    was_training = model.training
    model.eval()
    try:
        return score_set(model_colorizer(model, device, refs, autocast_dtype), images, device, batch_size, nets, only)
    finally:
        model.train(was_training)


@torch.no_grad()
def constant_colorizer(ab: tuple[float, float] = (0.0, 0.0)):
    """``colorize_batch`` of a constant-colour baseline: the same ``ab`` at every pixel (ab = 0: grey)."""

    def run(u8, start=0):
        L, true_ab = split_lab(u8)
        const = torch.tensor(ab, dtype=true_ab.dtype, device=true_ab.device).view(1, 2, 1, 1).expand_as(true_ab)
        return merge_lab(L, const)

    return run


def oracle_tint_colorizer(u8, start=0):
    """``colorize_batch`` of the oracle per-image tint: each image's own mean ab at every pixel. It sees the
    answer, so it is a reference row (never ranked): a cell above it learned more than one tint per image."""
    L, ab = split_lab(u8)
    return merge_lab(L, ab.mean(dim=(2, 3), keepdim=True).expand_as(ab))


def ab_colorizer(predict_ab):
    """``colorize_batch`` of a colorizer given as ``uint8 batch -> ab`` (the control data's Bayes rows)."""

    def run(u8, start=0):
        L, _ = split_lab(u8)
        return merge_lab(L, predict_ab(u8))

    return run


@torch.no_grad()
def evaluate_grey(images: torch.Tensor, device="cpu", batch_size: int = 16, nets: dict | None = None,
                  ab: tuple[float, float] = (0.0, 0.0)) -> Scores:
    """A constant-colour baseline's scores. ab = 0 (the default) is the greyscale baseline; the training images'
    mean ab is the mean-colour baseline (a global tint). Every colorizer must beat both."""
    return score_set(constant_colorizer(ab), images, device, batch_size, nets)


def mean_scores(parts: list[Scores]) -> Scores:
    """Several colorizers' scores on the same images as one: each image's value and each per-set value is the mean
    over the parts (e.g. every fold's mean colour scoring a whole other test set). No features are kept: a set-level
    metric's paired bootstrap resamples one colorizer's features, and a mean of several colorizers has none, so
    such a row's FID/KID/ΔCF have no interval against it."""
    if len(parts) == 1:
        return parts[0]
    per_image = {k: [sum(p.per_image[k][i] for p in parts) / len(parts) for i in range(parts[0].n)]
                 for k in parts[0].per_image}
    per_set = {k: sum(p.per_set.get(k, math.nan) for p in parts) / len(parts) for k in parts[0].per_set}
    return Scores(per_image, per_set, dict(parts[0].status))


@torch.no_grad()
def score_test(model, images: torch.Tensor, device, batch_size: int = 16,
               autocast_dtype: torch.dtype | None = None, nets: dict | None = None) -> Scores:
    """Test scores of a trained model, scored the one way every result is: a reference-based model gets each
    image as its own colour reference, then is scored again with the next photo's (``psnr_ref_other``: how much
    colour the reference carries); a bins head's logits are also decoded at T = 1 and at the mode (``psnr_t1``,
    ``psnr_mode``).

    Args:
        model: a registered colorization model.
        images: uint8 test images (``N×3×H×W``, centre crops).
        device: where to run.
        batch_size: images per forward pass (the training batch size: results do not depend on it beyond rounding).
        autocast_dtype: as in :func:`evaluate`.
        nets: as in :func:`evaluate`.
    """
    needs_ref = getattr(model, "needs_reference", False)
    out = evaluate(model, images, device, batch_size, images if needs_ref else None, autocast_dtype, nets)
    if needs_ref:
        other = evaluate(model, images, device, batch_size, images.roll(1, 0), autocast_dtype, only=["psnr"])
        out.per_image["psnr_ref_other"] = other.per_image["psnr"]
    head = getattr(model, "color", None)
    if getattr(head, "head", None) == "bins":  # the same logits decoded at T = 1 (the mean) and at the mode
        annealed = head.temperature
        try:
            for name, t in (("psnr_t1", 1.0), ("psnr_mode", 0.0)):
                head.temperature = t
                again = evaluate(model, images, device, batch_size, images if needs_ref else None, autocast_dtype,
                                 only=["psnr"])
                out.per_image[name] = again.per_image["psnr"]
        finally:
            head.temperature = annealed
    return out
