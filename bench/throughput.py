"""Throughput of the models on the current device: training-step and inference images/s, peak memory, FLOPs.

    python -m bench.throughput                                   # the preset's model, batch and size
    python -m bench.throughput --models unet_vgg16 unet_vgg19 --batch-size 32 --precision bf16 --compile
    python -m bench.throughput --end-to-end --data imagenet-sample --data-root ../shared/data
    python -m bench.throughput --end-to-end --pipeline --data imagenet-sample --data-root ../shared/data
    python -m bench.throughput --loader 0 1 2 --size 256 --crop 256 --data imagenet-sample --data-root ../shared/data

Default mode (synthetic data already on the device): the *training step* is ``bench.training.loop``'s (uint8 batch →
Lab on the device → model → loss → backward → Adam, bf16 autocast and channels_last on CUDA), the *inference*
step is ``L → model → ab`` without gradients. ``--end-to-end`` times the training step fed from decoded images
through the fixed-seed crop schedule (``--data``) against the same step on a synthetic batch already on the device,
and the fp32 batch-16 rate of the former.

Timing: ``--warmup`` untimed calls, then ``--repeats`` timings of ``--iters`` calls each; the median is reported
(CUDA events on a GPU, synchronised only at the end of each timing; ``time.perf_counter`` on the CPU).
FLOPs per image come from ``torch.utils.flop_counter.FlopCounterMode`` on one step (matmuls and convolutions,
forward + backward for training; element-wise ops, interpolation and the optimiser are not counted), and the
achieved TFLOP/s is FLOPs/image × images/s. Peak memory: ``torch.cuda.max_memory_allocated`` during the timing on
CUDA; on the CPU the process's peak resident set size (``ru_maxrss``), a cumulative high-water mark of the whole
process, not of the model alone.

Rows are appended to ``results/throughput-<device>.csv`` (or ``--out DIR``) with the time, environment and commit.
"""
from __future__ import annotations

import math
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from bench import cli
from bench.core.paths import results_root
from bench.core.records import append_rows, check_writable, device_slug, environment
from bench.data import pipeline

# torch, the registries and the training step are imported where they are used, after the command line is parsed:
# --help stays fast
if TYPE_CHECKING:
    import torch

    from bench.config.cell import CellConfig


@dataclass
class Setup:
    """What is measured: a model at a batch size and crop size, a precision, on a device.

    Args:
        model: registered model name.
        batch: images per step.
        size: side of the square input crops (``--crop``).
        width: channel multiplier of the model.
        precision: ``fp32`` or ``bf16`` (autocast).
        compile: wrap the model in ``torch.compile`` (CUDA only, as in training).
        loss: the training loss (decides the model's head).
        device: where to run.
        resize: shorter side the images are resized to before cropping (``--size``; end-to-end mode only;
            default: the crop side).
    """

    model: str = "unet_vgg16"
    batch: int = 16
    size: int = 64
    width: float = 0.25
    precision: str = "fp32"
    compile: bool = False
    loss: str = "mse"
    device: str = "cpu"
    resize: int | None = None

    @property
    def dev(self) -> torch.device:
        import torch

        return torch.device(self.device)

    @property
    def amp(self) -> torch.dtype | None:
        from bench.core.device import amp_dtype

        return amp_dtype(self.precision, self.dev)

    def cell(self) -> CellConfig:
        """The training configuration of this setup: seed 0, random encoder (and random VGG-16 in lpips/perceptual
        losses: the same cost as ImageNet weights), one crop of ``size`` per image."""
        from bench.config.cell import CellConfig

        return CellConfig(model=self.model, loss=self.loss, width=self.width, encoder_weights="none",
                          lpips_backbone="random",
                          batch_size=self.batch, size=self.size, crop=self.size, eval_size=self.size,
                          precision=self.precision, compile=self.compile, seed=0)


# ----------------------------------------------------------------------------------------------------- steps


