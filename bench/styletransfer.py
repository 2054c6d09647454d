"""Train and evaluate the AdaIN style-transfer network (Huang & Belongie 2017) on a content and a style folder.

    python -m bench.styletransfer --content ../shared/data/imagenet-sample-256 --style ../shared/data/cbsd68
    python -m bench.styletransfer --content DIR --style DIR --preset paper --encoder-weights imagenet --steps 160000

Only the decoder trains; the VGG-19 encoder (up to relu4_1) is frozen. Loss: L_content + λ L_style with
L_content = MSE(f4(g(t)), t) and L_style = Σ_i MSE(μ(f_i(g(t))), μ(f_i(s))) + MSE(σ(...), σ(...)) over relu1_1 …
relu4_1 (``losses.adain``). Content and style crops come from two fixed-seed streams (``--crop-seed``), so runs
with the same data and seed see byte-identical batches.

Evaluation, on held-out images (every 10th file of each folder when it has at least 10, otherwise the training
images, flagged ``held_out: false``): mean content loss, style loss, their weighted sum, the style loss of the
unchanged content image (what "no stylisation" scores) and throughput (training and inference images/s).
Results go to ``--out`` (default ``results/styletransfer-<content>-<style>``): ``results.json`` (this run),
``results.csv`` (one row per run, appended), ``samples.png`` (content | style | stylised) and ``decoder.pt``.
Bad arguments or data: one ``error:`` line and exit code 2, before any training.
"""
from __future__ import annotations

import io
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import cli
from bench.core.log import get_logger
from bench.core.paths import check_writable, results_root
from bench.core.records import append_rows, atomic_write_bytes, atomic_write_text, command_line, environment, utc_now

log = get_logger(__name__)

# torch, the network, the losses and the data are imported where they are used, after the command line is parsed:
# --help stays fast
if TYPE_CHECKING:
    import torch

    from models.adain import AdaINStyleTransfer

    from bench.data.sources import ImageStore


#: quick: a small network on small crops that trains in minutes on a CPU; paper: the pytorch-AdaIN port's setup
#: (Adam 1e-4 with lr decay 5e-5, batch 8, shorter side 512 → random 256 crops, λ = 10, 160k iterations).
PRESETS = {
    "quick": dict(width=0.25, encoder_weights="none", size=64, crop=64, batch_size=8, lr=1e-4, lr_decay=5e-5,
                  steps=150, style_weight=10.0),
    "paper": dict(width=1.0, encoder_weights="imagenet", size=512, crop=256, batch_size=8, lr=1e-4, lr_decay=5e-5,
                  steps=160_000, style_weight=10.0),
}


def parse_args(argv=None):
    p = cli.parser("styletransfer", __doc__)
    p.add_argument("--content", required=True, help="folder of content images (searched recursively)")
    p.add_argument("--style", required=True, help="folder of style images (searched recursively)")
    cli.add(p, "out", help="output folder (default: results/styletransfer-<content>-<style> under the current "
                           "folder, or under $COLORBENCH_RESULTS)")
    cli.add(p, "preset", choices=sorted(PRESETS), help="quick (default without a GPU) or paper")
    cli.add(p, "steps", help="training iterations (default: the preset's)")
    cli.add(p, "batch_size", help="content/style pairs per step (paper: 8)")
    cli.add(p, "lr", help="Adam learning rate (paper: 1e-4)")
    p.add_argument("--lr-decay", type=float, default=None, help="lr at step k is lr / (1 + decay k) (paper: 5e-5)")
    cli.add(p, "size", help="images are resized so that their shorter side is SIZE (paper: 512)")
    cli.add(p, "crop", help="side of the square training crops, a multiple of 8 (paper: 256)")
    p.add_argument("--style-weight", type=float, default=None, help="λ, the weight of the style loss (paper: 10)")
    p.add_argument("--alpha", type=float, default=1.0, help="content/style blend at evaluation, in [0, 1] (default 1)")
    p.add_argument("--width", type=float, default=None, help="channel multiplier (pretrained weights need 1.0)")
    cli.add(p, "encoder_weights", help="none | imagenet | PATH (VGG-19 weights of the encoder)")
    cli.add(p, "crop_seed", default=0, help="seed of the fixed crop streams (default 0)")
    p.add_argument("--seed", type=cli.bounded_int(0, cli.MAX_SEED), default=0,
                   help="seed of the decoder's initialisation (default 0)")
    p.add_argument("--eval-images", type=cli.bounded_int(1, cli.MAX_IMAGES), default=16, help="content images to evaluate on at most (default 16)")
    cli.add(p, "device", "no_progress")
    return p.parse_args(argv)


