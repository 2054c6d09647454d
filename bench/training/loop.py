"""Training one cell: fixed-seed crops → Lab on the device → model → loss → Adam; then validation and test metrics.

``TrainStep`` is the one optimisation step of colorbench: ``train_cell`` runs it every iteration and
``bench.throughput`` times it.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

import losses
import models

from bench.config.cell import CellConfig
from bench.core.device import amp_dtype, autocast, keep_freed_memory, pick_device
from bench.core.log import get_logger
from bench.data.abbins import ABBins
from bench.data.colour import rgb_to_lab, split_lab
from bench.data.loader import FileStore, TrainFingerprints, batches, default_cache_mb, default_workers, streams
from bench.data.sources import (
    BUNDLED_FOLDS, CropSchedule, DataError, ImageStore, Splits, content_matches, data_root, fingerprint, fold_splits,
    list_images, make_splits, mean_ab, resolve)
from bench.metrics.compute import evaluate, networks, score_test
from bench.training import distributed
from bench.training.checkpoint import load_checkpoint, save_checkpoint, set_rng_state

log = get_logger(__name__)

__all__ = ["DivergenceError", "Prepared", "TrainStep", "autocast_dtype", "build_cell", "lr_factor", "make_step",
           "pick_device", "prepare", "prepare_folds", "train_cell"]


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite; the cell is recorded as failed at ``step``."""

    def __init__(self, step: int, reason: str):
        super().__init__(f"diverged at step {step}: {reason}")
        self.step = step
        self.reason = reason