class TimedTrain:
    """``bench.training.loop.TrainStep`` (the step training runs) fed with the next batch on every call, for timing.

    Args:
        setup: what to build (seed 0, random encoder).
        batches: ``batches(k, refs)`` returns the k-th ``(uint8 B×3×H×W batch, uint8 references or None)`` (on
            the CPU, or already on the device); ``refs`` says whether the model takes colour references.
    """

    def __init__(self, setup: Setup, batches: Callable[[int], tuple]):
        from bench.training.loop import make_step

        self.setup, self.batches, self.k = setup, batches, 0
        self.step = make_step(setup.cell(), setup.dev)
        self.net = self.step.model

    def __call__(self) -> torch.Tensor:
        u8, ref = self.batches(self.k, self.step.needs_ref)
        self.k += 1
        return self.step(u8, ref)

    def flops_per_image(self) -> float:
        """FLOPs of one step (forward + backward) per image, counted on the eager (uncompiled) model."""
        u8, ref = self.batches(self.k, self.step.needs_ref)
        return count_flops(lambda: self.step(u8, ref, eager=True)) / self.setup.batch


class InferStep:
    """One call = colorize a batch: ``L → model → ab`` in eval mode without gradients (L already on the device)."""

    def __init__(self, setup: Setup, net: torch.nn.Module | None = None):
        import torch

        import losses
        import models

        from bench.data.colour import split_lab

        self.setup = setup
        dev = setup.dev
        if net is None:
            torch.manual_seed(0)
            net = models.build(setup.model, head=losses.head_of(setup.loss), width=setup.width,
                               encoder_weights="none").to(dev)
            if dev.type == "cuda":
                net = net.to(memory_format=torch.channels_last)
        self.net = net.eval()
        self.fwd = torch.compile(self.net) if setup.compile else self.net
        u8 = _random_batch(setup).to(dev)
        self.L, _ = split_lab(u8)
        if dev.type == "cuda":
            self.L = self.L.contiguous(memory_format=torch.channels_last)
        self.ref = u8.float() / 255.0 if getattr(self.net, "needs_reference", False) else None

    def __call__(self, model=None) -> torch.Tensor:
        import torch

        from bench.core.device import autocast

        m = self.fwd if model is None else model
        with torch.no_grad(), autocast(self.setup.dev, self.setup.amp):
            out = m(self.L, self.ref) if self.ref is not None else m(self.L)
            return self.net.to_ab(out)

    def flops_per_image(self) -> float:
        return count_flops(lambda: self(self.net)) / self.setup.batch


def count_flops(call: Callable[[], object]) -> int:
    """Matmul and convolution FLOPs of one call (``torch.utils.flop_counter``; backward included when it runs)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        call()
    return fc.get_total_flops()


def _random_batch(setup: Setup, seed: int = 0) -> torch.Tensor:
    import torch

    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randint(0, 256, (setup.batch, 3, setup.size, setup.size), generator=g, dtype=torch.uint8)


def synthetic_batches(setup: Setup) -> Callable[[int, bool], tuple]:
    """A fixed random uint8 batch already on the device (no data loading at all), and a second one as colour
    references when asked for."""
    batch, ref = _random_batch(setup).to(setup.dev), _random_batch(setup, 1).to(setup.dev)
    return lambda k, refs: (batch, ref if refs else None)


def image_batches(setup: Setup, files: list[Path], crop_seed: int = 0) -> Callable[[int, bool], tuple]:
    """``bench.training.loop``'s input: images decoded once (shorter side ``size``), fixed-seed crops batched on the
    CPU, and, when asked for, the schedule's colour-reference crops as in training."""
    from bench.data.sources import CropSchedule, ImageStore

    store = ImageStore(files, setup.resize or setup.size)
    schedule = CropSchedule(store, setup.size, crop_seed)
    return lambda k, refs: (schedule.batch(k, setup.batch), schedule.reference_batch(k, setup.batch) if refs else None)