def settings(args, device: torch.device) -> dict:
    """The preset with the command line's overrides, validated (``UsageError`` otherwise)."""
    from bench.config.cell import default_preset

    name = default_preset(args.preset, device)
    cfg = {"preset": name, **PRESETS[name]}
    for key in ("steps", "batch_size", "lr", "lr_decay", "size", "crop", "style_weight", "width", "encoder_weights"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    cfg.update(alpha=args.alpha, crop_seed=args.crop_seed, seed=args.seed, eval_images=args.eval_images)
    if cfg["steps"] < 1 or cfg["batch_size"] < 1 or cfg["eval_images"] < 1:
        raise cli.UsageError("--steps, --batch-size and --eval-images must be at least 1")
    if not cfg["lr"] > 0 or cfg["lr_decay"] < 0:
        raise cli.UsageError(f"--lr must be positive and --lr-decay non-negative, got {cfg['lr']} and {cfg['lr_decay']}")
    if not cfg["style_weight"] > 0:
        raise cli.UsageError(f"--style-weight must be positive, got {cfg['style_weight']}")
    if not 0.0 <= cfg["alpha"] <= 1.0:
        raise cli.UsageError(f"--alpha must be in [0, 1], got {cfg['alpha']}")
    if not 0 < cfg["width"] <= 4:
        raise cli.UsageError(f"--width must be in (0, 4], got {cfg['width']}")
    # The encoder pools three times before relu4_1 and the decoder upsamples three times: sides must divide by 8.
    if cfg["crop"] < 8 or cfg["crop"] % 8:
        raise cli.UsageError(f"--crop must be a positive multiple of 8, got {cfg['crop']}")
    if cfg["crop"] > cfg["size"]:
        raise cli.UsageError(f"--crop {cfg['crop']} is larger than the resized shorter side --size {cfg['size']}")
    return cfg


def split(folder: str) -> tuple[list[Path], list[Path], bool]:
    """(training files, evaluation files, whether the evaluation files are held out) of an image folder."""
    from bench.data.sources import list_images, split_files

    files = list_images(Path(folder).expanduser())
    if len(files) < 10:
        return files, files, False
    train, held, _ = split_files(files, 10, None)
    return train, held, True


def lr_at(cfg: dict, step: int) -> float:
    """The pytorch-AdaIN port's inverse-time decay: lr / (1 + decay · step)."""
    return cfg["lr"] / (1.0 + cfg["lr_decay"] * step)


def losses_of(model: AdaINStyleTransfer, content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0):
    """Per-sample (content loss, style loss) of the network on a batch, and the stylised images."""
    from losses.adain import content_term, style_term

    g, t, fs = model.stylise(content, style, alpha)
    fg = model.encode(g)
    return content_term(fg[-1], t), style_term(fg, fs), g


def train(model: AdaINStyleTransfer, cfg: dict, content: ImageStore, style: ImageStore, device: torch.device,
          progress: bool = True) -> dict:
    """Train the decoder for ``cfg["steps"]`` steps; returns timings and the loss history.

    Raises:
        FloatingPointError: the loss became NaN or infinite.
    """
    import torch
    from tqdm.auto import tqdm

    from bench.data.sources import CropSchedule

    opt = torch.optim.Adam(model.decoder.parameters(), lr=cfg["lr"])
    # Two independent fixed-seed streams: which style a content crop meets is part of the seed, not of the model.
    c_stream = CropSchedule(content, cfg["crop"], cfg["crop_seed"])
    s_stream = CropSchedule(style, cfg["crop"], cfg["crop_seed"] + 1)
    history = []
    bar = tqdm(total=cfg["steps"], desc="adain decoder", leave=False, disable=not progress, dynamic_ncols=True)
    model.train()
    t0 = time.perf_counter()
    for step in range(cfg["steps"]):
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step)
        c = c_stream.batch(step, cfg["batch_size"]).to(device).float().div_(255.0)
        s = s_stream.batch(step, cfg["batch_size"]).to(device).float().div_(255.0)
        lc, ls, _ = losses_of(model, c, s)
        loss = lc.mean() + cfg["style_weight"] * ls.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        # Reading the loss back every step is what a CPU run wants; it costs little next to a VGG pass.
        value = loss.item()
        if not math.isfinite(value):
            bar.close()
            raise FloatingPointError(f"the loss became {value} at step {step + 1}")
        if step % 10 == 0 or step == cfg["steps"] - 1:
            history.append({"step": step + 1, "loss": value, "content_loss": lc.mean().item(),
                            "style_loss": ls.mean().item()})
            bar.set_postfix(loss=f"{value:.4f}")
        bar.update(1)
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_time = time.perf_counter() - t0
    bar.close()
    return {"train_time_s": train_time, "train_img_per_s": cfg["steps"] * cfg["batch_size"] / train_time,
            "history": history}


