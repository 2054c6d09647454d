"""Short learning curves that chose the ``study`` preset (results/study-preset-cpu.md).

    PYTHONPATH=. python benchmarks/study_curves.py --loss mse --set steps=600 width=0.25 --every 100 --out curve.json

Trains one cell with ``bench.training.loop``'s own ``TrainStep`` on the ``study`` preset's data (``--data``, default
imagenet-sample; ``--test`` kodak24) with the preset's settings changed by ``--set``, on one thread by default, and
at every ``--every`` steps scores the validation images with:

- ``val_psnr``: the network's PSNR (as the harness's validation computes it);
- ``mean_psnr``: a constant prediction of the training images' mean ab everywhere (the mean-colour baseline);
- ``tint_psnr``: each image's own true mean ab everywhere (an oracle global tint: beating it needs colour that
  varies within the image);
- ``spatial_r``: correlation over all pixels between the predicted and the true ab minus their image's mean ab
  (0: no spatial colour; 1: perfect).

CPU seconds (user + system of the process) are recorded with each point, so times scale to other machines.

    python benchmarks/study_curves.py summarise curve.json [plot.png]     # markdown table (+ plot)
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch

from bench.config.cell import merge, parse_overrides, preset
from bench.data.colour import merge_lab, rgb_to_lab, split_lab
from bench.data.sources import CropSchedule
from bench.metrics.compute import colorize, psnr_per_image
from bench.training.loop import make_step, prepare


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def train_mean_ab(prep) -> torch.Tensor:
    """Mean ab over the training images (every 4th pixel of each, as the KL prior counts them)."""
    tot, n = torch.zeros(2, dtype=torch.float64), 0
    for img in prep.train.images:
        ab = rgb_to_lab(img[None, :, ::4, ::4].float() / 255.0)[0, 1:].double()
        tot += ab.sum((1, 2))
        n += ab[0].numel()
    return (tot / n).float()


@torch.no_grad()
def score(model, images: torch.Tensor, mean_ab: torch.Tensor, batch: int = 32) -> dict:
    was = model.training
    model.eval()
    psnr, mean_p, tint_p, dp, dt = [], [], [], [], []
    for s in range(0, len(images), batch):
        u8 = images[s:s + batch]
        rgb = u8.float() / 255.0
        L, ab = split_lab(u8)
        pred = colorize(model, L, None).float()
        psnr.append(psnr_per_image(merge_lab(L, pred), rgb))
        mean_p.append(psnr_per_image(merge_lab(L, mean_ab.view(1, 2, 1, 1).expand_as(ab)), rgb))
        tint = ab.mean((2, 3), keepdim=True)
        tint_p.append(psnr_per_image(merge_lab(L, tint.expand_as(ab)), rgb))
        dp.append((pred - pred.mean((2, 3), keepdim=True)).flatten())
        dt.append((ab - tint).flatten())
    model.train(was)
    dp, dt = torch.cat(dp), torch.cat(dt)
    r = float((dp * dt).sum() / (dp.norm() * dt.norm()).clamp_min(1e-12))
    gain = torch.cat(psnr) - torch.cat(mean_p)
    return {"val_psnr": float(torch.cat(psnr).mean()), "mean_psnr": float(torch.cat(mean_p).mean()),
            "tint_psnr": float(torch.cat(tint_p).mean()), "spatial_r": r,
            "wins": int((gain > 0).sum()), "n": len(gain)}


def summarise(jsonl: str, png: str | None = None) -> str:
    """A markdown table of every recorded point (and a PNG of val PSNR minus the mean-colour PSNR over steps)."""
    with open(jsonl) as f:
        rows = sorted((json.loads(line) for line in f), key=lambda r: (r["label"], r["loss"], r["step"]))

    def c(r):
        return r["config"]

    lines = ["| setting | loss | step | train CPU s | val PSNR | mean-colour PSNR | gap (dB) | oracle tint PSNR | spatial r "
             "| test gap (dB) | test images won | test spatial r |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        setting = (f"{r['label']}: {c(r)['size']} px, width {c(r)['width']}, batch {c(r)['batch_size']}, "
                   f"lr {c(r)['lr']} {c(r)['lr_schedule']}")
        test = (f"{r['test_val_psnr'] - r['test_mean_psnr']:+.2f} | {r['test_wins']}/{r['test_n']} | "
                f"{r['test_spatial_r']:.3f}" if "test_val_psnr" in r else "– | – | –")
        lines.append(f"| {setting} | {r['loss']} | {r['step']} / {c(r)['steps']} | {r['train_cpu_s']:.0f} | "
                     f"{r['val_psnr']:.2f} | {r['mean_psnr']:.2f} | {r['val_psnr'] - r['mean_psnr']:+.2f} | "
                     f"{r['tint_psnr']:.2f} | {r['spatial_r']:.3f} | {test} |")
    if png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for key in dict.fromkeys((r["label"], r["loss"]) for r in rows):
            pts = [r for r in rows if (r["label"], r["loss"]) == key]
            steps = [r["step"] for r in pts]
            axes[0].plot(steps, [r["val_psnr"] - r["mean_psnr"] for r in pts], marker="o", label=" ".join(key))
            axes[1].plot(steps, [r["spatial_r"] for r in pts], marker="o", label=" ".join(key))
            tested = [r for r in pts if "test_val_psnr" in r]
            axes[2].plot([r["step"] for r in tested], [r["test_val_psnr"] - r["test_mean_psnr"] for r in tested],
                         marker="o", label=" ".join(key))
        axes[0].axhline(0, color="grey", lw=0.8)
        axes[2].axhline(0, color="grey", lw=0.8)
        axes[2].set(xlabel="step", ylabel="test PSNR − mean-colour PSNR (dB)")
        axes[0].set(xlabel="step", ylabel="val PSNR − mean-colour PSNR (dB)")
        axes[1].set(xlabel="step", ylabel="spatial r (pred vs true ab, image mean removed)")
        axes[0].legend()
        fig.tight_layout()
        fig.savefig(png, dpi=100)
    return "\n".join(lines)


def main(argv=None) -> None:
    if argv is None and sys.argv[1:2] == ["summarise"]:
        print(summarise(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--loss", default="mse")
    p.add_argument("--preset", default="study")
    p.add_argument("--set", nargs="*", default=[], help="KEY=VALUE overrides of the preset")
    p.add_argument("--data", default="imagenet-sample")
    p.add_argument("--test", default="kodak24")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--label", default="")
    p.add_argument("--out", required=True, help="JSON lines file (appended)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = merge(preset(args.preset), {"loss": args.loss, **parse_overrides(args.set)})
    cfg.validate()
    t0, c0 = time.perf_counter(), _cpu()
    prep = prepare(cfg, args.data, args.test, args.data_root)
    mean_ab = train_mean_ab(prep)
    step = make_step(cfg, torch.device("cpu"), prep)
    schedule = CropSchedule(prep.train, cfg.crop, cfg.crop_seed)
    head = {"label": args.label, "loss": cfg.loss, "config": cfg.to_flat(), "threads": args.threads,
            "n_train": len(prep.train.images), "n_val": len(prep.val_images), "prepare_cpu_s": _cpu() - c0}
    print(json.dumps(head), file=sys.stderr)
    train_cpu = 0.0
    with open(args.out, "a") as f:
        for k in range(cfg.steps):
            c1 = _cpu()
            step(schedule.batch(k, cfg.batch_size))
            train_cpu += _cpu() - c1
            n = k + 1
            if n % args.every == 0 or n == cfg.steps:
                row = {**head, "step": n, "loss_value": step.check(), "train_cpu_s": train_cpu,
                       "wall_s": time.perf_counter() - t0, **score(step.model, prep.val_images, mean_ab)}
                test = score(step.model, prep.test_images, mean_ab)
                row.update({f"test_{k}": v for k, v in test.items()})
                f.write(json.dumps(row) + "\n")
                f.flush()
                print(f"{args.label} {cfg.loss} step {n}: val {row['val_psnr']:.2f} mean {row['mean_psnr']:.2f} "
                      f"tint {row['tint_psnr']:.2f} r {row['spatial_r']:.3f} cpu {train_cpu:.0f}s | test gap "
                      f"{row['test_val_psnr'] - row['test_mean_psnr']:+.2f} wins {row['test_wins']}/{row['test_n']} "
                      f"r {row['test_spatial_r']:.3f}", file=sys.stderr)


if __name__ == "__main__":
    main()
