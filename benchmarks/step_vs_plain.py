"""The harness's training step against a minimal hand-written PyTorch loop, timed interleaved in one process.

    PYTHONPATH=. python benchmarks/step_vs_plain.py [--preset quick] [--cells mse kl] [--rounds 30] [--threads N]

Both sides train their own copy of the same network (same seed, same initial weights), with the same loss object,
batch, crops and thread count, one step each in turn (harness, plain, harness, plain ...), so that load on the
machine falls on both alike. What each side includes:

- **harness**: ``bench.training.loop.TrainStep.__call__`` on the uint8 crops exactly as ``train_cell`` calls it on a
  CPU: uint8 → Lab on the device, model, loss, backward, Adam, and the loss read back every step (``check_every=1``).
- **plain**: ``L, ab`` computed once before timing (Lab not included), then per step only
  ``opt.zero_grad(); loss = criterion(model(L), ab, L=L, rgb=rgb); loss.backward(); opt.step()``.
- **plain+lab**: the plain loop plus the same uint8 → Lab conversion per step (``bench.data.colour.split_lab``).

Reported per side: median wall time per step, and user and system CPU seconds per step (``getrusage`` of the
process around each step, so every thread counts). ``harness/plain`` is the plain loop's median time over the
harness's (1.0: as fast; the goal is ≥ 0.9).
"""
from __future__ import annotations

import argparse
import copy
import resource
import statistics
import time

import torch

from bench.config import grids
from bench.config.cell import merge, preset
from bench.data.colour import split_lab
from bench.data.sources import CropSchedule
from bench.training.loop import make_step, prepare_folds

SIDES = ("harness", "plain", "plain+lab")


class Plain:
    """A hand-written loop over the same network and loss; ``lab`` adds the uint8 → Lab conversion per step."""

    def __init__(self, model, criterion, lr: float, lab: bool):
        self.model, self.criterion, self.lab = model, criterion, lab
        self.opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
        model.train()

    def __call__(self, batch):
        u8, L, ab, rgb = batch
        if self.lab:
            L, ab = split_lab(u8)
            rgb = u8.float().div_(255.0)
        self.opt.zero_grad(set_to_none=True)
        loss = self.criterion(self.model(L), ab, L=L, rgb=rgb, model=self.model)
        loss.backward()
        self.opt.step()
        return loss


def _usage() -> tuple[float, float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), r.ru_utime, r.ru_stime


def compare(cell_name: str, base, prep, rounds: int = 30, warmup: int = 3, n_batches: int = 4) -> dict:
    """Time the harness step and the plain loops, interleaved, on one cell; returns per-side medians (s/step)."""
    cell = {c.name: c for c in grids.get("losses").cells}[cell_name]
    cfg = merge(base, cell.changes)
    step = make_step(cfg, torch.device("cpu"), prep)
    schedule = CropSchedule(prep.train, cfg.crop, cfg.crop_seed)
    batches = []
    for k in range(n_batches):
        u8 = schedule.batch(k, cfg.batch_size)
        L, ab = split_lab(u8)
        batches.append((u8, L, ab, u8.float() / 255.0))
    runners = {"harness": lambda b: step(b[0])}  # check_every=1 on the CPU: the loss is read back inside
    for side in SIDES[1:]:  # their own copies of the same initial network and loss
        model, crit = copy.deepcopy(step.model), copy.deepcopy(step.criterion)
        plain = Plain(model, crit, cfg.lr, lab=side == "plain+lab")
        runners[side] = plain
    times = {s: {"wall": [], "user": [], "sys": []} for s in SIDES}
    for r in range(warmup + rounds):
        for side in SIDES:
            b = batches[r % n_batches]
            t0, u0, s0 = _usage()
            runners[side](b)
            t1, u1, s1 = _usage()
            if r >= warmup:
                times[side]["wall"].append(t1 - t0)
                times[side]["user"].append(u1 - u0)
                times[side]["sys"].append(s1 - s0)
    out = {"cell": cell_name, "batch": cfg.batch_size, "crop": cfg.crop, "width": cfg.width,
           "threads": torch.get_num_threads(), "rounds": rounds}
    for side in SIDES:
        out[side] = {k: (statistics.median(v) if k == "wall" else sum(v) / len(v)) for k, v in times[side].items()}
    out["harness/plain"] = out["plain"]["wall"] / out["harness"]["wall"]
    out["harness/plain+lab"] = out["plain+lab"]["wall"] / out["harness"]["wall"]
    return out


def table(rows: list[dict]) -> str:
    lines = [("| cell | threads | harness ms/step (user, sys s) | plain ms/step (user, sys) "
              "| plain+lab ms/step (user, sys) | harness/plain | harness/plain+lab |"), "|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{r[s]['wall'] * 1e3:.1f} ({r[s]['user']:.3f}, {r[s]['sys']:.3f})" for s in SIDES]
        lines.append(f"| {r['cell']} | {r['threads']} | " + " | ".join(cells) +
                     f" | {r['harness/plain']:.2f} | {r['harness/plain+lab']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="quick")
    p.add_argument("--cells", nargs="+", default=["mse", "kl"])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--set", nargs="*", default=[], help="KEY=VALUE overrides of the preset (JSON values)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from bench.config.cell import parse_overrides
    base = merge(preset(args.preset), parse_overrides(args.set))
    prep = prepare_folds(base)[0]
    rows = [compare(c, base, prep, args.rounds) for c in args.cells]
    print(table(rows))


if __name__ == "__main__":
    main()
