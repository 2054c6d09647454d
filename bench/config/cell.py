"""Training configuration of one grid cell, the presets, and their validation (before any training starts)."""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
from dataclasses import dataclass, field

import losses
import models

# Bounds of the fields that could hang a run or exhaust memory (each is named in its error): sizes, steps, images per
# step (B×3×crop² per batch, twice for reference-based models), and the seeds, which numpy takes as unsigned 32-bit.
from bench.config import schema
from bench.core.limits import MAX_BATCH_SIZE, MAX_CROP, MAX_SEED, MAX_STEPS
from bench.data.sources import AUGMENTS


@dataclass
class CellConfig:
    """Everything that defines one training run (one cell × one seed).

    Attributes:
        model: registered model name.
        loss: loss spec (a registered name or a weighted sum such as ``"l1+0.5*kl"``).
        loss_params: keyword arguments for the loss (e.g. ``{"rebalance": True}``, ``{"style_weight": 10}``).
        model_params: keyword arguments for the model beyond ``head``, ``width`` and ``encoder_weights``.
        width: channel multiplier of the model (1.0 = the real VGG).
        encoder_weights: ``none``, ``imagenet`` or a path to a state dict.
        lpips_backbone: the VGG-16 of the ``lpips`` test metric, and the default ``backbone`` of the losses built on
            one (``lpips``, ``perceptual``): ``imagenet`` (torchvision's checkpoint) or ``random`` (a fixed seeded
            VGG-16, for CPU runs; flagged in every result row). Never a silent fallback.
        steps: optimisation steps.
        batch_size: images per step.
        lr: Adam learning rate.
        size: images are resized so that their shorter side is ``size``.
        crop: side of the random (fixed-seed) training crops.
        eval_size: side of the centre crops used for validation and test (after resizing to ``size``).
        crop_seed: seed of the crop/order stream, the same for every cell of a grid.
        seed: training seed (model initialisation); varies over repetitions.
        val_every: validate every this many steps (history and pruning).
        precision: ``auto`` (bf16 autocast on CUDA, fp32 elsewhere), ``fp32`` or ``bf16``.
        compile: wrap the model in ``torch.compile`` (CUDA only).
        checkpoint_every: write a resumable checkpoint every this many steps (0: never; the paper preset: 1000).
        lr_schedule: ``constant`` (the default), or ``cosine`` / ``linear`` decay of the learning rate to 0 at
            ``steps`` (``bench.training.loop.lr_factor``).
        warmup_steps: steps of linear warm-up from 0 to ``lr`` before the schedule (0: none).
        augment: the training views (``bench.data.sources.AUGMENTS``): ``none`` (the crop), ``flip`` (also flipped left
            to right at random) or ``rrc`` (a random-resized crop, then the flip); drawn from ``crop_seed``, the same
            for every cell.
        train_size: the shorter side the training images are decoded at (0: ``size``); larger than ``crop`` gives
            ``rrc`` more distinct views. Validation and test stay at ``size``. Run-wide: a cell cannot change it.
    """

    model: str = "unet_vgg16"
    loss: str = "mse"
    loss_params: dict = field(default_factory=dict)
    model_params: dict = field(default_factory=dict)
    width: float = 1.0
    encoder_weights: str = "none"
    lpips_backbone: str = "imagenet"
    steps: int = 200
    batch_size: int = 16
    lr: float = 2e-5
    size: int = 256
    crop: int = 256
    eval_size: int = 256
    crop_seed: int = 0
    seed: int = 0
    val_every: int = 50
    precision: str = "auto"
    compile: bool = False
    checkpoint_every: int = 0
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    augment: str = "none"
    train_size: int = 0

    def replace(self, **changes) -> "CellConfig":
        """A copy with ``changes`` applied; unknown keys and values of the wrong type raise ``ValueError``."""
        return dataclasses.replace(self, **check_values(changes))

    def to_flat(self) -> dict:
        """A CSV-friendly dict (dicts as JSON strings). Fields added later (``LATER_FIELDS``) are left out at their
        defaults, so that earlier configurations keep their hashes, run folders and study names."""
        return {k: json.dumps(v, sort_keys=True) if isinstance(v, dict) else v for k, v in dataclasses.asdict(self).items()
                if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}

    def validate(self, loss_takes_params: bool = True) -> None:
        """Raise ``ValueError`` with a one-line message for any invalid setting.

        Args:
            loss_takes_params: also require that ``loss`` takes every key of ``loss_params``; False for run-wide
                settings of a grid, whose keys go to the cells whose loss takes them.
        """
        check_values(dataclasses.asdict(self))
        models.get_factory(self.model)
        losses.parse_spec(self.loss)
        if not self.lr > 0:
            raise ValueError(f"learning rate must be positive, got {self.lr}")
        for key in losses.positive():  # loss_weight, and what the registered losses declare positive (Tunable)
            v = self.loss_params.get(key)
            if key in self.loss_params and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0):
                raise ValueError(f"loss_params.{key} must be positive, got {v!r}")
        if self.steps < 1 or self.batch_size < 1 or self.val_every < 1:
            raise ValueError("steps, batch_size and val_every must be at least 1")
        for key, low, high in (("steps", 1, MAX_STEPS), ("batch_size", 1, MAX_BATCH_SIZE), ("seed", 0, MAX_SEED),
                               ("crop_seed", 0, MAX_SEED)):
            if not low <= getattr(self, key) <= high:
                raise ValueError(f"{key} must be from {low} to {high} (the bound), got {getattr(self, key)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, not {self.lr_schedule!r}")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps), got {self.warmup_steps}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be 0 (no checkpoints) or positive, got {self.checkpoint_every}")
        if not 0 < self.width <= 4:
            raise ValueError(f"width must be in (0, 4], got {self.width}")
        for key in ("crop", "eval_size"):
            v = getattr(self, key)
            if v < 16 or v % 16:
                raise ValueError(f"{key} must be a multiple of 16 and at least 16 (the U-Net pools 4 times), got {v}")
            if v > self.size:
                raise ValueError(f"{key}={v} is larger than the resized shorter side size={self.size}")
        if self.size > MAX_CROP:
            raise ValueError(f"size {self.size} is larger than allowed ({MAX_CROP})")
        self._check_views()
        if self.lpips_backbone not in ("imagenet", "random"):
            raise ValueError(f"lpips_backbone must be imagenet or random, not {self.lpips_backbone!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, not {self.precision!r}")
        # the registries refuse parameters a model or loss does not take (e.g. the adain grid's skips on unet_vgg16)
        models.check_params(self.model, ["head", "width", "encoder_weights", *self.model_params])
        models.check_values(self.model, self.model_params)  # the values too, by the registries: nothing is built
        if loss_takes_params:
            losses.check_params(self.loss, list(self.loss_params))
        losses.check_values(self.loss, self.loss_params)


    def _check_views(self) -> None:
        """The training views' settings: ``augment`` and ``train_size``."""
        if self.augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTS)}, not {self.augment!r}")
        if self.train_size and not self.crop <= self.train_size <= MAX_CROP:
            raise ValueError(f"train_size must be 0 (= size) or from crop={self.crop} to {MAX_CROP}, got "
                             f"{self.train_size}")

    @property
    def decode_size(self) -> int:
        """The shorter side of the decoded training images (``train_size``, or ``size`` when it is 0)."""
        return self.train_size or self.size


