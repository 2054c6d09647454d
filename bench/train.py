"""Training one cell: fixed-seed crops → Lab on the device → model → loss → Adam; then validation and test metrics."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

import losses
import models

from .abbins import ABBins
from .colour import rgb_to_lab, split_lab
from .config import CellConfig
from .data import CropSchedule, ImageStore, Splits, make_splits
from .metrics import evaluate


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite; the cell is recorded as failed at ``step``."""

    def __init__(self, step: int, reason: str):
        super().__init__(f"diverged at step {step}: {reason}")
        self.step = step
        self.reason = reason


def pick_device(name: str | None = None) -> torch.device:
    """``--device`` if given, else CUDA when available, else the CPU."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA device is available")
    return dev


def autocast_dtype(cfg: CellConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA under ``precision=auto``; None (full fp32) otherwise."""
    if cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


@dataclass
class Prepared:
    """A run's data, decoded once and shared by all its cells."""

    splits: Splits
    train: ImageStore
    val_images: torch.Tensor
    test_images: torch.Tensor
    test_files: list
    skipped: list
    size: int
    _priors: dict = field(default_factory=dict)

    def prior(self, bins: ABBins) -> torch.Tensor:
        """Empirical ab-bin frequencies of the training images (every 4th pixel of each), cached."""
        key = (bins.n_bins, bins.sigma)
        if key not in self._priors:
            abs_ = (rgb_to_lab(img[None, :, ::4, ::4].float() / 255.0)[:, 1:] for img in self.train.images)
            self._priors[key] = bins.empirical_prior(abs_)
        return self._priors[key]


def prepare(cfg: CellConfig, data: str | None = None, test: str | None = None, root=None, verify: bool = True) -> Prepared:
    """Resolve and split the data, then decode every image once at the configuration's size."""
    splits = make_splits(data, test, root, verify=verify)
    train = ImageStore(splits.train, cfg.size)
    val = ImageStore(splits.val, cfg.size)
    tst = ImageStore(splits.test, cfg.size)
    return Prepared(splits, train, val.centre_crops(cfg.eval_size), tst.centre_crops(cfg.eval_size), tst.files,
                    train.skipped + val.skipped + tst.skipped, cfg.size)


def build_cell(cfg: CellConfig, prep: Prepared, device: torch.device):
    """Model and loss of a cell, on the device (the loss's prior is computed from the training images if needed)."""
    head = losses.head_of(cfg.loss)
    model = models.build(cfg.model, head=head, width=cfg.width, encoder_weights=cfg.encoder_weights, **cfg.model_params)
    params = dict(cfg.loss_params)
    if params.get("rebalance") and "prior" not in params:
        params["prior"] = prep.prior(ABBins(params.get("sigma", 5.0), params.get("neighbours", 5)))
    # Feature losses (adain, adain_style) own a VGG-19: unless the cell says otherwise it follows the model's
    # encoder rules (quick preset: width 0.25, random; paper: width 1, ImageNet). Losses whose constructors take
    # neither argument never see them (losses.build passes each term only the parameters it accepts).
    params.setdefault("encoder_weights", cfg.encoder_weights)
    params.setdefault("vgg_width", cfg.width)
    criterion = losses.build(cfg.loss, **params)
    return model.to(device), criterion.to(device)


