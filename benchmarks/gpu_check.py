"""One prepared GPU check (issue 14): end-to-end throughput, a profile of one step and a short paper-preset training,
each stage under its own time limit, everything written under one output folder with a summary at the end.

    benchmarks/gpu_check.sh                      # on the GPU machine (installs the carried wheels, then runs this)
    python benchmarks/gpu_check.py --tiny        # CPU: tiny sizes, no compile, well under a minute

Stages (in this order; each a subprocess with its own timeout, so one failure or hang does not eat the window):

1. ``tp_bf16``: ``bench.throughput --end-to-end``, bf16, batch 128, 256² crops from the image files, vs. synthetic.
2. ``tp_bf16_compile``: the same with ``--compile``.
3. ``tp_fp32``: the same in fp32 at batch 16 (the paper's setup).
4. ``profile``: ``torch.profiler`` table of the bf16 batch-128 step fed from images (where the time goes).
5. ``ablate``: ``bench.ablate --grid smoke`` (cells mse and kl), paper preset, ``--encoder-weights none``, 500 steps,
   with its leaderboard.

Output (at most 8 files, as the GPU tool brings back): ``summary.md`` (machine, stage table, throughput table, goal
verdict, leaderboard), ``throughput.csv``, ``profile.txt``, ``leaderboard.md``, ``runs.csv``, ``ablate-run.tar.gz``
(the whole run folder) and ``logs.txt`` (every stage's output). Every file names the card, driver, torch version and
git commit (Markdown/text: a header; CSV: columns). ``COLORBENCH_GIT_COMMIT`` tells a copy without ``.git`` its
commit.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "bench" / "assets" / "kodak24"

#: The issue's speed goal for unet_vgg16, 256², bf16 + compile, fed from image files.
GOAL_IMG_PER_S = 1150.0
GOAL_RATIO = 0.95


def machine(tiny: bool) -> dict:
    """Card, driver, torch and CUDA versions, git commit, host and time (asked in a subprocess-free way)."""
    import torch

    from bench.core.records import git_commit

    cuda = torch.cuda.is_available() and not tiny
    driver = "none"
    if cuda:
        try:
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            driver = "unknown"
    return {
        "card": torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.machine()}, {os.cpu_count()} cores)",
        "driver": driver,
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "git_commit": git_commit(),
        "host": platform.node(),
        "python": platform.python_version(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": "tiny (CPU)" if tiny else "full",
    }


def header(env: dict) -> str:
    """One line naming the machine and the code, put at the top of every text file."""
    return (f"card: {env['card']} | driver: {env['driver']} | torch: {env['torch']} (CUDA {env['cuda']}) | "
            f"commit: {env['git_commit']} | host: {env['host']} | {env['started']}")


# ----------------------------------------------------------------------------------------------------- stages


def stages(args, work: Path, data: Path) -> list[dict]:
    """The plan: name, what it shows, command, time cap (seconds)."""
    py = [sys.executable]
    tp = [*py, "-m", "bench.throughput", "--end-to-end", "--data", str(data), "--out", str(work / "tp"),
          "--repeats", "5"]
    if args.tiny:
        small = ["--device", "cpu", "--size", "32", "--crop", "32", "--width", "0.125", "--n-images", "8", "--warmup", "1",
                 "--repeats", "1", "--iters", "1"]
        tp = [*py, "-m", "bench.throughput", "--end-to-end", "--data", str(data), "--out", str(work / "tp"), *small]
        big, fp32 = ["--batch", "4", "--precision", "bf16", "--fp32-batch", "0"], ["--batch", "2", "--precision", "fp32",
                                                                                 "--fp32-batch", "0"]
    else:
        tp += ["--size", "256", "--crop", "256", "--n-images", "512", "--iters", "10"]
        big = ["--batch", "128", "--precision", "bf16", "--fp32-batch", "0"]
        fp32 = ["--batch", "16", "--precision", "fp32", "--fp32-batch", "0"]
    steps = str(args.steps)
    ablate = [*py, "-m", "bench.ablate", "--grid", "smoke", "--preset", "paper", "--encoder-weights", "none",
              "--seeds", "1", "--steps", steps, "--data", str(data), "--out", str(work / "ablate"), "--no-progress",
              "--set", f"val_every={max(1, args.steps // 2)}"]
    if args.tiny:
        ablate += ["--device", "cpu", "--set", "width=0.125", "--set", "size=32", "--set", "crop=32",
                   "--set", "eval_size=32", "--set", "batch_size=2"]
    profile = [*py, str(Path(__file__).resolve()), "--profile-only", "--data", str(data), "--out", str(work)]
    if args.tiny:
        profile.append("--tiny")
    nb, nf = big[big.index("--batch") + 1], fp32[fp32.index("--batch") + 1]
    plan = [
        dict(name="tp_bf16", what=f"throughput, bf16 batch {nb}, images vs synthetic", cmd=[*tp, *big], cap=75),
        dict(name="tp_bf16_compile", what="the same with torch.compile", cmd=[*tp, *big, "--compile"], cap=150,
             skip="tiny mode: torch.compile is used on CUDA only" if args.tiny else None),
        dict(name="tp_fp32", what=f"throughput, fp32 batch {nf} (the paper's 16), images vs synthetic",
             cmd=[*tp, *fp32], cap=50),
        dict(name="loader", what=f"the streaming loader (DataLoader workers decoding JPEGs) against the bf16 batch-{nb} "
                                 f"step: how many workers keep the GPU fed", cmd=[*[a if a != str(work / "tp") else str(work / "loader") for a in tp], *big, "--loader"]
             + (["0", "1"] if args.tiny else ["0", "2", "4", "8", "12"]), cap=90),
        dict(name="profile", what=f"torch.profiler table of bf16 batch-{nb} steps from images", cmd=profile, cap=40),
        dict(name="ablate", what=f"paper preset, cells mse and kl, {steps} steps, random encoder", cmd=ablate,
             cap=150),
    ]
    if args.tiny:  # the tiny mode is there to finish (it tests this script): no per-stage caps below the budget
        for s in plan:
            s["cap"] = float("inf")
    return [s for s in plan if not args.only or s["name"] in args.only]


def run_stage(stage: dict, deadline: float, log: io.StringIO, env_vars: dict) -> dict:
    """Run one stage under min(its cap, the time left); record status, seconds and return code."""
    left = deadline - time.monotonic()
    if stage.get("skip"):
        return {**stage, "status": "skipped", "why": stage["skip"], "seconds": 0.0}
    if left < 10:
        return {**stage, "status": "skipped", "why": f"out of time ({left:.0f} s left)", "seconds": 0.0}
    limit = min(stage["cap"], left)
    log.write(f"\n===== {stage['name']}: {' '.join(stage['cmd'])}  (limit {limit:.0f} s)\n")
    t0 = time.monotonic()
    # output into a file, not a pipe: what a stopped stage printed before its timeout is kept
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as fh:
        try:
            rc = subprocess.run(stage["cmd"], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, timeout=limit,
                                env=env_vars).returncode
            status, why = ("ok", "") if rc == 0 else ("failed", f"exit code {rc}")
        except subprocess.TimeoutExpired:
            rc, status, why = None, "timeout", f"stopped after {limit:.0f} s"
        fh.seek(0)
        out = fh.read()
    secs = time.monotonic() - t0
    log.write(out if out.endswith("\n") or not out else out + "\n")
    log.write(f"----- {stage['name']}: {status} in {secs:.1f} s {why}\n")
    print(f"[gpu_check] {stage['name']}: {status} in {secs:.1f} s {why}", flush=True)
    return {**stage, "status": status, "why": why, "seconds": secs, "rc": rc, "tail": out[-1500:]}


# ----------------------------------------------------------------------------------------------------- profile


def profile_step(data: Path, out: Path, tiny: bool) -> None:
    """Write ``profile.txt``: a torch.profiler table of the training step fed from images (3 steps after 3 warm-up)."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from bench import throughput
    from bench.data.sources import list_images

    cuda = torch.cuda.is_available() and not tiny
    setup = throughput.Setup(model="unet_vgg16", batch=4 if tiny else 128, size=32 if tiny else 256,
                             width=0.125 if tiny else 1.0, precision="bf16", device="cuda" if cuda else "cpu")
    files = list_images(data)[: 8 if tiny else 512]
    step = throughput.TimedTrain(setup, throughput.image_batches(setup, files))
    for _ in range(3):
        step()
    if cuda:
        torch.cuda.synchronize()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(3):
            with record_function("train_step"):
                step()
        if cuda:
            torch.cuda.synchronize()
    sort = "cuda_time_total" if cuda else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=40, max_name_column_width=60)
    (out / "profile.txt").write_text(f"3 training steps ({setup}), sorted by {sort}\n\n{table}\n")