#: Learning-rate schedules (``CellConfig.lr_schedule``).
LR_SCHEDULES = ("constant", "cosine", "linear")
#: Fields added after results were published, with the defaults at which ``to_flat`` leaves them out.
LATER_FIELDS = {"lr_schedule": "constant", "warmup_steps": 0, "augment": "none", "train_size": 0}

def _attribute_docs(cls) -> dict[str, str]:
    """Field → its description, from the class docstring's ``Attributes:`` section (for the JSON Schema)."""
    import inspect
    import re

    doc = inspect.getdoc(cls) or ""
    section = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    out, name = {}, None
    for line in section.splitlines():
        m = re.match(r"^    (\w+): (.*)$", line)
        if m:
            name = m.group(1)
            out[name] = m.group(2)
        elif name and line.startswith("        "):
            out[name] += " " + line.strip()
    return out


@functools.lru_cache(maxsize=1)
def changes_schema():
    """The pydantic model of changes to a ``CellConfig`` (``bench.config.schema.changes_model``)."""
    return schema.changes_model(CellConfig, choices={"lr_schedule": LR_SCHEDULES, "augment": AUGMENTS,
                                                     "precision": ("auto", "fp32", "bf16"),
                                                     "lpips_backbone": ("imagenet", "random")},
                                descriptions=_attribute_docs(CellConfig))