def evaluate(model: AdaINStyleTransfer, content: torch.Tensor, style: torch.Tensor, cfg: dict, device) -> tuple[dict, torch.Tensor]:
    """Mean content and style losses on uint8 evaluation pairs (content i with style i mod n), and inference speed.

    Returns:
        the metrics, and up to four (content, style, stylised) triplets for the sample sheet.
    """
    import torch

    from losses.adain import style_term

    model.eval()
    n, bs = len(content), cfg["batch_size"]
    styles = style[torch.arange(n) % len(style)]
    lc_all, ls_all, ls_id, sheet = [], [], [], []
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad():
        for s0 in range(0, n, bs):
            c = content[s0 : s0 + bs].to(device).float() / 255.0
            s = styles[s0 : s0 + bs].to(device).float() / 255.0
            lc, ls, g = losses_of(model, c, s, cfg["alpha"])
            lc_all.append(lc.cpu())
            ls_all.append(ls.cpu())
            ls_id.append(style_term(model.encode(c), model.encode(s)).cpu())  # the "no stylisation" baseline
            if s0 == 0:
                k = min(4, len(c))
                sheet = torch.cat([c[:k], s[:k], g[:k].clamp(0, 1)]).cpu()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    lc, ls = torch.cat(lc_all), torch.cat(ls_all)
    metrics = {
        "content_loss": lc.mean().item(),
        "style_loss": ls.mean().item(),
        "total_loss": (lc + cfg["style_weight"] * ls).mean().item(),
        "style_loss_content_image": torch.cat(ls_id).mean().item(),
        "eval_img_per_s": n / elapsed,  # includes the baseline's extra encoder passes: a lower bound
        "n_eval": n,
    }
    return metrics, sheet


def sheet_grid(images: torch.Tensor, rows: int, pad: int = 2) -> torch.Tensor:
    """Tile ``N×3×H×W`` images (row after row, ``N/rows`` per row) into one ``3×H'×W'`` picture, ``pad`` black
    pixels around each."""
    n, c, h, w = images.shape
    cols = n // rows
    grid = images.new_zeros(c, rows * (h + pad) + pad, cols * (w + pad) + pad)
    for i in range(rows * cols):
        r, k = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        grid[:, top:top + h, left:left + w] = images[i]
    return grid


@dataclass(frozen=True)
class StyleTransferRequest:
    """What one ``styletransfer`` command line asks for, resolved and checked: the one input of :func:`execute`.

    Attributes:
        device: where to train.
        cfg: the settings (:func:`settings`).
        content, style: the folders; ``content_split``/``style_split`` their (train, eval, held out) files.
        out: the output folder (checked writable).
        command: the command recorded in ``results.json``.
        progress: show a progress bar.
    """

    device: Any
    cfg: dict
    content: str
    style: str
    content_split: tuple
    style_split: tuple
    out: Path
    command: str
    progress: bool


@cli.command
def main(argv=None) -> int:
    args = parse_args(argv)
    return execute(request_from_args(args, cli.arguments(argv)))


def request_from_args(args, argv: list[str]) -> StyleTransferRequest:
    """Resolve a parsed command line: device, settings, the splits of both folders, the output folder."""
    from bench.core.device import pick_device
    from bench.data.sources import DataError

    with cli.usage_errors(ValueError, DataError, OSError):
        device = pick_device(args.device)
        cfg = settings(args, device)
        out = Path(args.out).expanduser() if args.out else \
            results_root() / f"styletransfer-{Path(args.content).name}-{Path(args.style).name}"
        req = StyleTransferRequest(device, cfg, str(args.content), str(args.style), split(args.content),
                                   split(args.style), out, command_line(cli.prog("styletransfer"), argv),
                                   not args.no_progress)
        check_writable(out)
    return req