# ----------------------------------------------------------------------------------------------------- summary


def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def write_csv(path: Path, rows: list[dict], env: dict) -> None:
    """Rows with the machine columns (card, driver, torch, commit) added, all columns kept."""
    cols: list[str] = []
    extra = {"check_card": env["card"], "check_driver": env["driver"], "check_torch": env["torch"],
             "check_git_commit": env["git_commit"]}
    rows = [{**r, **extra} for r in rows]
    for r in rows:
        cols += [c for c in r if c not in cols]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols or list(extra))
        w.writeheader()
        w.writerows(rows)


def _f(row: dict, key: str, fmt: str = "{:.1f}") -> str:
    try:
        return fmt.format(float(row[key]))
    except (KeyError, TypeError, ValueError):
        return ""


def throughput_table(rows: list[dict]) -> tuple[str, list[dict]]:
    """Markdown table: one line per configuration (images vs synthetic), and the configurations for the verdict."""
    configs = []
    by = {}
    for r in rows:
        key = (r.get("precision"), r.get("batch"), r.get("compile"))
        by.setdefault(key, {})[r.get("mode")] = r
    lines = ["| precision | batch | compile | img/s from images | img/s synthetic | ratio | peak MiB | GFLOP/img "
             "| TFLOP/s (images) |", "|---|---|---|---|---|---|---|---|---|"]
    for (prec, batch, comp), modes in by.items():
        img, syn = modes.get("e2e-images", {}), modes.get("e2e-synthetic", {})
        lines.append(f"| {prec} | {batch} | {comp} | {_f(img, 'train_img_per_s')} | {_f(syn, 'train_img_per_s')} | "
                     f"{_f(img, 'ratio', '{:.3f}')} | {_f(img, 'train_peak_mib', '{:.0f}')} | "
                     f"{_f(img, 'train_gflop_per_img', '{:.1f}')} | {_f(img, 'train_tflop_per_s', '{:.1f}')} |")
        configs.append({"precision": prec, "batch": batch, "compile": comp, "images": img, "synthetic": syn})
    return "\n".join(lines), configs


