"""Time to the first training step and peak memory against the size of the training set (synthetic photos).

    python -m bench.scale --cache-mb 64                    # 300 and 20,000 photos: the first cached, the second streamed
    python -m bench.scale --images 300 5000 20000 --cache-mb 64
    python -m bench.scale --images 100000 --preset paper --links --batch-size 2   # paper preset, 100k-file list

For each size, synthetic JPEG photos (smooth random colour fields with noise, 64–120 px; ``--links``: hard links to 1,000
distinct ones, which is enough to test listing and memory) are written once into ``--work`` with a file list, and a
fresh process prepares the data and trains one step with ``bench.ablate``'s code (``bench.training.loop.prepare``, the
loader, one ``TrainStep``; not the run folder's bookkeeping, nor the baseline rows that ``bench.ablate`` scores
before its first run). It reports the seconds from the start of ``prepare`` to the end of step 1, the peak
resident set size of that process and of its DataLoader workers, and whether the set was cached in RAM or streamed.
Held-out test images: 4 more synthetic photos. What this cannot say: how fast a real disk or a network file system
serves files (the files here sit in the page cache).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import cli

DISTINCT = 1000  # distinct photos behind --links


def synthetic_photos(folder: Path, n: int, seed: int = 0, links: bool = False) -> Path:
    """Write ``n`` synthetic JPEGs into ``folder/img/`` (once: a complete folder is reused) and a file list
    ``folder/train.txt``; returns the list."""
    import numpy as np
    from PIL import Image

    listing = folder / "train.txt"
    if listing.is_file():
        return listing
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        name = f"img/{i // 1000:04d}/{i:07d}.jpg"
        path = folder / name
        path.parent.mkdir(exist_ok=True)
        if links and i >= DISTINCT:
            os.link(folder / f"img/{(i % DISTINCT) // 1000:04d}/{i % DISTINCT:07d}.jpg", path)
        else:
            h, w = int(rng.integers(64, 121)), int(rng.integers(64, 121))
            field = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
            img = np.asarray(field, dtype=float) + rng.normal(0, 8, (h, w, 3))  # a distinct photo-like field each
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=85)
        names.append(name)
    tmp = folder / "train.txt.tmp"
    tmp.write_text("\n".join(names) + "\n")
    tmp.replace(listing)  # written last: a folder with train.txt is complete
    return listing


def first_step(data: str, test: str, preset_name: str, cache_mb: int | None, workers: int | None,
               batch_size: int | None = None) -> dict:
    """Prepare the data and train one step as ``bench.ablate`` does; seconds and peak memory (in this process)."""
    import torch

    from bench.config.cell import merge, preset
    from bench.data.loader import batches
    from bench.data.sources import CropSchedule
    from bench.training.loop import make_step, prepare

    cfg = merge(preset(preset_name), {"loss": "mse", **({"batch_size": batch_size} if batch_size else {})})
    t0 = time.perf_counter()
    prep = prepare(cfg, data, test, verify=False, cache_mb=cache_mb, loader_workers=workers)
    t_data = time.perf_counter() - t0
    step = make_step(cfg, torch.device("cpu"), prep)
    feed = batches(CropSchedule(prep.train, cfg.crop, cfg.crop_seed), 0, cfg.steps, cfg.batch_size, None,
                   prep.loader_workers)
    u8, _ = next(feed)
    step(u8)
    loss = step.check()
    t_step = time.perf_counter() - t0
    feed.close()  # stops the DataLoader workers, so that their peak memory is counted below
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kib_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"images": len(prep.train), "streamed": prep.streamed, "loader_workers": prep.loader_workers,
            "prepare_s": round(t_data, 2), "first_step_s": round(t_step, 2), "peak_rss_mb": round(kib / 1024, 1),
            "worker_peak_rss_mb": round(kib_children / 1024, 1), "loss": loss, "preset": preset_name,
            "size": cfg.size, "batch_size": cfg.batch_size}


def measure(n: int, work: Path, preset_name: str, cache_mb: int | None, workers: int | None, links: bool,
            batch_size: int | None = None) -> dict:
    """Write (or reuse) ``n`` synthetic photos and time the first step in a fresh process."""
    listing = synthetic_photos(work / f"train-{n}{'-links' if links else ''}", n, links=links)
    test = synthetic_photos(work / "test-4", 4, seed=1).parent / "img"
    argv = [sys.executable, "-m", "bench.scale", "--child", str(listing), "--test", str(test), "--preset",
            preset_name] + ([] if cache_mb is None else ["--cache-mb", str(cache_mb)]) + (["--loader-workers", str(workers)] if workers is not None
                                                         else []) + (["--batch-size", str(batch_size)]
                                                                     if batch_size else [])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"the first step on {n} images failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    """A markdown table of :func:`measure` results."""
    head = "| training images | kept | loader workers | prepare (s) | to end of step 1 (s) | peak RSS (MB) | " \
           "worker peak RSS (MB) |\n|---:|---|---:|---:|---:|---:|---:|\n"
    return head + "".join(
        f"| {r['images']:,} | {'streamed' if r['streamed'] else 'RAM'} | {r['loader_workers']} | {r['prepare_s']} | "
        f"{r['first_step_s']} | {r['peak_rss_mb']} | {r['worker_peak_rss_mb']} |\n" for r in rows)


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.parser("scale", __doc__)
    p.add_argument("--images", type=cli.bounded_int(1, cli.MAX_IMAGES), nargs="+", default=[300, 20_000],
                   help="training-set sizes to measure (default: 300 20000)")
    cli.add(p, "preset", default="quick", help="training preset (default quick)")
    cli.add(p, "cache_mb", help="RAM budget of the decoded training set in MiB (default: the training commands' "
                                "default, a quarter of the available memory; 64 caches the 300 and streams the 20,000)")
    cli.add(p, "loader_workers")
    cli.add(p, "batch_size")
    p.add_argument("--links", action="store_true", help="hard links to 1,000 distinct photos (fast to write)")
    p.add_argument("--work", default=None, help="where the synthetic photos go (default: a temporary folder)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--test", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


@cli.command
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(first_step(args.child, args.test, args.preset, args.cache_mb, args.loader_workers,
                                    args.batch_size)))
        return 0
    with tempfile.TemporaryDirectory(prefix="colorbench-scale-") as tmp:
        work = Path(args.work).expanduser() if args.work else Path(tmp)
        rows = []
        for n in args.images:
            rows.append(measure(n, work, args.preset, args.cache_mb, args.loader_workers, args.links,
                                args.batch_size))
            print(f"{n:,} images: {rows[-1]['first_step_s']} s to the end of step 1, peak RSS "
                  f"{rows[-1]['peak_rss_mb']} MB", file=sys.stderr)
    print(table(rows), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