# ----------------------------------------------------------------------------------------------------- timing


def time_calls(fn: Callable, device: torch.device, warmup: int, repeats: int, iters: int) -> list[float]:
    """Seconds per call of ``fn``: ``warmup`` untimed calls, then ``repeats`` timings of ``iters`` calls each.

    On CUDA each timing is bracketed by CUDA events and synchronised once, at its end; on the CPU it is
    ``time.perf_counter``.
    """
    import torch

    device = torch.device(device)
    cuda = device.type == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(device)
    out = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) / 1000.0 / iters)
        else:
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            out.append((time.perf_counter() - t0) / iters)
    return out


def _rates(batch: int, seconds: list[float]) -> dict:
    rates = [batch / s for s in seconds]
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


class PeakMemory:
    """Peak memory during a block, in MiB: CUDA ``max_memory_allocated``; CPU process peak RSS (cumulative)."""

    def __init__(self, device: torch.device):
        import torch

        self.device = torch.device(device)
        self.kind = "cuda_max_allocated" if self.device.type == "cuda" else "cpu_process_peak_rss"
        self.mib = math.nan

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        return False


# ----------------------------------------------------------------------------------------------------- measurements


def measure(setup: Setup, warmup: int = 3, repeats: int = 5, iters: int = 3) -> dict:
    """Training-step and inference throughput, peak memory and FLOPs of one setup on synthetic on-device data.

    Returns:
        A CSV row: the setup, ``train_img_per_s`` / ``infer_img_per_s`` (medians, with ``_min``/``_max`` over the
        repeats), ``train_ms_per_step``, ``train_peak_mib`` / ``infer_peak_mib`` and ``mem_kind``,
        ``train_gflop_per_img`` / ``infer_gflop_per_img`` and ``train_tflop_per_s`` / ``infer_tflop_per_s``.
    """
    dev = setup.dev
    step = TimedTrain(setup, synthetic_batches(setup))
    train_flops = step.flops_per_image()
    infer = InferStep(setup)
    infer_flops = infer.flops_per_image()
    # inference first: on the CPU the peak RSS only grows, so the inference figure is not inflated by training
    with PeakMemory(dev) as mem_i:
        t_inf = time_calls(infer, dev, warmup, repeats, iters)
    with PeakMemory(dev) as mem_t:
        t_train = time_calls(step, dev, warmup, repeats, iters)
    tr, inf = _rates(setup.batch, t_train), _rates(setup.batch, t_inf)
    return {
        "mode": "step", **_setup_cols(setup),
        "train_img_per_s": tr["median"], "train_img_per_s_min": tr["min"], "train_img_per_s_max": tr["max"],
        "train_ms_per_step": 1000 * statistics.median(t_train),
        "infer_img_per_s": inf["median"], "infer_img_per_s_min": inf["min"], "infer_img_per_s_max": inf["max"],
        "train_peak_mib": mem_t.mib, "infer_peak_mib": mem_i.mib, "mem_kind": mem_t.kind,
        "train_gflop_per_img": train_flops / 1e9, "infer_gflop_per_img": infer_flops / 1e9,
        "train_tflop_per_s": train_flops * tr["median"] / 1e12, "infer_tflop_per_s": infer_flops * inf["median"] / 1e12,
        "warmup": warmup, "repeats": repeats, "iters": iters,
    }