def check_values(values: dict) -> dict:
    """Check configuration values against the types of the ``CellConfig`` fields, before anything is created: the
    one validation used for ``--set``, the command-line options and configuration files (``bench.config.schema``).

    Whole numbers are accepted for float fields and integral floats (``1e3``) for int fields; NaN and ±inf are
    refused anywhere, nested parameters included.

    Args:
        values: field name → value (e.g. parsed ``--set`` items).

    Returns:
        the values, with integral floats of int fields turned into ints and ints of float fields into floats.

    Raises:
        ConfigError: a ``ValueError``, one line naming the key, the value and the expected type.
    """
    checked = schema.check(changes_schema(), values).model_dump(exclude_unset=True)
    return {k: checked[k] for k in values}  # in the caller's order


def finite_float(text: str) -> float:
    """``argparse`` type for numeric options: a finite float (``inf`` and ``nan`` are refused)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


#: Fields that hold keyword arguments: a change to them is merged key by key into the base's dict.
DICT_FIELDS = ("loss_params", "model_params")


def merge(cfg: CellConfig, changes: dict) -> CellConfig:
    """``cfg`` with ``changes`` applied: the one rule for presets, ``--set``, config files, grid cells and tuning.

    Plain fields are replaced; ``loss_params`` and ``model_params`` are merged key by key (a cell's
    ``{"style_weight": 1}`` keeps a ``rebalance`` given with ``--set``).

    Args:
        cfg: the base configuration.
        changes: field → new value.

    Raises:
        ValueError: an unknown field, or a dict field given something that is not a mapping.
    """
    changes = dict(changes)
    for key in DICT_FIELDS:
        if key in changes:
            if not isinstance(changes[key], dict):
                raise ValueError(f"{key} must be a mapping (JSON object), got {changes[key]!r}")
            changes[key] = {**getattr(cfg, key), **changes[key]}
    return cfg.replace(**changes)


def default_preset(name: str | None, device) -> str:
    """The preset asked for, else ``paper`` on a CUDA device and ``quick`` elsewhere."""
    return name or ("paper" if device.type == "cuda" else "quick")


def parse_overrides(items: list[str]) -> dict:
    """Turn ``--set KEY=VALUE`` items into a checked dict (:func:`check_values`); values are read as JSON when they
    parse, else kept as text.

    Args:
        items: strings of the form ``KEY=VALUE`` (``batch_size=8``, ``loss_params={"rebalance": true}``).
    """
    changes = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            changes[key] = json.loads(value)
        except json.JSONDecodeError:
            changes[key] = value
    return check_values(changes)


#: Presets: ``quick`` trains a small U-Net on small crops in minutes on a CPU; ``paper`` is Ballester et al.'s setup.
PRESETS: dict[str, dict] = {
    # quick: sized for the default job (losses grid × 2 seeds × 4 folds of the bundled Kodak24: about 4.7 min on 2
    # idle CPU cores, measured: see results/default-job-cpu.md)
    "quick": dict(width=0.25, encoder_weights="none", lpips_backbone="random", size=64, crop=64, eval_size=64,
                  batch_size=16, lr=5e-4, steps=30, val_every=10),
    # study: the losses grid × 2 seeds on imagenet-sample (876 training photos), tested on Kodak24: 29 min on 2 idle
    # cores with two one-thread workers; chosen by the learning curves of results/study-preset-cpu.md
    "study": dict(width=0.25, encoder_weights="none", lpips_backbone="random", size=64, crop=64, eval_size=64,
                  batch_size=16, lr=1e-3, steps=800, val_every=100, lr_schedule="cosine", warmup_steps=50),
    # controls: the known-answer grid on the generated control images (bench.data.controls), 64 px, sized so that every
    # cell converges (learning curves in results/controls-cpu.md)
    "controls": dict(width=0.25, encoder_weights="none", lpips_backbone="random", size=32, crop=32, eval_size=32,
                     batch_size=16, lr=3e-3, steps=400, val_every=50, lr_schedule="cosine", warmup_steps=20),
    "paper": dict(width=1.0, encoder_weights="imagenet", lpips_backbone="imagenet", size=256, crop=256, eval_size=256,
                  batch_size=16, lr=2e-5, steps=20000, val_every=1000, checkpoint_every=1000),
}


def preset(name: str) -> CellConfig:
    """The base configuration of a preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    return CellConfig(**PRESETS[name])
