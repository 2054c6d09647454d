"""Re-score the saved models of a finished run on another test set, without training.

    python -m bench.evaluate results/losses-quick-kodak24-bundled --test cbsd68 --data-root ../shared/data
    python -m bench.evaluate RUN_DIR --test /path/to/photos

Every model saved in ``RUN_DIR/models/`` (``bench.ablate --save-models all``, the default) and the greyscale
baseline are scored on the test set exactly as training scores its own test set (same preprocessing: shorter side →
the run's ``size``, centre crop ``eval_size``; same metrics). Results go to ``RUN_DIR/evaluations/<set>/``:
``runs.csv`` (one row per model × cell × seed, with the test set's name) and ``per_image.csv``; models already
scored on that set are skipped. A k-fold run saved one network per fold: each is scored on the whole set, and a
(cell, seed)'s score of an image is the mean over its folds' networks (``bench.folds``). The run's leaderboard then shows one table per test set and a cross-set summary.
"""
from __future__ import annotations

import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import cli, folds, leaderboard, testsets
from .checkpoint import load_weights, read_config, saved_models
from .data import DataError, ImageStore, data_root, image_key, list_images, partition_usable, resolve, sha256, \
    verify_manifest
from .metrics import evaluate_grey, fill_missing_lpips, lpips_metric, score_test
from .records import append_rows, command_line, environment, read_json, read_rows, record_command, slug
from .device import pick_device
from .train import autocast_dtype

# "fold" is empty for a run without k-fold rotation; with folds every fold's network is scored on the whole set
RUN_KEY = ("model", "cell", "seed", "fold")
IMAGE_KEY = ("model", "cell", "seed", "fold", "image")




def parse_args(argv=None):
    p = cli.parser("evaluate", __doc__)
    p.add_argument("run_dir", help="a run folder written by python -m bench.ablate (with saved models)")
    p.add_argument("--test", required=True, help="test set: a named set (kodak24, cbsd68, imagenet-sample) or a folder")
    cli.add(p, "data_root", "device", "no_verify", "no_progress")
    return p.parse_args(argv)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def resolve_test_set(name: str, root) -> tuple[str, Path, list[Path], list[Path], bool]:
    """(name, folder, usable files, unusable files, is a named set) of a named test set or folder."""
    sname, folder, named = resolve(name, data_root(root))
    files = list_images(folder)
    return sname, folder, *partition_usable(files), named


def run_meta(run_dir: Path) -> dict:
    """The run's ``run.json`` (empty when there is none; damage raises ``CorruptRecordError`` naming the file)."""
    meta_file = run_dir / "run.json"
    return read_json(meta_file) if meta_file.is_file() else {}


def check_not_trained_on(meta: dict, files: list[Path]) -> None:
    """Refuse a test set that shares images (by content) with the run's training split, when ``run.json`` (``meta``)
    lists it."""
    # with k-fold rotation every fold trained on other images: a test image must be none of them
    train = [Path(p) for split in [meta.get("splits", {}), *meta.get("fold_splits", [])] for p in split.get("train", [])]
    hashes = {sha256(p) for p in train if p.is_file()}
    clash = [p for p in files if sha256(p) in hashes]
    if clash:
        raise DataError(f"{len(clash)} test image(s) are training images of this run, e.g. {clash[0]}")


def evaluation_dir(run_dir: Path, set_name: str) -> Path:
    """Where the scores of a run's models on another test set go."""
    return Path(run_dir) / "evaluations" / slug(set_name)


