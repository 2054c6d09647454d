"""The metric table: every test metric of colorbench declared once (name, direction, per image or per set, the
network it needs and how its absence is recorded, display name, unit, digits, and where its computation lives).

Training, ``bench.evaluate``, the baselines, the leaderboard, ``--rank-by``, the statistics, the report and the
dashboard iterate :data:`METRICS`; ``bench.metrics.compute`` runs the computations. This module imports nothing heavy
(the command line lists the metrics in its help). Adding a metric is one entry::

    from bench.metrics.table import Metric, register_metric
    register_metric(Metric("my_metric", higher_is_better=False, label="My metric",
                           compute=lambda pred, target: (pred - target).abs().mean(dim=(1, 2, 3))))
"""
from __future__ import annotations

import math
from dataclasses import dataclass

#: Bootstrap resamples of the two-level interval (``bench.metrics.stats.hierarchical_ci``): declared here, where
#: importing costs no pandas or SciPy, because ``colorbench report --help`` shows it (``bench.metrics.stats.N_BOOT`` is
#: this value).
N_BOOT = 10_000

#: The networks a metric may need: ``(status column, {status: words for titles})``. The status is the
#: backbone actually used (``missing``: none could be had, and the metric's values are empty).
NETWORKS = {
    "lpips": ("lpips_backbone", {"imagenet": "ImageNet VGG-16", "random": "random VGG-16: not a perceptual metric",
                                 "missing": "no ImageNet VGG-16: no values"}),
    "inception": ("inception_backbone", {"inception": "FID Inception-v3",
                                         "random": "random Inception: not a published FID/KID",
                                         "missing": "no FID Inception weights: no values"}),
}


@dataclass(frozen=True)
class Metric:
    """One entry of the metric table: a test metric, its direction and how it is computed and shown.

    Args:
        name: the column in ``runs.csv`` (and ``per_image.csv`` for per-image metrics).
        higher_is_better: direction of "better" (PSNR: True; LPIPS, ΔE, FID: False).
        unit: shown after values and differences (``"dB"``), may be empty.
        label: the display name (``"PSNR"``).
        digits: decimals when printed.
        per: ``"image"`` (one value per test image; a run's value is their mean, compared with paired per-image
            tests) or ``"set"`` (one value per test set, e.g. FID: compared with a paired bootstrap over images).
        network: the network it needs (a key of :data:`NETWORKS`) or None.
        compute: per image: ``(pred_rgb, target_rgb, net) -> B values`` (RGB ``B×3×H×W`` in [0, 1]); per set:
            ``(pred_features, truth_features) -> value`` (or ``{column: value}`` for extra columns such as a
            spread). A callable or ``"module:function"`` (resolved by ``bench.metrics.compute``); None for a column that
            another metric's computation records (``psnr_ref_other``).
        features: per set only: ``(rgb, net) -> B×k`` features of each image (truth features are computed once
            per test set and network).
        shown: a column of every leaderboard, report and dashboard (False for derived columns).
        paired: per set only: ``features`` is ``(pred_rgb, target_rgb) -> B×k`` (e.g. each image's squared error)
            and the truth's features are zeros.
    """

    name: str
    higher_is_better: bool = True
    unit: str = ""
    label: str = ""
    digits: int = 2
    per: str = "image"
    network: str | None = None
    compute: object = None
    features: object = None
    shown: bool = True
    paired: bool = False

    @property
    def title(self) -> str:
        """``"PSNR (dB)"``: label with unit."""
        lab = self.label or self.name
        return f"{lab} ({self.unit})" if self.unit else lab

    @property
    def status_column(self) -> str | None:
        """The column recording the backbone of the network behind the values (``lpips_backbone``), or None."""
        return NETWORKS[self.network][0] if self.network else None

    def backbone_title(self, statuses) -> str:
        """The title naming the backbone(s) behind the values: ``"LPIPS, random VGG-16: not a perceptual metric"``."""
        if not self.network:
            return self.title
        words = NETWORKS[self.network][1]
        found = sorted({str(s) for s in statuses if isinstance(s, str) and s})
        return ", ".join([self.title, *(words.get(s, s) for s in found)])

    def fmt(self, value, signed: bool = False) -> str:
        """``value`` with the metric's digits ('' for a missing value)."""
        try:
            if value is None or math.isnan(float(value)):
                return ""
        except (TypeError, ValueError):
            return ""
        return f"{value:{'+' if signed else ''}.{self.digits}f}"