def train_cell(cfg: CellConfig, prep: Prepared, device: torch.device, progress: bool = True, desc: str = "",
               on_validation=None) -> dict:
    """Train one cell and evaluate it on the test images.

    Args:
        cfg: the cell's configuration (its ``seed`` initialises the model; its ``crop_seed`` fixes the batches).
        prep: the run's decoded data.
        device: where to train.
        progress: show a progress bar.
        desc: progress-bar label.
        on_validation: called as ``on_validation(step, val_psnr)`` after each validation (Optuna pruning hooks in
            here and may raise ``optuna.TrialPruned``).

    Returns:
        dict with ``metrics`` (means and timings), ``per_image`` (per-image test metrics), ``history`` (validation
        PSNR and training loss over steps) and ``encoder_pretrained``.

    Raises:
        DivergenceError: the loss became NaN or infinite.
    """
    torch.manual_seed(cfg.seed)  # the training seed sets the initialisation only; the crops come from crop_seed
    model, criterion = build_cell(cfg, prep, device)
    amp = autocast_dtype(cfg, device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if cfg.compile and device.type == "cuda" else model
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=cfg.lr, fused=device.type == "cuda")
    schedule = CropSchedule(prep.train, cfg.crop, cfg.crop_seed)
    needs_ref = getattr(model, "needs_reference", False)
    ref_other = bool(cfg.model_params.get("train_reference") == "other")
    check_every = 1 if device.type == "cpu" else 25  # on a GPU, reading the loss back every step stalls the pipeline

    history, pending = [], []
    bar = tqdm(total=cfg.steps, desc=desc or cfg.loss, leave=False, disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    model.train()
    for step in range(1, cfg.steps + 1):
        u8 = schedule.batch(step - 1, cfg.batch_size).to(device, non_blocking=True)  # uint8: 4× less to copy
        L, ab = split_lab(u8)  # Lab is computed on the training device, batched
        rgb = u8.float().div_(255.0)
        ref = None
        if needs_ref:
            ref = schedule.reference_batch(step - 1, cfg.batch_size, ref_other).to(device, non_blocking=True).float() / 255
        if device.type == "cuda":
            L = L.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = step_model(L, ref) if needs_ref else step_model(L)
            loss = criterion(out, ab, L=L, rgb=rgb, model=model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        pending.append(loss.detach())
        if step % check_every == 0 or step == cfg.steps or step % cfg.val_every == 0:
            vals = torch.stack(pending).float().cpu()
            bad = (~torch.isfinite(vals)).nonzero()
            if len(bad):
                first = step - len(pending) + 1 + int(bad[0])
                bar.close()
                raise DivergenceError(first, f"loss is {vals[int(bad[0])].item()}")
            last_loss = vals[-1].item()
            pending = []
            bar.set_postfix(loss=f"{last_loss:.4f}")
        bar.update(1)
        if step % cfg.val_every == 0 or step == cfg.steps:
            val = evaluate(model, prep.val_images, device, cfg.batch_size, _refs(prep.val_images, needs_ref), amp)
            val_psnr = float(sum(val["psnr"]) / len(val["psnr"]))
            history.append({"step": step, "val_psnr": val_psnr, "train_loss": last_loss,
                            "elapsed_s": time.perf_counter() - t0})
            if on_validation is not None:
                on_validation(step, val_psnr)
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_time = time.perf_counter() - t0
    bar.close()

    t1 = time.perf_counter()
    per_image = evaluate(model, prep.test_images, device, cfg.batch_size, _refs(prep.test_images, needs_ref), amp)
    extra = {}
    if needs_ref:  # how much colour the reference carries: score again with another photo as reference
        other = evaluate(model, prep.test_images, device, cfg.batch_size, prep.test_images.roll(1, 0), amp)
        per_image["psnr_ref_other"] = other["psnr"]
        extra["psnr_ref_other"] = _mean(other["psnr"])
    eval_time = time.perf_counter() - t1
    metrics = {
        "psnr": _mean(per_image["psnr"]),
        "ssim": _mean(per_image["ssim"]),
        "colourfulness": _mean(per_image["colourfulness"]),
        "val_psnr": history[-1]["val_psnr"],
        "final_loss": history[-1]["train_loss"],
        "train_time_s": train_time,
        "train_img_per_s": cfg.steps * cfg.batch_size / train_time,
        "eval_time_s": eval_time,
        **extra,
    }
    return {"metrics": metrics, "per_image": per_image, "history": history,
            "encoder_pretrained": bool(getattr(model, "encoder_pretrained", False)), "model": model}


def _refs(images: torch.Tensor, needed: bool):
    return images if needed else None


def _mean(xs) -> float:
    xs = [float(x) for x in xs]
    return sum(xs) / len(xs) if xs else math.nan