@cli.command
def main(argv=None) -> int:
    args = parse_args(argv)
    run_dir = Path(args.run_dir).expanduser()
    with cli.usage_errors():
        if not run_dir.is_dir():
            raise cli.UsageError(f"run folder {run_dir} does not exist")
        saved = saved_models(run_dir)
        if not saved:
            raise cli.UsageError(f"{run_dir} has no saved models (models/*/*/seed*/): train with --save-models all")
        device = pick_device(args.device)
        sname, folder, files, bad, named = resolve_test_set(args.test, args.data_root)
        if named and not args.no_verify:
            verify_manifest(folder)
        if not files:
            raise DataError(f"none of the {len(bad)} image files under {folder} can be read")
        meta = run_meta(run_dir)
        check_not_trained_on(meta, files)
    out = evaluation_dir(run_dir, sname)
    with cli.usage_errors():
        done = {tuple(str(r.get(k) or "") for k in RUN_KEY) for r in read_rows(out / "runs.csv")}
    todo = [s for s in saved if (s.model, s.cell, str(s.seed), _fold(s.fold)) not in done]
    print(f"{run_dir}: {len(saved)} saved models, {len(saved) - len(todo)} already scored on {sname} "
          f"({len(files)} images under {folder}) → {out}", file=sys.stderr)
    env = environment(device)
    n_folds = meta.get("folds", "")
    shared = {"run": run_dir.name, "test_set": sname, "test_path": str(folder)}
    stores: dict[int, ImageStore] = {}

    def images(size: int, eval_size: int):
        """The test images preprocessed for one configuration (decoded once per size)."""
        if size not in stores:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                stores[size] = ImageStore(files, size)
            for w in caught:
                print(f"warning: {w.message}", file=sys.stderr)
        store = stores[size]
        return store.centre_crops(eval_size), [image_key(f, folder) for f in store.files], len(bad) + len(store.skipped)

    if ("(none)", leaderboard.GREY, "0", "") not in done:
        size, eval_size, backbone = _grey_settings(meta, saved)
        imgs, keys, n_skipped = images(size, eval_size)
        lpips_net, lpips_status = lpips_metric(backbone, device)
        scores = fill_missing_lpips(evaluate_grey(imgs, device, lpips_net=lpips_net), lpips_net, len(keys))
        _record(out, {**shared, **env, "model": "(none)", "cell": leaderboard.GREY, "loss": "(none)", "seed": 0,
                      "size": size, "eval_size": eval_size, "encoder_pretrained": False,
                      "lpips_backbone": lpips_status}, keys, n_skipped, scores)
    for s in tqdm(todo, desc=f"scoring on {sname}", disable=args.no_progress, dynamic_ncols=True):
        net, cfg, info = load_weights(s.folder, device)
        imgs, keys, n_skipped = images(cfg.size, cfg.eval_size)
        lpips_net, lpips_status = lpips_metric(cfg.lpips_backbone, device)  # as training scored its own test set
        scores = fill_missing_lpips(score_test(net, imgs, device, cfg.batch_size, autocast_dtype(cfg, device),
                                               lpips_net=lpips_net), lpips_net, len(keys))
        folded = ({} if s.fold is None else
                  {"fold": s.fold, "folds": info.get("folds", n_folds), "fold_test_images": folds.ALL})
        _record(out, {**shared, **env, "model": s.model, "cell": s.cell, "loss": cfg.loss, "seed": s.seed, **folded,
                      **{k: v for k, v in cfg.to_flat().items() if k not in ("model", "seed")},
                      "encoder_pretrained": info.get("encoder_pretrained", False), "lpips_backbone": lpips_status,
                      "weights": str(s.folder.relative_to(run_dir))}, keys, n_skipped, scores)
        del net
    record_command(run_dir, command_line(cli.prog("evaluate"), sys.argv[1:] if argv is None else list(argv)))
    testsets.write(run_dir)  # the leaderboard with a table per test set and the cross-set summary
    for name, board in list(testsets.boards(run_dir).items())[1:]:  # compact (100 columns); full tables in the file
        print(f"Test set {name}\n{leaderboard.to_terminal(board)}")
    print(f"full tables and the cross-set summary: {run_dir / 'leaderboard.md'}", file=sys.stderr)
    return 0


def _fold(fold) -> str:
    """A fold as the CSV files hold it ("" without folds)."""
    return "" if fold is None else str(fold)


def _grey_settings(meta: dict, saved) -> tuple[int, int, str]:
    """(size, eval_size, lpips_backbone) of the greyscale baseline: the run's base configuration (``run.json``),
    else the first saved model's."""
    base = meta.get("base_config", {})
    if "size" not in base:
        cfg, _ = read_config(saved[0].folder)
        return cfg.size, cfg.eval_size, cfg.lpips_backbone
    backbone = base.get("lpips_backbone") or read_config(saved[0].folder)[0].lpips_backbone
    return int(base["size"]), int(base.get("eval_size", base["size"])), str(backbone)


def _record(out: Path, row: dict, keys: list[str], n_skipped: int, scores: dict) -> None:
    """Append one scored model's run row and per-image rows (per-image first: a run counts once its row exists)."""
    key = {k: row.get(k, "") for k in ("run", "model", "cell", "seed", "fold", "test_set")}
    per_image = [{**key, "image": name, **{m: v[i] for m, v in scores.items()}} for i, name in enumerate(keys)]
    append_rows(out / "per_image.csv", per_image, key=IMAGE_KEY)
    means = {m: sum(v) / len(v) for m, v in scores.items()}
    append_rows(out / "runs.csv", [{**row, "status": "ok", "n_test": len(keys), "n_skipped": n_skipped, **means,
                                    "evaluated_at": _now()}], key=RUN_KEY)


if __name__ == "__main__":
    sys.exit(main())