def verdict(configs: list[dict], env: dict, tiny: bool) -> str:
    """The issue's goal against the bf16 + compile (else bf16) end-to-end rate."""
    if tiny:
        return "Goal check: not applicable (tiny CPU mode)."
    best = [c for c in configs if c["precision"] == "bf16" and c["images"]]
    best.sort(key=lambda c: c["compile"] != "True")
    if not best:
        return "Goal check: no bf16 end-to-end measurement finished."
    c = best[0]
    rate = float(c["images"]["train_img_per_s"])
    ratio = float(c["images"].get("ratio") or "nan")
    which = "bf16 + torch.compile" if c["compile"] == "True" else "bf16 eager (the compiled run did not finish)"
    ok_rate, ok_ratio = rate >= GOAL_IMG_PER_S, ratio >= GOAL_RATIO
    msg = [f"Goal check ({which}, batch {c['batch']}, on {env['card']}): {rate:.0f} img/s from images "
           f"(goal ≥ {GOAL_IMG_PER_S:.0f}: {'met' if ok_rate else f'missed by {GOAL_IMG_PER_S - rate:.0f} img/s, {100 * (1 - rate / GOAL_IMG_PER_S):.1f} %'}); "
           f"ratio to synthetic {ratio:.3f} (goal ≥ {GOAL_RATIO}: {'met' if ok_ratio else f'missed by {GOAL_RATIO - ratio:.3f}'})."]
    if not (ok_rate and ok_ratio):
        msg.append("Where the time goes: profile.txt (one step, sorted by device time).")
    return " ".join(msg)


def loader_table(rows: list[dict]) -> str:
    """Markdown table of the loader stage: images/s per worker count, and the workers each timed step needs."""
    lines = ["| loader workers | img/s | img/s per worker |", "|---|---|---|"]
    lines += [f"| {r['loader_workers']} | {_f(r, 'loader_img_per_s')} | {_f(r, 'per_worker_img_per_s')} |"
              for r in rows if r.get("mode") == "loader"]
    lines += ["", "| step | precision | batch | step img/s | workers needed |", "|---|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r.get('precision')} | {r.get('batch')} | {_f(r, 'train_img_per_s')} | "
              f"{r.get('loader_workers_needed')} |" for r in rows if r.get("loader_workers_needed")]
    return "\n".join(lines)