def end_to_end(setup: Setup, files: list[Path], warmup: int = 3, repeats: int = 5, iters: int = 3,
               fp32_batch: int = 16) -> list[dict]:
    """Training img/s of the real step fed from decoded images vs. synthetic data on the device, and fp32 batch 16.

    Args:
        setup: the measured configuration (precision, batch, compile ...).
        files: the images to decode (JPEGs of ``--data``).
        fp32_batch: batch size of the fp32 reference measurement from images (0: none).

    Returns:
        CSV rows, ``mode`` = ``e2e-images``, ``e2e-synthetic`` and (unless ``fp32_batch`` is 0)
        ``e2e-images-fp32-b<fp32_batch>``; the first carries ``ratio`` = images / synthetic. Every row has the
        step's FLOPs per image (counted once, on the eager model) and the TFLOP/s they give at its rate.
    """
    dev = setup.dev
    rows = []
    runs = [("e2e-images", setup, image_batches(setup, files)), ("e2e-synthetic", setup, synthetic_batches(setup))]
    if fp32_batch:
        ref = Setup(**{**asdict(setup), "precision": "fp32", "batch": fp32_batch})
        runs.append((f"e2e-images-fp32-b{fp32_batch}", ref, image_batches(ref, files)))
    flops, step = None, None
    for mode, s, batches in runs:
        if step is None or step.setup != s:  # images and synthetic share one step (and one torch.compile)
            step = None  # free the previous model before building the next
            step = TimedTrain(s, batches)
        step.batches, step.k = batches, 0
        if flops is None:  # the same model and crop everywhere: FLOPs per image do not depend on batch or precision
            flops = step.flops_per_image()
        with PeakMemory(dev) as mem:
            t = time_calls(step, dev, warmup, repeats, iters)
        r = _rates(s.batch, t)
        rows.append({"mode": mode, **_setup_cols(s), "n_images": len(files), "train_img_per_s": r["median"],
                     "train_img_per_s_min": r["min"], "train_img_per_s_max": r["max"],
                     "train_ms_per_step": 1000 * statistics.median(t), "train_peak_mib": mem.mib,
                     "mem_kind": mem.kind, "train_gflop_per_img": flops / 1e9,
                     "train_tflop_per_s": flops * r["median"] / 1e12,
                     "warmup": warmup, "repeats": repeats, "iters": iters})
    del step
    rows[0]["ratio"] = rows[0]["train_img_per_s"] / rows[1]["train_img_per_s"]
    return rows


def measure_loader(files: list[Path], size: int, crop: int, batch: int, workers: list[int], batches: int = 20,
                   crop_seed: int = 0) -> list[dict]:
    """Images per second that the streaming loader (``bench.data.loader``: decode, resize, crop in DataLoader workers)
    delivers from ``files``, for each worker count; the first batch (worker start-up) is not timed.

    Args:
        files: image files (JPEG for the paper's figure).
        size: shorter side after resizing.
        crop: side of the crops.
        batch: images per batch.
        workers: the worker counts to measure (0: decoding in this process).
        batches: timed batches per worker count.
        crop_seed: the crop stream's seed.
    """
    from bench.data.loader import DECODER, FileStore, batches as stream
    from bench.data.sources import CropSchedule

    rows = []
    for w in workers:
        feed = stream(CropSchedule(FileStore(files, size), crop, crop_seed), 0, batches + 1, batch, None, workers=w)
        next(feed)  # workers started, their first prefetch under way
        t0 = time.perf_counter()
        n = sum(len(u8) for u8, _ in feed)
        seconds = time.perf_counter() - t0
        rate = n / seconds
        rows.append({"mode": "loader", "loader_workers": w, "size": size, "crop": crop, "batch": batch,
                     "n_images": len(files), "loader_img_per_s": rate,
                     "per_worker_img_per_s": rate / max(w, 1), "decoder": DECODER})
    return rows


def loader_rows(step_rows: list[dict], files: list[Path], size: int, crop: int, batch: int,
                workers: list[int]) -> list[dict]:
    """:func:`measure_loader`'s rows; each timed training step of ``step_rows`` gets ``loader_workers_needed``
    (at the best per-worker rate measured with workers, else the in-process rate) and a line on stdout."""
    loaded = measure_loader(files, size, crop, batch, workers)
    with_workers = [r["per_worker_img_per_s"] for r in loaded if r["loader_workers"] > 0]
    per_worker = max(with_workers) if with_workers else loaded[0]["per_worker_img_per_s"]
    for r in step_rows:
        if r.get("train_img_per_s"):
            r["loader_workers_needed"] = workers_needed(r["train_img_per_s"], per_worker)
            print(f"{r.get('model')} trains {r['train_img_per_s']:.1f} img/s; one loader worker gives "
                  f"{per_worker:.1f} img/s at {size} px ({len(files)} files): "
                  f"{r['loader_workers_needed']} worker(s) keep it fed")
    return loaded