def execute(req: StyleTransferRequest) -> int:
    """Train the network of a request, evaluate it on the held-out pairs and write its results."""
    import torch

    from models.adain import AdaINStyleTransfer
    from models.vgg import EncoderWeightsError

    cfg, device = req.cfg, req.device
    with cli.usage_errors(ValueError, EncoderWeightsError, OSError):
        torch.manual_seed(cfg["seed"])  # the decoder's initialisation; the crops have their own seed
        model = AdaINStyleTransfer(cfg["width"], cfg["encoder_weights"]).to(device)
    stores = _stores(req)
    log.info(f"adain: {len(stores['content'])} content / {len(stores['style'])} style training images, "
             f"{cfg['steps']} steps of {cfg['batch_size']} at {cfg['crop']}² on {device} "
             f"(encoder {'pretrained' if model.encoder_pretrained else 'random, frozen'}) → {req.out}")
    try:
        fit = train(model, cfg, stores["content"], stores["style"], device, progress=req.progress)
    except FloatingPointError as err:
        print(f"error: training diverged: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        raise cli.Interrupted("nothing was written") from None
    metrics, sheet = evaluate(model, stores["content_eval"].centre_crops(cfg["crop"]),
                              stores["style_eval"].centre_crops(cfg["crop"]), cfg, device)
    metrics.update(train_time_s=fit["train_time_s"], train_img_per_s=fit["train_img_per_s"],
                   final_train_loss=fit["history"][-1]["loss"])
    _write_results(req, model, stores, fit, metrics, sheet)
    print(f"content loss {metrics['content_loss']:.4f}  style loss {metrics['style_loss']:.4f} "
          f"(content image: {metrics['style_loss_content_image']:.4f})  "
          f"train {metrics['train_img_per_s']:.1f} img/s  inference {metrics['eval_img_per_s']:.1f} img/s  → {req.out}")
    return 0


def _stores(req: StyleTransferRequest) -> dict:
    """The training and evaluation images of both folders, decoded once (their warnings logged)."""
    from bench.data.sources import DataError, ImageStore

    (c_train, c_eval, _), (s_train, s_eval, _) = req.content_split, req.style_split
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with cli.usage_errors(DataError):
            stores = {name: ImageStore(files, req.cfg["size"]) for name, files in
                      (("content", c_train), ("style", s_train),
                       ("content_eval", c_eval[: req.cfg["eval_images"]]), ("style_eval", s_eval))}
    for w in caught:
        log.warning(w.message)
    return stores


def _write_results(req: StyleTransferRequest, model, stores: dict, fit: dict, metrics: dict, sheet) -> None:
    """``results.json``, a row of ``results.csv``, the decoder's weights and the sample sheet, in ``req.out``."""
    import torch

    from bench.reporting.samples import save_png

    c_held, s_held = req.content_split[2], req.style_split[2]
    env = environment(req.device)
    record = {"command": req.command, "content": req.content, "style": req.style, "config": req.cfg,
              "encoder_pretrained": model.encoder_pretrained, "held_out": {"content": c_held, "style": s_held},
              "n_train": {"content": len(stores["content"]), "style": len(stores["style"])},
              "metrics": metrics, "history": fit["history"], "environment": env, "finished_at": utc_now()}
    atomic_write_text(req.out / "results.json", json.dumps(record, indent=2))
    append_rows(req.out / "results.csv", [{"finished_at": record["finished_at"], "content": req.content,
                                           "style": req.style, **req.cfg,
                                           "encoder_pretrained": model.encoder_pretrained,
                                           "held_out": c_held and s_held, **metrics, **env}])
    buf = io.BytesIO()  # written atomically; a full disk is one line (bench.cli), not torch's RuntimeError
    torch.save(model.decoder.state_dict(), buf)
    atomic_write_bytes(req.out / "decoder.pt", buf.getvalue())
    if len(sheet):
        save_png(sheet_grid(sheet, rows=3), req.out / "samples.png")  # rows: content, style, stylised


if __name__ == "__main__":
    sys.exit(main())