class _Table(dict):
    """The metric table: a dict that loads the ``colorbench.metrics`` entry points (``bench.core.plugins``) before it is
    first read, so that a plugin's metrics are in it wherever it is listed or looked up."""

    @staticmethod
    def _ready() -> None:
        from bench.core.plugins import load_group

        load_group("colorbench.metrics")

    def __getitem__(self, key):
        self._ready()
        return super().__getitem__(key)

    def __contains__(self, key) -> bool:
        self._ready()
        return super().__contains__(key)

    def __iter__(self):
        self._ready()
        return super().__iter__()

    def __len__(self) -> int:
        self._ready()
        return super().__len__()

    def get(self, key, default=None):
        self._ready()
        return super().get(key, default)

    def keys(self):
        self._ready()
        return super().keys()

    def values(self):
        self._ready()
        return super().values()

    def items(self):
        self._ready()
        return super().items()


METRICS: dict[str, Metric] = _Table()


def register_metric(m: Metric) -> Metric:
    """Add an entry to the metric table (or replace the one of that name); returns it."""
    if m.per not in ("image", "set"):
        raise ValueError(f"Metric.per must be 'image' or 'set', not {m.per!r}")
    if m.network is not None and m.network not in NETWORKS:
        raise ValueError(f"unknown network {m.network!r} (one of {', '.join(NETWORKS)})")
    METRICS[m.name] = m
    return m


def unregister_metric(name: str) -> None:
    """Remove an entry (tests that add a toy metric)."""
    METRICS.pop(name, None)


# The metric table. Computations live in bench.metrics.compute (they need torch and networks).
for _m in (
    Metric("psnr", True, "dB", "PSNR", compute="bench.metrics.compute:psnr_per_image"),
    Metric("ssim", True, "", "SSIM", 4, compute="bench.metrics.compute:ssim_per_image"),
    Metric("colourfulness", True, "", "colourfulness", 1, compute="bench.metrics.compute:colourfulness_of_pred"),
    Metric("delta_e2000", False, "", "ΔE2000", 2, compute="bench.metrics.compute:delta_e2000_per_image"),
    Metric("lpips", False, "", "LPIPS", 4, network="lpips", compute="bench.metrics.compute:lpips_per_image"),
    Metric("spatial_colour", True, "", "spatial colour r", 3, compute="bench.metrics.compute:spatial_colour"),
    Metric("psnr_ref_other", True, "dB", "PSNR, other-photo reference", shown=False),
    # a bins head's logits decoded at T = 1 (the mean) and at the mode, beside the annealed mean (T = 0.38) of psnr
    Metric("psnr_t1", True, "dB", "PSNR, bins at T = 1", shown=False),
    Metric("psnr_mode", True, "dB", "PSNR, bins at the mode", shown=False),
    Metric("colourfulness_ddcolor", True, "", "colourfulness (DDColor's variant)", 1, shown=False,
           compute="bench.metrics.compute:colourfulness_ddcolor"),
    Metric("psnr_pooled", True, "dB", "pooled PSNR", per="set", compute="bench.metrics.compute:pooled_psnr",
           features="bench.metrics.compute:squared_error_features", paired=True),
    Metric("delta_cf", False, "", "ΔCF", 2, per="set", compute="bench.metrics.compute:delta_cf",
           features="bench.metrics.compute:colourfulness_features"),
    Metric("fid", False, "", "FID", 2, per="set", network="inception", compute="bench.metrics.compute:fid",
           features="bench.metrics.compute:inception_features"),
    Metric("kid", False, "", "KID", 4, per="set", network="inception", compute="bench.metrics.compute:kid",
           features="bench.metrics.compute:inception_features"),
):
    register_metric(_m)


def metric(name: str | Metric) -> Metric:
    """The :class:`Metric` called ``name`` (a new higher-is-better one if it is not registered)."""
    if isinstance(name, Metric):
        return name
    return METRICS.get(name) or Metric(name, True, "", name)


def shown_metrics() -> list[Metric]:
    """The table's metrics that every leaderboard, report and dashboard shows, in table order."""
    return [m for m in METRICS.values() if m.shown]


def status_columns() -> list[str]:
    """The columns recording the backbone of each network a metric of the table needs."""
    return list(dict.fromkeys(m.status_column for m in METRICS.values() if m.status_column))