def workers_needed(step_img_per_s: float, per_worker_img_per_s: float) -> int:
    """DataLoader workers that keep a training step of ``step_img_per_s`` fed, at a per-worker rate (rounded up)."""
    return max(1, math.ceil(step_img_per_s / per_worker_img_per_s))


def colorizers() -> list[str]:
    """Registered models whose ``task`` is colorization (``--models all``; AdaIN style transfer is left out)."""
    import models

    out = []
    for name in models.available():
        net = models.build(name, width=0.125, encoder_weights="none")
        if getattr(net, "task", "colorization") == "colorization":
            out.append(name)
    return out


def _setup_cols(s: Setup) -> dict:
    return {"model": s.model, "batch": s.batch, "size": s.size, "resize": s.resize or s.size, "width": s.width, "precision": s.precision,
            "compile": s.compile, "loss": s.loss}


# ----------------------------------------------------------------------------------------------------- CLI


def parse_args(argv=None):
    p = cli.parser("throughput", __doc__)
    cli.add(p, "models", help=f"models to measure, or 'all' (default: the preset's; available: "
                              f"{', '.join(cli.model_names())})")
    cli.add(p, "batch_size", aliases=("--batch",), help="images per step (default: the preset's, 16)")
    cli.add(p, "crop", help="side of the square crops (default: the preset's: 256 on CUDA, 64 on the CPU)")
    cli.add(p, "size", help="images are resized so that their shorter side is SIZE, for --end-to-end and --pipeline "
                            "(default: the crop side; --pipeline: the preset's)")
    p.add_argument("--width", type=float, default=None, help="model width (default: 1.0 on CUDA, 0.25 on the CPU)")
    p.add_argument("--precision", default=None, choices=("fp32", "bf16"),
                   help="fp32, or bf16 autocast (default: bf16 on CUDA, fp32 on the CPU, as in training)")
    p.add_argument("--compile", action="store_true", help="wrap the model in torch.compile")
    p.add_argument("--loss", default="mse", help="training loss, decides the model head (default mse)")
    cli.add(p, "device")
    p.add_argument("--warmup", type=cli.bounded_int(0, cli.MAX_TIMINGS), default=None, help="untimed calls first (default 10 on CUDA, 3 on the CPU; "
                   "more with --compile)")
    p.add_argument("--repeats", type=cli.bounded_int(1, cli.MAX_TIMINGS), default=5, help="timings; the median is reported (default 5)")
    p.add_argument("--iters", type=cli.bounded_int(1, cli.MAX_TIMINGS), default=None, help="calls per timing (default 20 on CUDA, 3 on the CPU)")
    p.add_argument("--end-to-end", action="store_true",
                   help="training img/s fed from decoded images (--data) vs. synthetic on-device data, and fp32 b16")
    cli.add(p, "data", help="images for --end-to-end/--pipeline: named set or folder (default: the bundled Kodak24)")
    cli.add(p, "data_root")
    p.add_argument("--fp32-batch", type=cli.bounded_int(0, cli.MAX_BATCH_SIZE), default=16, help="batch of --end-to-end's fp32 reference from images "
                   "(default 16, the paper's; 0: none)")
    p.add_argument("--n-images", type=cli.bounded_int(1, cli.MAX_IMAGES), default=512, help="at most this many images of --data (default 512)")
    p.add_argument("--loader", type=cli.bounded_int(0, cli.MAX_LOADER_WORKERS), nargs="*", default=None,
                   metavar="WORKERS", help="also time the streaming loader (bench.data.loader) on --data with these "
                                           "worker counts (default 0 1 2) and say how many workers the step needs")
    p.add_argument("--pipeline", action="store_true", help="also compare the CPU data pipelines "
                   "(bench.data.pipeline: the naive per-image loop vs. the batched one)")
    cli.add(p, "out", help="folder of the CSV (default: ./results or $COLORBENCH_RESULTS)")
    return p.parse_args(argv)