def summarise(env: dict, results: list[dict], tp_rows: list[dict], board: str, tiny: bool,
              total: float, loader_rows: list[dict] | None = None) -> str:
    table, configs = throughput_table(tp_rows)
    lines = [f"# GPU check: {env['card']}", "", header(env), "",
             f"Mode: {env['mode']}; wall time {total:.0f} s.", "", "## Stages", "",
             "| stage | what | status | seconds | note |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['what']} | {r['status']} | {r['seconds']:.0f} | {r.get('why', '')} |")
    lines += ["", "## Training throughput (bench.throughput --end-to-end, unet_vgg16)", "", table, "",
              verdict(configs, env, tiny), "", "## Does the GPU starve? (bench.throughput --loader)", "",
              loader_table(loader_rows) if loader_rows else "(no loader rows: see the loader stage in logs.txt)", "",
              "## Paper preset, short (bench.ablate --grid smoke)", "",
              board or "(no leaderboard: see the ablate stage in logs.txt)", ""]
    failed = [r for r in results if r["status"] in ("failed", "timeout")]
    if failed:
        lines += ["## Output of the stages that did not finish", ""]
        for r in failed:
            lines += [f"### {r['name']} ({r['status']})", "", "```", r.get("tail", "").strip(), "```", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/gpu_check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="CPU, tiny sizes and steps, no compile (tests this script)")
    p.add_argument("--out", default=None, help="output folder (default: $OUT, else results/gpu-check-<time>)")
    p.add_argument("--data", default=None, help="image folder (default: .data/imagenet-sample-256, else "
                   "$BENCH_DATA/imagenet-sample-256; --tiny: the bundled Kodak24)")
    p.add_argument("--steps", type=int, default=None, help="training steps per cell (default 500; --tiny: 2)")
    p.add_argument("--budget", type=float, default=None, help="seconds for all stages (default 470; --tiny: 120)")
    p.add_argument("--only", nargs="+", default=None, help="run only these stages")
    p.add_argument("--profile-only", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def find_data(arg: str | None, tiny: bool) -> Path:
    if arg:
        return Path(arg).resolve()
    if tiny:
        return BUNDLED
    for cand in (ROOT / ".data" / "imagenet-sample-256",
                 Path(os.environ.get("BENCH_DATA", ROOT.parent / "shared" / "data")) / "imagenet-sample-256"):
        if cand.is_dir():
            return cand.resolve()
    raise SystemExit("error: no images: copy imagenet-sample-256 into .data/ (see README, GPU check) or pass --data")


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.monotonic()
    out = Path(args.out or os.environ.get("OUT") or ROOT / "results" / f"gpu-check-{int(time.time())}")
    out.mkdir(parents=True, exist_ok=True)
    data = find_data(args.data, args.tiny)
    sys.path.insert(0, str(ROOT))
    if args.profile_only:
        profile_step(data, out, args.tiny)
        return 0
    args.steps = args.steps or (2 if args.tiny else 500)
    budget = args.budget or (120.0 if args.tiny else 470.0)
    deadline = t_start + budget

    env = machine(args.tiny)
    print(f"[gpu_check] {header(env)}", flush=True)
    print(f"[gpu_check] images: {data}; output: {out}; budget {budget:.0f} s", flush=True)
    env_vars = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                "COLORBENCH_GIT_COMMIT": env["git_commit"], "PYTHONUNBUFFERED": "1"}
    if args.tiny:  # tiny tensors: one thread (on a busy machine, OpenMP threads waiting on each other cost 100×)
        env_vars["OMP_NUM_THREADS"] = "1"
    log = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        results = [run_stage(s, deadline, log, env_vars) for s in stages(args, work, data)]

        tp_rows = [r for f in sorted((work / "tp").glob("throughput-*.csv")) for r in read_csv(f)]
        write_csv(out / "throughput.csv", tp_rows, env)
        loader_rows = [r for f in sorted((work / "loader").glob("throughput-*.csv")) for r in read_csv(f)]
        prof = work / "profile.txt"
        if prof.is_file():
            (out / "profile.txt").write_text(header(env) + "\n\n" + prof.read_text())
        board = ""
        runs = sorted((work / "ablate").rglob("leaderboard.md"))  # the run folder (--out itself, or one below)
        if runs:
            run_dir = runs[0].parent
            board = runs[0].read_text()
            (out / "leaderboard.md").write_text(header(env) + "\n\n" + board)
            write_csv(out / "runs.csv", read_csv(run_dir / "runs.csv"), env)
            (run_dir / "gpu_check.json").write_text(json.dumps(env, indent=1))
            with tarfile.open(out / "ablate-run.tar.gz", "w:gz") as tar:
                tar.add(run_dir, arcname=run_dir.name)
    total = time.monotonic() - t_start
    (out / "logs.txt").write_text(header(env) + "\n" + log.getvalue())
    summary = summarise(env, results, tp_rows, board, args.tiny, total, loader_rows)
    (out / "summary.md").write_text(summary)
    print(summary)
    bad = [r["name"] for r in results if r["status"] in ("failed", "timeout")]
    print(f"[gpu_check] done in {total:.0f} s; files in {out}" + (f"; not finished: {', '.join(bad)}" if bad else ""),
          flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
