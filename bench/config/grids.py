"""Named ablation grids, all in one place. A grid is a list of cells; a cell is a name and the configuration keys it
changes from the preset (see ``bench.config.cell.CellConfig``). ``python -m bench.ablate --list-grids`` prints them."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Cell:
    name: str
    changes: dict = field(default_factory=dict)
    #: the cell's training seeds are seed_offset + 0, 1, ...: a duplicate cell with other seeds is a negative
    #: control (the controls grid's mse_again), not the same networks under another name
    seed_offset: int = 0


@dataclass(frozen=True)
class Grid:
    name: str
    description: str
    cells: tuple[Cell, ...]
    #: command-line defaults of the grid (``data``, ``preset``, ``seeds``): what ``ablate --grid NAME`` uses when
    #: the option is not given
    defaults: dict = field(default_factory=dict)


GRIDS: dict[str, Grid] = {}


def add_grid(name: str, description: str, cells: list[Cell], defaults: dict | None = None) -> Grid:
    """Register a named grid (cell names must be unique within it); ``defaults``: see :attr:`Grid.defaults`."""
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise ValueError(f"grid {name!r} has duplicate cell names")
    GRIDS[name] = Grid(name, description, tuple(cells), dict(defaults or {}))
    return GRIDS[name]


add_grid(
    "losses",
    "Common colorization losses on one model: pixel regression (MSE and L1, two of the losses Ballester et al. 2022 "
    "compare; Huber), KL over quantised ab bins (Zhang et al. 2016), plain and class-rebalanced; and MSE plus the "
    "AdaIN style loss (Huang & Belongie 2017).",
    [
        Cell("mse", {"loss": "mse"}),
        Cell("l1", {"loss": "l1"}),
        Cell("huber", {"loss": "huber"}),
        Cell("kl", {"loss": "kl"}),
        Cell("kl_rebal", {"loss": "kl", "loss_params": {"rebalance": True}}),
        # One AdaIN cell fits the CPU budget: MSE plus the AdaIN style term (λ = 1, see ADAIN_STYLE_WEIGHTS below).
        Cell("mse+adain_style", {"loss": "mse+adain_style", "loss_params": {"style_weight": 1.0}}),
    ],
)

# Known answers (bench.data.controls): on the control images each loss has a Bayes-optimal prediction computed from the
# generator, so the harness must recover MSE > KL (T 0.38) > L1 in PSNR, the reverse in colourfulness, every cell near
# its own Bayes row, and no difference between two MSE cells that differ only in name (the negative control).
add_grid(
    "controls",
    "Known-answer controls on the generated control images (--data controls): mse, l1, huber, kl, kl_rebal and a "
    "second mse cell under another name and with other seeds (mse_again, the negative control); each is compared "
    "with its loss's Bayes-optimal reference row.",
    [
        Cell("mse", {"loss": "mse"}),
        Cell("mse_again", {"loss": "mse"}, seed_offset=100),  # the negative control: MSE again, other seeds
        Cell("l1", {"loss": "l1"}),
        Cell("huber", {"loss": "huber"}),
        Cell("kl", {"loss": "kl"}),
        Cell("kl_rebal", {"loss": "kl", "loss_params": {"rebalance": True}}),
    ],
    defaults={"data": "controls", "preset": "controls", "seeds": 3},
)

add_grid(
    "controls-pooled",
    "Pooled PSNR against the mean of per-image PSNRs on controls-varying, where the share of the minority colour "
    "varies between images: mse and l1 (rank with --rank-by psnr_pooled to see the order turn).",
    [Cell("mse", {"loss": "mse"}), Cell("l1", {"loss": "l1"})],
    defaults={"data": "controls-varying", "preset": "controls", "seeds": 3},
)

add_grid(
    "smoke",
    "Two cheap cells to check an installation (MSE and KL).",
    [Cell("mse", {"loss": "mse"}), Cell("kl", {"loss": "kl"})],
)


add_grid(
    "tiny",
    "Four cheap pixel-loss cells for tests of the multi-worker runner (MSE, L1, Huber, MSE at a higher lr).",
    [Cell("mse", {"loss": "mse"}), Cell("l1", {"loss": "l1"}), Cell("huber", {"loss": "huber"}),
     Cell("mse_lr", {"loss": "mse", "lr": 2e-3})],
)


# ----------------------------------------------------------------------------------------------- Ballester et al. 2022
# The chapter's losses (arXiv 2204.02980): L1, L2, WGAN + L2 and LPIPS(VGG), here beside KL and Huber, and the
# L1/L2 variants computed on RGB rebuilt through the differentiable Lab → RGB instead of on ab. The LPIPS cell's VGG-16
# is the configuration's lpips_backbone: ImageNet under the paper preset, a seeded random one under quick (flagged).
# WGAN weight 0.01: the critic's scores are order one, the MSE on ab/110 about 0.01-0.05 (grid wgan_gp scans it).
WGAN_WEIGHT = 0.01

add_grid(
    "ballester22",
    "The losses of Ballester et al. 2022: L1, L2 (mse), LPIPS-VGG and WGAN-GP + L2; plus KL and Huber, and L1/L2 "
    "on RGB rebuilt from (L, ab) through a differentiable Lab → RGB.",
    [
        Cell("l1", {"loss": "l1"}),
        Cell("mse", {"loss": "mse"}),
        Cell("lpips", {"loss": "lpips"}),
        Cell("mse+wgan_gp", {"loss": f"mse+{WGAN_WEIGHT:g}*wgan_gp"}),
        Cell("kl", {"loss": "kl"}),
        Cell("huber", {"loss": "huber"}),
        Cell("l1_rgb", {"loss": "l1", "loss_params": {"space": "rgb"}}),
        Cell("mse_rgb", {"loss": "mse", "loss_params": {"space": "rgb"}}),
    ],
)

add_grid(
    "wgan_gp",
    "The weight λ of the adversarial term in mse + λ·wgan_gp (0 is plain MSE).",
    [Cell("mse", {"loss": "mse"})]
    + [Cell(f"mse+wgan_w{lam:g}", {"loss": f"mse+{lam:g}*wgan_gp"}) for lam in (0.001, 0.01, 0.1)],
)


def get(name: str) -> Grid:
    """The grid registered under ``name``; a ValueError listing the valid names otherwise."""
    try:
        return GRIDS[name]
    except KeyError:
        raise ValueError(f"unknown grid {name!r}; available: {', '.join(sorted(GRIDS))}") from None


# ----------------------------------------------------------------------------------------------------- AdaIN
# λ values: under the quick preset (random width-0.25 loss VGG) L_style of a grey prediction is about the size of its
# MSE, so 0.1 / 1 / 10 run from "pixel loss dominates" to "style dominates". A pretrained VGG gives larger features:
# rescan λ there.
ADAIN_STYLE_WEIGHTS = (0.1, 1.0, 10.0)

add_grid(
    "adain",
    "Reference-based colorization with AdaIN (model adain_unet: run with --models adain_unet): skip treatment "
    "(concat, adain, none) × style weight λ × pixel loss (mse, l1) added to the AdaIN loss; one more cell trains "
    "with another photo as reference.",
    [
        Cell(f"{pix}+adain_w{lam:g}_{skips}", {"loss": f"{pix}+adain", "loss_params": {"style_weight": lam},
                                              "model_params": {"skips": skips}})
        for pix in ("mse", "l1") for lam in ADAIN_STYLE_WEIGHTS for skips in ("concat", "adain", "none")
    ]
    + [Cell("mse+adain_w1_concat_refother", {"loss": "mse+adain", "loss_params": {"style_weight": 1.0},
                                             "model_params": {"skips": "concat", "train_reference": "other"}})],
)