def _files(args) -> list[Path]:
    from bench.data.sources import data_root, list_images, resolve

    _, folder, _ = resolve(args.data, data_root(args.data_root))
    return list_images(folder)[: args.n_images]


@dataclass(frozen=True)
class ThroughputRequest:
    """What one ``throughput`` command line asks for, resolved and checked: the one input of :func:`execute`.

    Attributes:
        device: where to measure; ``setups`` one :class:`Setup` per model.
        files: the images of ``--data`` (end-to-end, loader and pipeline modes), else empty.
        out_dir: where the CSV file goes (checked writable before measuring).
        warmup, repeats, iters: the timing loop's steps.
        end_to_end, loader, pipeline, fp32_batch: the extra modes and their options.
        loader_size, pipeline_size, crop: the resize sides of the loader and pipeline modes, and their crop side.
    """

    device: Any
    setups: tuple
    files: tuple
    out_dir: Path
    warmup: int
    repeats: int
    iters: int
    end_to_end: bool
    loader: tuple | None
    pipeline: bool
    fp32_batch: int
    loader_size: int
    pipeline_size: int
    crop: int


@cli.command
def main(argv=None) -> int:
    return execute(request_from_args(parse_args(argv)))


def request_from_args(args) -> ThroughputRequest:
    """Resolve a parsed command line: the device, one setup per model, the data files and the output folder."""
    import losses
    import models

    from bench.config.cell import preset
    from bench.core.device import pick_device

    with cli.usage_errors(ValueError, OSError):
        dev = pick_device(args.device)
        cuda = dev.type == "cuda"
        base = preset("paper" if cuda else "quick")
        names = colorizers() if args.models in (["all"],) else (args.models or [base.model])
        for n in names:
            models.get_factory(n)
        losses.parse_spec(args.loss)
        setups = [Setup(model=n, batch=args.batch_size or base.batch_size, size=args.crop or base.crop, resize=args.size,
                        width=args.width or base.width, precision=args.precision or ("bf16" if cuda else "fp32"),
                        compile=args.compile, loss=args.loss, device=str(dev)) for n in names]
        _check_options(args, setups, base, cuda)
        files = _files(args) if (args.end_to_end or args.pipeline or args.loader is not None) else []
        out_dir = cli.out_dir(args.out) or results_root()
        check_writable(out_dir)  # before measuring: an unwritable folder would lose the measurement
    crop = args.crop or base.crop
    return ThroughputRequest(
        device=dev, setups=tuple(setups), files=tuple(files), out_dir=out_dir,
        warmup=args.warmup if args.warmup is not None else (10 if cuda else 3) + (5 if args.compile else 0),
        repeats=args.repeats, iters=args.iters or (20 if cuda else 3), end_to_end=args.end_to_end,
        loader=None if args.loader is None else tuple(args.loader or [0, 1, 2]), pipeline=args.pipeline,
        fp32_batch=args.fp32_batch, loader_size=args.size or base.size, pipeline_size=args.size or max(base.size, crop),
        crop=crop)


