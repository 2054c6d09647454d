"""One worker against ``--workers N`` on the same small grid: wall time, CPU time (the launcher's and its workers')
and the speed-up, as a markdown table. Each measurement is one ``benchmarks/run_share.py`` process (which times a
``bench.ablate`` command and, for one worker, the share of its time inside training steps) into a fresh run folder.

    PYTHONPATH=. python benchmarks/workers_share.py                     # tiny grid × 2 seeds, quick preset, 2 repeats
    PYTHONPATH=. python benchmarks/workers_share.py --quick             # a check that it works (32 px, 2 steps)
    PYTHONPATH=. python benchmarks/workers_share.py --workers 2 4 --md results/workers-share-cpu.md

The measured commands get neither ``OMP_NUM_THREADS`` nor ``OMP_WAIT_POLICY`` from this process: one worker runs
with torch's default threads (one per core), ``--workers N`` with the launcher's split (``bench.grid.workers``). The
settings alternate within each repeat, so that a change in the machine's load hits both. Run it on an idle machine:
the table records the load average before and after.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: the grid of the measurement: 4 cells × 2 seeds, one split (8 runs of the quick preset's 30 steps at 64 px)
GRID = ["--grid", "tiny", "--seeds", "2", "--folds", "1", "--device", "cpu", "--no-progress"]
#: --quick: the same grid at test size (tests/test_run_folder.py's TINY), to check that the script works
QUICK = ["--grid", "smoke", "--seeds", "2", "--folds", "1", "--device", "cpu", "--no-progress", "--set", "size=32",
         "--set", "crop=32", "--set", "eval_size=32", "--set", "batch_size=4", "--steps", "2"]


def measure(argv: list[str], out: Path) -> dict:
    """Run ``run_share.py`` on one ``bench.ablate`` command line into the fresh folder ``out``; its JSON line."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    cmd = [sys.executable, str(ROOT / "benchmarks" / "run_share.py"), "--", *argv, "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines or not lines[-1].startswith("{"):
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1])
    if result.get("exit_code") not in (0, None):
        raise SystemExit(f"bench.ablate exited {result['exit_code']}: {' '.join(argv)}\n{done.stderr[-3000:]}")
    with open(out / "runs.csv", newline="", encoding="utf-8") as fh:  # the trained runs, not the baselines
        result["runs"] = sum(r["model"] != "(none)" for r in csv.DictReader(fh))
    return result


def cpu_s(r: dict) -> float:
    """CPU seconds of a measurement: the process's own and its workers'."""
    return r["total"]["user_s"] + r["total"]["sys_s"] + r["children"]["user_s"] + r["children"]["sys_s"]


def table(results: dict[int, list[dict]], runs: int) -> list[str]:
    """The markdown table: one row per number of workers (1 = the plain command)."""
    base = statistics.median(r["total"]["wall_s"] for r in results[1])
    rows = ["| workers | wall s (median) | each | CPU s (median) | speed-up | runs/min | in steps (1 worker) |",
            "|---|---|---|---|---|---|---|"]
    for n, rs in sorted(results.items()):
        walls = [r["total"]["wall_s"] for r in rs]
        wall = statistics.median(walls)
        inside = (f"{statistics.median(1 - r['outside_share_wall'] for r in rs):.0%} of wall" if n == 1 else "")
        rows.append(f"| {n} | {wall:.1f} | {', '.join(f'{w:.1f}' for w in walls)} | "
                    f"{statistics.median(cpu_s(r) for r in rs):.1f} | {base / wall:.2f}× | {60 * runs / wall:.1f} | "
                    f"{inside} |")
    return rows


def report(args, grid: list[str], results: dict[int, list[dict]], loads: tuple, seconds: float) -> str:
    """The markdown file: what was measured, on what, and the table."""
    runs = results[1][0]["runs"]
    return "\n".join([
        f"# One worker against `--workers` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
        f"`python benchmarks/workers_share.py {' '.join(sys.argv[1:])}`: `colorbench ablate {' '.join(grid)}` "
        f"({runs} runs, a fresh run folder each time), {args.repeats} repeat(s), settings alternating; "
        f"`--heartbeat {args.heartbeat}` (a worker with nothing left to claim polls the study every heartbeat). "
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; load "
        f"average {loads[0]:.2f} before, {loads[1]:.2f} after; {seconds:.0f} s in all.", "",
        *table(results, runs), "",
        "Wall and CPU time of the whole command (start-up, data, training, scoring, leaderboard; with `--workers`, "
        "the launcher's check of the folder and data before the workers start, and the workers' CPU time). "
        "\"in steps\": the share of the single worker's wall time inside training steps (`run_share.py`).", ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, nargs="+", default=[2], help="worker counts to compare with 1 (default 2)")
    p.add_argument("--repeats", type=int, default=None, help="measurements per setting (default 2; --quick 1)")
    p.add_argument("--heartbeat", type=int, default=5, help="--heartbeat of the commands (default 5)")
    p.add_argument("--quick", action="store_true", help="test-sized runs: check that the script works")
    p.add_argument("--md", type=Path, default=None,
                   help="markdown file to write (default results/workers-share-cpu.md; --quick: a temporary file)")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 2)
    grid = [*(QUICK if args.quick else GRID), "--heartbeat", str(args.heartbeat)]
    md = args.md or (Path(tempfile.mkdtemp(prefix="workers-share-")) / "workers-share.md" if args.quick
                     else ROOT / "results" / "workers-share-cpu.md")
    results: dict[int, list[dict]] = {n: [] for n in [1, *args.workers]}
    t0, before = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="workers-share-") as tmp:
        for rep in range(args.repeats):
            order = list(results) if rep % 2 == 0 else list(results)[::-1]
            for n in order:
                extra = [] if n == 1 else ["--workers", str(n)]
                r = measure([*grid, *extra], Path(tmp) / f"r{rep}-w{n}")
                print(f"repeat {rep + 1}, {n} worker(s): {r['total']['wall_s']:.1f} s wall, {cpu_s(r):.1f} s CPU",
                      file=sys.stderr)
                results[n].append(r)
    text = report(args, grid, results, (before, os.getloadavg()[0]), time.perf_counter() - t0)
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text, encoding="utf-8")
    print(text)
    print(f"written to {md}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