def autocast_dtype(cfg: CellConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA under ``precision=auto``; None (full fp32) otherwise."""
    return amp_dtype(cfg.precision, device)


@dataclass
class Prepared:
    """A run's data, decoded once and shared by all its cells."""

    splits: Splits
    train: ImageStore | FileStore  # FileStore: streamed from disk (bench.data.loader), the set exceeds --cache-mb
    val_images: torch.Tensor
    test_images: torch.Tensor
    test_files: list
    skipped: list
    _priors: dict = field(default_factory=dict)
    #: split ("train", "val") → {file: content fingerprint} (``bench.data.sources.fingerprint``), for ``bench.evaluate``
    fingerprints: dict = field(default_factory=dict)
    _mean_ab: tuple | None = None
    #: DataLoader worker processes that decode a streamed training set (unused for one in RAM)
    loader_workers: int = 0
    #: a streamed set's training fingerprints, taken in the background (``bench.data.loader.TrainFingerprints``), and
    #: split ("val", "test") → (files, fingerprints) to check against them (:meth:`check_held_out`)
    train_fps: TrainFingerprints | None = None
    held_out: dict = field(default_factory=dict)

    def check_held_out(self) -> None:
        """Raise ``DataError`` if a validation or test image shows a photo of the streamed training set (content,
        any size or encoding); waits for the background fingerprints the first time, a no-op after (and for a set
        in RAM, checked by ``bench.data.sources.make_splits`` before training)."""
        if self.train_fps is None:
            return
        rows, _ = self.train_fps.result()  # an unreadable file's row is zero: it matches nothing
        self.train_fps = None
        for split, (files, fps) in self.held_out.items():
            clash = content_matches(fps, rows)  # no copy of the rows (1.28 M × 256 bytes for ImageNet)
            if clash:
                i, j = clash[0]
                raise DataError(f"{len(clash)} {split} image(s) also in the training set (same content at any size "
                                f"or encoding), e.g. {files[i]} = {self.splits.train[j]}: the splits must be disjoint (a streamed "
                                f"training set is checked while its first run trains; nothing was scored)")

    @property
    def streamed(self) -> bool:
        """Whether the training images stay on disk (``bench.data.loader.FileStore``)."""
        return isinstance(self.train, FileStore)

    def mean_ab(self) -> tuple[float, float]:
        """The mean ab of the training images' pixels (the mean-colour baseline's constant; a streamed set's
        from ``bench.data.loader.STAT_SAMPLE`` evenly spaced images), cached."""
        if self._mean_ab is None:
            self._mean_ab = mean_ab(self.train.sample())
        return self._mean_ab

    @property
    def test_keys(self) -> list[str]:
        """The test images' keys in result files: paths relative to the test set's folder."""
        return [self.splits.key("test", f) for f in self.test_files]

    def prior(self, bins: ABBins) -> torch.Tensor:
        """Empirical ab-bin frequencies of the training images (every 4th pixel of each), cached."""
        key = (bins.n_bins, bins.sigma)
        if key not in self._priors:
            abs_ = (rgb_to_lab(img[None, :, ::4, ::4].float() / 255.0)[:, 1:] for img in self.train.sample())
            self._priors[key] = bins.empirical_prior(abs_)
        return self._priors[key]


def prepare(cfg: CellConfig, data: str | None = None, test: str | None = None, root=None, verify: bool = True,
            cache_mb: float | None = None, loader_workers: int | None = None) -> Prepared:
    """Resolve and split the data; decode every image once at the configuration's size, or, for a training set
    whose decoded size exceeds ``cache_mb``, leave it on disk for the loader (``bench.data.loader``).

    Args:
        cfg: the base configuration (``size``, ``eval_size``).
        data, test, root, verify: as in ``bench.data.sources.make_splits``.
        cache_mb: RAM budget of the decoded training set in MiB (default: ``bench.data.loader.default_cache_mb``).
        loader_workers: DataLoader workers of a streamed set (default: ``bench.data.loader.default_workers``).
    """
    budget = default_cache_mb() if cache_mb is None else cache_mb
    files = list_images(resolve(data, data_root(root))[1])
    stream = streams(files, cfg.decode_size, budget)
    splits = make_splits(data, test, root, verify=verify, size=cfg.size, stream=stream, files=files)  # decodes once
    train = FileStore(splits.train, cfg.decode_size) if stream else _train_store(splits, cfg)
    val, tst = (ImageStore(getattr(splits, k), cfg.size, decoded=splits.decoded) for k in ("val", "test"))
    splits.decoded = {}  # the stores hold what they keep
    prep = Prepared(splits, train, val.centre_crops(cfg.eval_size), tst.centre_crops(cfg.eval_size), tst.files,
                    train.skipped + val.skipped + tst.skipped)
    if not stream:
        prep.fingerprints = _fingerprints(train, val)
    else:  # fingerprints in a compact file of their own (bench.data.loader.fingerprints_of), not in run.json
        prep.loader_workers = default_workers() if loader_workers is None else loader_workers
        prep.train_fps = TrainFingerprints(splits.train)
        prep.held_out = {k: (s.files, [fingerprint(img) for img in s.images]) for k, s in (("val", val), ("test", tst))}
    return prep


def _train_store(splits: Splits, cfg: CellConfig) -> ImageStore:
    """The training images in RAM at ``cfg.decode_size``: the split's decoded pixels, or (``train_size`` larger
    than ``size``) a second decode of the training files at that size."""
    if cfg.decode_size == cfg.size:
        return ImageStore(splits.train, cfg.size, decoded=splits.decoded)
    return ImageStore(splits.train, cfg.decode_size)


def _fingerprints(train: ImageStore, val: ImageStore) -> dict:
    return {k: {str(f): fingerprint(img) for f, img in zip(s.files, s.images)} for k, s in (("train", train),
                                                                                             ("val", val))}


def prepare_folds(cfg: CellConfig, data: str | None = None, folds: int = BUNDLED_FOLDS, root=None,
                  verify: bool = True) -> list[Prepared]:
    """k-fold rotation of a data set without a separate test set (``bench.data.sources.fold_splits``): one ``Prepared``
    per fold; their test images together are every usable image of the set, once.

    Args:
        cfg: the base configuration (its ``size`` and ``eval_size`` set the decoding and the evaluation crops).
        data: a named set, a folder, or None for the bundled Kodak24.
        folds: number of folds.
        root: the folder holding the named sets.
        verify: check named sets against their SHA256 manifests.
    """
    out = []
    for splits in fold_splits(data, folds, root, verify=verify, size=cfg.size):  # each file decoded once for all folds
        val, tst = (ImageStore(getattr(splits, k), cfg.size, decoded=splits.decoded) for k in ("val", "test"))
        train = _train_store(splits, cfg)
        splits.decoded = splits.content = {}  # the stores hold what they keep
        out.append(Prepared(splits, train, val.centre_crops(cfg.eval_size), tst.centre_crops(cfg.eval_size),
                            tst.files, train.skipped + val.skipped + tst.skipped,
                            fingerprints=_fingerprints(train, val)))
    return out

def build_cell(cfg: CellConfig, prep: Prepared | None, device: torch.device):
    """Model and loss of a cell, on the device.

    Args:
        cfg: the cell's configuration.
        prep: the run's data; a loss whose parameters ask for the colour prior (``losses.prior_bins``) takes it from
            the training images (needs ``prep``).
        device: where the model and loss live.
    """
    head = losses.head_of(cfg.loss)
    model = models.build(cfg.model, head=head, width=cfg.width, encoder_weights=cfg.encoder_weights, **cfg.model_params)
    params = dict(cfg.loss_params)
    bins = losses.prior_bins(cfg.loss, params)  # registry metadata: whether these parameters need the colour prior
    if bins is not None and "prior" not in params:
        if prep is None:
            given = json.dumps(params, sort_keys=True, default=str)
            raise ValueError(f"loss {cfg.loss} with loss_params {given} needs the training images for its colour prior")
        params["prior"] = prep.prior(bins)
    # Feature losses (adain, adain_style) own a VGG-19: unless the cell says otherwise it follows the model's
    # encoder rules (quick preset: width 0.25, random; paper: width 1, ImageNet); LPIPS and perceptual losses own a
    # full-width VGG-16 (ImageNet or, only when the configuration says so, random); an adversarial term's critic
    # varies with the training seed. These are context: passed only to the terms that take them (unlike the cell's
    # own loss_params, which a term must take), and a cell's loss_params override them.
    context = {"encoder_weights": cfg.encoder_weights, "vgg_width": cfg.width, "backbone": cfg.lpips_backbone,
               "critic_seed": cfg.seed}
    criterion = losses.build(cfg.loss, context=context, **params)
    return model.to(device), criterion.to(device)


def lr_factor(schedule: str, step: int, steps: int, warmup: int = 0) -> float:
    """The learning rate of optimisation step ``step`` (0-based) as a fraction of the peak: linear warm-up over
    ``warmup`` steps, then ``constant``, or ``cosine`` / ``linear`` decay reaching 0 after ``steps`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    t = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * t)) if schedule == "cosine" else 1.0 - t


class TrainStep:
    """One optimisation step, the only one in colorbench: ``train_cell`` runs it every iteration and
    ``bench.throughput`` times it.

    A call takes a uint8 ``B×3×H×W`` batch (on the CPU or already on the device), moves it to the device, converts
    it to Lab there (exact lookup table for the sRGB curve), runs the model on L under autocast, the loss on
    (prediction, true ab), backward and the optimiser step. On CUDA the input and the model are channels-last and
    Adam is fused. Losses are read back every ``check_every`` steps (on a GPU, reading every step would stall it):
    a NaN/inf raises ``DivergenceError`` naming the first bad step.

    Hook for losses with their own training (e.g. a WGAN-GP critic): if the loss object has a method
    ``extra_step(pred, target_ab, **ctx)``, it is called every step after the model's forward pass and before the
    loss, with the prediction detached and the same context as the loss (``L``, ``rgb``, ``model``), under the
    same autocast. It updates whatever the loss owns (its critic, with its own optimiser); what it returns is ignored.
    ``losses.CompositeLoss`` forwards it to the terms that have it.

    State for checkpoints: ``state_dict()`` / ``load_state_dict()`` hold the model, the loss (an ``nn.Module``: a
    critic's weights, plus whatever its ``get_extra_state()`` returns, e.g. the critic's optimiser), the optimiser
    and the number of steps done. RNG states are not part of it.

    Args:
        model: the network, on ``device``.
        criterion: the loss, on ``device``.
        device: where to train.
        lr: Adam learning rate.
        amp: autocast dtype (``torch.bfloat16``) or None for full precision.
        compile: run the forward pass through ``torch.compile(model)``.
        check_every: read the losses back every this many steps (default: 1 on the CPU, 25 elsewhere).
        lr_at: step (0-based) → learning rate; None: ``lr`` throughout (e.g. ``lr_factor`` times ``lr``).

    Attributes:
        on_losses: None, or called as ``on_losses(first_step, losses)`` with the losses each ``check`` reads back
            (``losses[0]`` of step ``first_step``, 1-based; before the NaN check): the experiment trackers' curve.
    """

    def __init__(self, model: torch.nn.Module, criterion: torch.nn.Module, device: torch.device, lr: float,
                 amp: torch.dtype | None = None, compile: bool = False, check_every: int | None = None,
                 lr_at=None):
        self.device, self.amp = torch.device(device), amp
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            model = model.to(memory_format=torch.channels_last)
        else:
            keep_freed_memory()  # no page faults on every step's fresh activations
        self.model, self.criterion = model, criterion
        self.forward = torch.compile(model) if compile else model
        self.needs_ref = bool(getattr(model, "needs_reference", False))
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(trainable, lr=lr, fused=self.cuda)
        self.check_every = check_every or (1 if self.device.type == "cpu" else 25)
        self.lr_at = lr_at
        self.step = 0  # steps done
        self.last_loss = math.nan  # the last loss read back
        self.on_losses = None
        self._pending: list[torch.Tensor] = []
        model.train()

    def __call__(self, u8: torch.Tensor, ref: torch.Tensor | None = None, eager: bool = False) -> torch.Tensor:
        """One step on a uint8 batch; returns the loss (a detached device tensor, not read back).

        Args:
            u8: ``B×3×H×W`` uint8 crops.
            ref: uint8 colour references for models with ``needs_reference`` (ignored otherwise).
            eager: use the uncompiled model (FLOP counting).
        """
        u8 = u8.to(self.device, non_blocking=True)  # uint8: 4× less to copy than float
        L, ab = split_lab(u8)  # Lab is computed on the training device, batched
        rgb = u8.float().div_(255.0)
        if self.cuda:
            L = L.contiguous(memory_format=torch.channels_last)
        net = self.model if eager else self.forward
        ctx = {"L": L, "rgb": rgb, "model": self.model}
        with autocast(self.device, self.amp):
            if self.needs_ref:
                out = net(L, ref.to(self.device, non_blocking=True).float() / 255)
            else:
                out = net(L)
            extra = getattr(self.criterion, "extra_step", None)
            if extra is not None:  # the loss's own update (a critic's), before it scores this prediction
                extra(out.detach(), ab, **ctx)
            loss = self.criterion(out, ab, **ctx)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.lr_at is not None:  # a plain float: Adam reads it at this step
            for g in self.opt.param_groups:
                g["lr"] = self.lr_at(self.step)
        self.opt.step()
        self.step += 1
        loss = loss.detach()
        self._pending.append(loss)
        if self.step % self.check_every == 0:
            self.check()
        return loss

    def check(self) -> float:
        """Read back the losses since the last check and return the latest.

        Raises:
            DivergenceError: one of them is NaN or infinite (with the step of the first).
        """
        if self._pending:
            # under torchrun the mean over the ranks: the global batch's loss, and one divergence verdict for all
            vals = distributed.mean(torch.stack(self._pending).float()).cpu()
            first = self.step - len(self._pending) + 1
            self._pending = []
            if self.on_losses is not None:
                self.on_losses(first, vals.tolist())
            bad = (~torch.isfinite(vals)).nonzero()
            if len(bad):
                raise DivergenceError(first + int(bad[0]), f"loss is {vals[int(bad[0])].item()}")
            self.last_loss = vals[-1].item()
        return self.last_loss

    def _fixed(self) -> tuple[str, ...]:
        """Key prefixes of the loss's fixed functions (frozen VGGs marked ``fixed_function``): the configuration
        rebuilds them identically, so checkpoints leave their weights out (60 MB for a VGG-16)."""
        return tuple(f"{name}." for name, m in self.criterion.named_modules()
                     if name and getattr(m, "fixed_function", False))

    def state_dict(self) -> dict:
        """Model, loss (without its fixed functions), optimiser and step count (what a checkpoint needs besides the
        RNG states)."""
        fixed = self._fixed()
        criterion = {k: v for k, v in self.criterion.state_dict().items() if not (fixed and k.startswith(fixed))}
        return {"model": self.model.state_dict(), "criterion": criterion,
                "optimizer": self.opt.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict()`` returned."""
        self.model.load_state_dict(state["model"])
        fixed = self._fixed()
        missing, unexpected = self.criterion.load_state_dict(state["criterion"], strict=False)
        wrong = [k for k in missing if not (fixed and k.startswith(fixed))] + list(unexpected)
        if wrong:
            raise RuntimeError(f"the checkpoint's loss state does not match the loss: {', '.join(wrong[:5])}")
        self.opt.load_state_dict(state["optimizer"])
        self.step, self._pending = int(state["step"]), []


def make_step(cfg: CellConfig, device: torch.device, prep: Prepared | None = None) -> TrainStep:
    """Seed with ``cfg.seed``, build the cell's model and loss and their ``TrainStep``.

    Args:
        cfg: the cell's configuration (model, loss, width, lr, precision; ``compile`` is honoured on CUDA only).
        device: where to train.
        prep: the run's data (only a loss that asks for the colour prior needs it, ``losses.prior_bins``).
    """
    device = torch.device(device)
    torch.manual_seed(cfg.seed)  # the training seed sets the initialisation only; the crops come from crop_seed
    model, criterion = build_cell(cfg, prep, device)
    lr_at = None
    if cfg.lr_schedule != "constant" or cfg.warmup_steps:
        def lr_at(k: int) -> float:
            return cfg.lr * lr_factor(cfg.lr_schedule, k, cfg.steps, cfg.warmup_steps)
    return TrainStep(model, criterion, device, cfg.lr, autocast_dtype(cfg, device),
                     compile=cfg.compile and device.type == "cuda", lr_at=lr_at)


def train_cell(cfg: CellConfig, prep: Prepared, device: torch.device, progress: bool = True, desc: str = "",
               on_validation=None, checkpoint=None, expect_checkpoint: bool = False, tracker=None) -> dict:
    """Train one cell and evaluate it on the test images.

    Args:
        cfg: the cell's configuration (its ``seed`` initialises the model; its ``crop_seed`` fixes the batches).
        prep: the run's decoded data.
        device: where to train.
        progress: show a progress bar.
        desc: progress-bar label.
        on_validation: called as ``on_validation(step, val_psnr)`` after each validation (Optuna pruning hooks in
            here and may raise ``optuna.TrialPruned``).
        checkpoint: a checkpoint file (``bench.training.checkpoint``): training resumes from it when it holds a readable
            checkpoint of this configuration, and writes it every ``cfg.checkpoint_every`` steps. None: neither.
        expect_checkpoint: this is a retry of a run that may have left a checkpoint: say so when there is none.
        tracker: None, or an experiment tracker (``bench.core.tracking.Trackers``, started): it gets the training loss
            of every step (``train/loss``), the validation PSNR (``val/psnr``), the test metrics (``test/<metric>``),
            the sample colorizations (``samples/<image>``) and the hyper-parameters with the final metrics. Under
            torchrun only rank 0 uses it.

    Returns:
        dict with ``metrics`` (every metric of the table, the backbone of each network behind them, e.g.
        ``lpips_backbone``: imagenet, random, or missing — then those values are NaN; and timings), ``per_image``
        (per-image test metrics), ``scores`` (``bench.metrics.compute.Scores``), ``history`` (validation PSNR and
        training loss over steps), ``encoder_pretrained``, ``lpips_backbone`` and ``resumed_from_step`` (the
        checkpoint's step it went on from; 0 for a run trained from the start). Under torchrun
        (``bench.training.distributed``) only rank 0 validates and scores: the other ranks return ``history`` (empty),
        ``resumed_from_step`` and ``model``.

    Raises:
        DivergenceError: the loss became NaN or infinite.
    """
    main = distributed.is_main()  # under torchrun rank 0 alone reads and writes checkpoints, validates and scores
    say = log.info if main else (lambda *a, **k: None)
    label = desc or cfg.loss
    step, history, done_s = _start(cfg, prep, device, checkpoint, expect_checkpoint, say, label)
    resumed = step.step
    step.forward = distributed.wrap(step.model, step.forward)  # DDP under torchrun (after the restore: same weights)
    tracker = tracker if main else None  # under torchrun rank 0 alone tracks
    if tracker is not None:
        step.on_losses = lambda first, vals: [tracker.scalar("train/loss", v, first + i) for i, v in enumerate(vals)]
    bar = tqdm(total=cfg.steps, initial=step.step, desc=label, leave=False, disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter() - done_s  # a resumed run's training time includes the time before its checkpoint
    try:
        _run_steps(step, cfg, prep, device, history, t0, bar, tracker, checkpoint, on_validation)
        if device.type == "cuda":
            torch.cuda.synchronize()
    finally:
        bar.close()
    if prep.streamed and prep.train.skipped:
        tqdm.write(f"{label}: {len(prep.train.skipped)} unusable training file(s) met while streaming were "
                   f"replaced by the next photo of the epoch (first: {prep.train.skipped[0][0]}: "
                   f"{prep.train.skipped[0][1]})", file=sys.stderr)
    train_time = time.perf_counter() - t0
    if not main:  # the test images are scored on rank 0 alone
        return {"history": history, "resumed_from_step": resumed, "model": step.model}
    return {**_score_trained(step, cfg, prep, device, history, train_time, tracker), "resumed_from_step": resumed}


def _start(cfg: CellConfig, prep: Prepared, device: torch.device, checkpoint, expect_checkpoint: bool, say,
           label: str) -> tuple[TrainStep, list, float]:
    """A fresh ``TrainStep``, or the one restored from ``checkpoint``: the step, the validation history so far and
    the seconds trained before the checkpoint."""
    step = make_step(cfg, device, prep)
    if checkpoint is None:
        return step, [], 0.0
    # rank 0 reads the checkpoint and every rank resumes from its copy (another machine may lack the run folder)
    state, why = distributed.broadcast(load_checkpoint(checkpoint, cfg) if distributed.is_main() else None)
    if state is None:
        if expect_checkpoint or "no checkpoint" not in why:
            say(f"{label}: {why}; training from step 0")
        return step, [], 0.0
    try:  # the model, loss, optimiser, RNGs and loop state of step k: go on from step k + 1
        step.load_state_dict(state["train_step"])
        set_rng_state(state["rng"])
        history, done_s = list(state["extra"]["history"]), float(state["extra"]["elapsed_s"])
        step.last_loss = float(state["extra"]["last_loss"])
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as err:  # e.g. another code version's
        say(f"{label}: checkpoint {checkpoint} cannot be restored ({type(err).__name__}); training from step 0")
        return make_step(cfg, device, prep), [], 0.0  # a fresh start, as without a checkpoint (nothing half-restored)
    say(f"{label}: resuming from the checkpoint of step {step.step}")
    return step, history, done_s


def _run_steps(step: TrainStep, cfg: CellConfig, prep: Prepared, device: torch.device, history: list, t0: float, bar,
               tracker, checkpoint, on_validation) -> None:
    """The training loop from ``step.step`` to ``cfg.steps``: a step per batch, validation every ``val_every``
    steps (appended to ``history``) and a checkpoint every ``checkpoint_every``."""
    main = distributed.is_main()
    reference = getattr(step.model, "reference_view", "same") if step.needs_ref else None  # models/__init__'s word
    schedule = CropSchedule(prep.train, cfg.crop, cfg.crop_seed, cfg.augment)
    # the crops of step k depend on k alone: resuming needs no data state
    # under torchrun each rank reads (and, streamed, decodes) only its slice of step k's global batch
    feed = batches(schedule, step.step, cfg.steps, cfg.batch_size, reference, prep.loader_workers,
                   pin=device.type == "cuda", part=(distributed.rank(), distributed.world_size()))
    for u8, ref in feed:
        step(u8, ref)
        n = step.step
        validate = n % cfg.val_every == 0 or n == cfg.steps
        if n % step.check_every == 0 or validate:
            bar.set_postfix(loss=f"{step.check():.4f}")
        bar.update(1)
        val_psnr = _validate(step, cfg, prep, device, history, t0, tracker) if validate and main else None
        if checkpoint is not None and cfg.checkpoint_every and n % cfg.checkpoint_every == 0 and n < cfg.steps:
            step.check()  # the losses so far are read back (a NaN is never checkpointed)
            if main:
                save_checkpoint(checkpoint, cfg, step.state_dict(), {
                    "history": history, "last_loss": step.last_loss, "elapsed_s": time.perf_counter() - t0})
        if validate:  # the other ranks wait for rank 0's validation here, and stop with it (a pruned trial)
            distributed.on_main(on_validation, n, val_psnr)


def _validate(step: TrainStep, cfg: CellConfig, prep: Prepared, device: torch.device, history: list, t0: float,
              tracker) -> float:
    """The mean PSNR of the validation images at this step, appended to ``history`` (and sent to the tracker)."""
    val = evaluate(step.model, prep.val_images, device, cfg.batch_size, _refs(prep.val_images, step.needs_ref),
                   step.amp, only=["psnr"]).per_image["psnr"]
    val_psnr = float(sum(val) / len(val))
    history.append({"step": step.step, "val_psnr": val_psnr, "train_loss": step.last_loss,
                    "elapsed_s": time.perf_counter() - t0})
    if tracker is not None:
        tracker.scalar("val/psnr", val_psnr, step.step)
    return val_psnr


def _score_trained(step: TrainStep, cfg: CellConfig, prep: Prepared, device: torch.device, history: list,
                   train_time: float, tracker) -> dict:
    """Score the trained model on the test images: ``train_cell``'s result without ``resumed_from_step``."""
    model = step.model
    prep.check_held_out()  # a streamed training set's content check: before any test image is scored
    t1 = time.perf_counter()
    scores = score_test(model, prep.test_images, device, cfg.batch_size, step.amp,
                        networks(device, cfg.lpips_backbone))
    eval_time = time.perf_counter() - t1
    metrics = {  # every metric of the table (bench.metrics.stats.METRICS), then the training's own numbers
        **scores.row(),
        "val_psnr": history[-1]["val_psnr"],
        "final_loss": history[-1]["train_loss"],
        "train_time_s": train_time,
        "train_img_per_s": cfg.steps * cfg.batch_size / train_time,
        "eval_time_s": eval_time,
    }
    if tracker is not None:
        _track_result(tracker, cfg, prep, model, device, scores.row(), metrics)
    return {"metrics": metrics, "per_image": scores.per_image, "scores": scores, "history": history,
            "encoder_pretrained": bool(getattr(model, "encoder_pretrained", False)),
            "lpips_backbone": scores.status.get("lpips_backbone", ""), "model": model}


def _track_result(tracker, cfg: CellConfig, prep: Prepared, model, device, test: dict, metrics: dict) -> None:
    """Send a finished training's test metrics (at its last step), sample colorizations and hyper-parameters with
    its final metrics to the tracker."""
    from bench.core.tracking import finite_metrics
    from bench.reporting.samples import sample_arrays

    test = finite_metrics(test, "test/")
    for tag, value in test.items():
        tracker.scalar(tag, value, cfg.steps)
    for name, rgb in sample_arrays(prep, model, device, autocast_dtype=autocast_dtype(cfg, device)):
        tracker.image(f"samples/{name}", rgb, cfg.steps)
    tracker.hparams(None, {**test, **finite_metrics({"val/psnr": metrics["val_psnr"],
                                                     "train/loss": metrics["final_loss"]})})


def _refs(images: torch.Tensor, needed: bool):
    return images if needed else None