def _check_options(args, setups: list, base, cuda: bool) -> None:
    """The options' ranges (``cli.UsageError``)."""
    if any(s.batch < 1 or s.size < 16 or s.size % 16 for s in setups):
        raise cli.UsageError("--batch-size must be ≥ 1 and --crop a multiple of 16 (≥ 16)")
    if args.size is not None and args.size < (args.crop or base.crop):
        raise cli.UsageError(f"--size {args.size} is smaller than the crop side {args.crop or base.crop}")
    if args.compile and not cuda:
        raise cli.UsageError("--compile is used on CUDA only (as in training)")
    if args.fp32_batch < 0:
        raise cli.UsageError("--fp32-batch must be ≥ 0")
    if args.repeats < 1 or (args.iters is not None and args.iters < 1):
        raise cli.UsageError("--repeats and --iters must be at least 1")


def execute(req: ThroughputRequest) -> int:
    """Measure what a request asks for, print the table and append the rows to the device's CSV file."""
    env = environment(req.device)
    stamp = {"timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    rows = []
    for s in req.setups:
        rows += _end_to_end_rows(req, s) if req.end_to_end else [measure(s, req.warmup, req.repeats, req.iters)]
    if req.loader is not None:
        rows += loader_rows(rows, list(req.files), req.loader_size, req.crop, req.setups[0].batch, list(req.loader))
    if req.pipeline:
        rows.append(_pipeline_row(req))
    rows = [{**stamp, **r, **env} for r in rows]
    path = req.out_dir / f"throughput-{device_slug(str(req.device), env['device_name'])}.csv"
    print(table(rows))  # shown first: a write that fails after all loses nothing measured
    with cli.usage_errors(OSError):
        append_rows(path, rows)
    print(f"appended {len(rows)} row(s) to {path}", file=sys.stderr)
    return 0


def _end_to_end_rows(req: ThroughputRequest, s) -> list[dict]:
    """One setup timed from the images and on synthetic data (and in fp32 with ``--fp32-batch``), with its line."""
    files = list(req.files)
    e2e = end_to_end(s, files, req.warmup, req.repeats, req.iters, req.fp32_batch)
    ref = (f"; fp32 batch {req.fp32_batch} from images: {e2e[2]['train_img_per_s']:.1f} img/s"
           if req.fp32_batch else "")
    print(f"{s.model} ({s.precision}, batch {s.batch}, {s.size}px, {len(files)} images): "
          f"{e2e[0]['train_img_per_s']:.1f} img/s from images, {e2e[1]['train_img_per_s']:.1f} img/s "
          f"synthetic on {req.device.type} → ratio {e2e[0]['ratio']:.2f}{ref}")
    return e2e


def _pipeline_row(req: ThroughputRequest) -> dict:
    """The CPU data pipelines compared (``bench.data.pipeline``), with its line."""
    files = list(req.files)
    with cli.usage_errors(ValueError):
        res = pipeline.compare(files, req.pipeline_size, req.crop, len(files), req.setups[0].batch)
    cached = f" ({res['fast_cached_img_per_s']:.1f} img/s once decoded)" if "fast_cached_img_per_s" in res else ""
    print(f"data pipeline ({len(files)} images): naive {res['naive_img_per_s']:.1f} img/s, "
          f"batched {res['fast_img_per_s']:.1f} img/s{cached}, speedup {res['speedup']:.1f}×")
    return {"mode": "pipeline", "size": req.pipeline_size, "n_images": len(files), **res}


def table(rows: list[dict]) -> str:
    """The measured rows as a Markdown table (rates rounded)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    cols = [c for c in ("mode", "model", "precision", "batch", "size", "compile", "train_img_per_s",
                        "infer_img_per_s", "ratio", "train_peak_mib", "infer_peak_mib", "train_gflop_per_img",
                        "train_tflop_per_s", "loader_workers_needed", "loader_workers", "loader_img_per_s",
                        "per_worker_img_per_s", "naive_img_per_s", "fast_img_per_s", "speedup") if c in df]
    df = df[cols].astype(object)
    return df.where(df.notna(), None).to_markdown(index=False, floatfmt=".3g", missingval="")


if __name__ == "__main__":
    sys.exit(main())
