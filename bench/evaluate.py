"""Re-score the saved models of a finished run on another test set, without training.

    python -m bench.evaluate results/losses-quick-kodak24-bundled --test cbsd68 --data-root ../shared/data
    python -m bench.evaluate RUN_DIR --test /path/to/photos

Every model saved in ``RUN_DIR/models/`` (``bench.ablate --save-models all``, the default) and the two baselines
(grey; the mean colour, with the run's training mean ab from ``run.json``) are scored on the test set exactly as training scores its own test set (same preprocessing: shorter side →
the run's ``size``, centre crop ``eval_size``; same metrics). Results go to ``RUN_DIR/evaluations/<set>/``:
``runs.csv`` (one row per model × cell × seed, with the test set's name) and ``per_image.csv``; models already
scored on that set are skipped. A k-fold run saved one network per fold: each is scored on the whole set, and a
(cell, seed)'s score of an image is the mean over its folds' networks (``bench.data.folds``), and the mean colour's the
mean over the folds' constants. The run's leaderboard then shows one table per test set and a cross-set summary.

A test image that shows one of the run's training or validation photos (the same content at any size or encoding:
``bench.data.sources.fingerprint``, stored in ``run.json`` at training time) is refused; an older ``run.json`` without
fingerprints is checked against its listed files, and the command says when they cannot be found.
"""
from __future__ import annotations

import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import cli
from bench.core.log import attach_run_log, get_logger
from bench.core.records import (
    GREY, IMAGE_KEY, MEAN_COLOUR, ORACLE_TINT, RUN_KEY, append_rows, check_writable, command_line, environment,
    read_json, read_rows, record_command, slug, utc_now)
from bench.metrics.table import METRICS

log = get_logger(__name__)

# torch, the data and the metrics are imported where they are used, after the command line is parsed: --help stays
# fast
if TYPE_CHECKING:
    import numpy as np

    from bench.data.sources import ImageStore

# rows are keyed by RUN_KEY and IMAGE_KEY: "fold" is empty for a run without k-fold rotation; with folds every fold's
# network is scored on the whole set


def parse_args(argv=None):
    p = cli.parser("evaluate", __doc__)
    p.add_argument("run_dir", help="a run folder written by python -m bench.ablate (with saved models)")
    p.add_argument("--test", required=True, help="test set: a named set (kodak24, cbsd68, imagenet-sample) or a folder")
    cli.add(p, "data_root", "device", "no_verify", "no_progress")
    return p.parse_args(argv)


def resolve_test_set(name: str, root) -> tuple[str, Path, list[Path], list[Path], bool]:
    """(name, folder, usable files, unusable files, is a named set) of a named test set or folder."""
    from bench.data.sources import data_root, list_images, partition_usable, resolve

    sname, folder, named = resolve(name, data_root(root))
    files = list_images(folder)
    return sname, folder, *partition_usable(files), named


def run_meta(run_dir: Path) -> dict:
    """The run's ``run.json`` (empty when there is none; damage raises ``CorruptRecordError`` naming the file)."""
    meta_file = run_dir / "run.json"
    return read_json(meta_file) if meta_file.is_file() else {}


def known_fingerprints(meta: dict, run_dir: Path, progress: bool = True) -> tuple[list[str], np.ndarray, list[str]]:
    """(names, fingerprint rows, files listed but not found) of every training and validation image of the run.

    ``run.json`` holds the fingerprints of a set that was decoded into RAM. A streamed set's (or an older run's)
    are those of the listed files (relative paths resolved against the current folder and every folder above the
    run's): taken once, with a progress bar, and kept in a compact file of their own
    (``bench.data.loader.fingerprints_of``; the training run of a streamed set has taken them already)."""
    import numpy as np

    from bench.data.loader import fingerprints_of
    from bench.data.sources import fingerprint_rows

    if meta.get("fingerprints"):
        known = {f: fp for split in meta["fingerprints"].values() for f, fp in split.items()}
        return list(known), fingerprint_rows(list(known.values())), []
    names, rows, missing, seen = [], [], [], set()
    for split in [meta.get("splits", {}), *meta.get("fold_splits", [])]:
        for k in ("train", "val"):
            listed = [n for n in dict.fromkeys(split.get(k, [])) if n not in seen]
            seen.update(listed)
            found = [(n, _find(n, Path(run_dir))) for n in listed]
            missing += [n for n, p in found if p is None]
            found = [(n, p) for n, p in found if p is not None]
            if found:
                r, ok = fingerprints_of([p for _, p in found], progress)
                names += [n for (n, _), good in zip(found, ok) if good]
                missing += [n for (n, _), good in zip(found, ok) if not good]
                rows.append(r[ok])
    return names, (np.concatenate(rows) if rows else fingerprint_rows([])), missing


def _find(name: str, run_dir: Path) -> Path | None:
    path = Path(name)
    candidates = [path] if path.is_absolute() else [path, *(d / path for d in [run_dir, *run_dir.parents])]
    return next((c for c in candidates if c.is_file()), None)


def check_not_trained_on(meta: dict, run_dir: Path, store: ImageStore) -> str | None:
    """Refuse (``DataError``) a test set with an image that shows one of the run's training or validation photos,
    by content (``bench.data.sources.content_matches``: any size, any encoding). Returns a one-line warning when some or
    all of them could not be checked, else None."""
    from bench.data.sources import DataError, content_matches, fingerprint

    names, rows, missing = known_fingerprints(meta, Path(run_dir))
    clash = content_matches([fingerprint(img) for img in store.images], rows)
    if clash:
        i, j = clash[0]
        raise DataError(f"{len(clash)} test image(s) show training or validation images of this run (same content "
                        f"at any size or encoding), e.g. {store.files[i]} = {names[j]}: the test set must be held out")
    if missing:
        return (f"warning: {len(missing)} of {len(missing) + len(names)} training/validation files listed in "
                f"run.json cannot be found (e.g. {missing[0]}) and run.json holds no fingerprints: the test set was "
                f"not checked against them")
    if not names:
        return "warning: run.json lists no training images: the test set could not be checked against them"
    return None


def evaluation_dir(run_dir: Path, set_name: str) -> Path:
    """Where the scores of a run's models on another test set go."""
    return Path(run_dir) / "evaluations" / slug(set_name)


class HeldOutImages:
    """The test set's images, decoded once per ``size`` and centre-cropped once per ``(size, eval_size)`` (one tensor
    per preprocessing: its truth features are cached).

    Args:
        files, folder: the readable image files and their folder; ``bad``: the unreadable ones (counted).
    """

    def __init__(self, files: list, folder: Path, bad: list):
        self.files, self.folder, self.bad = files, folder, bad
        self.stores: dict = {}
        self.crops: dict = {}

    def get(self, size: int, eval_size: int):
        """(images, their keys, files skipped) preprocessed for one configuration."""
        from bench.data.sources import ImageStore, image_key

        if size not in self.stores:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.stores[size] = ImageStore(self.files, size)
            for w in caught:
                log.warning(w.message)
        store = self.stores[size]
        if (size, eval_size) not in self.crops:
            self.crops[size, eval_size] = store.centre_crops(eval_size)
        return (self.crops[size, eval_size], [image_key(f, self.folder) for f in store.files],
                len(self.bad) + len(store.skipped))


@dataclass(frozen=True)
class EvaluateRequest:
    """What one ``evaluate`` command line asks for, resolved and checked: the one input of :func:`execute`.

    Attributes:
        run_dir: the run folder; ``meta`` its ``run.json``; ``saved`` its usable saved models, ``unusable`` the
            (folder, reason) of the others.
        device: where to score.
        test_set: the test set's name; ``images`` its files (:class:`HeldOutImages`).
        size, eval_size, backbone: the greyscale baseline's preprocessing and LPIPS backbone.
        said: a warning (the run was trained on these images), or "".
        command: the command recorded in the run folder; ``progress`` show a progress bar.
    """

    run_dir: Path
    meta: dict
    saved: tuple
    unusable: tuple
    device: Any
    test_set: str
    images: HeldOutImages
    size: int
    eval_size: int
    backbone: str
    said: str
    command: str
    progress: bool


@cli.command
def main(argv=None) -> int:
    args = parse_args(argv)
    return execute(request_from_args(args, cli.arguments(argv)))


def request_from_args(args, argv: list[str]) -> EvaluateRequest:
    """Resolve a parsed command line: the run's saved models, the device, the test set (verified, decoded once for
    the baselines) and whether the run was trained on it."""
    from bench.config.models_check import check_lpips_weights
    from bench.core.device import pick_device
    from bench.data.sources import DataError, verify_manifest
    from bench.training.checkpoint import WeightsError, saved_models

    run_dir = Path(args.run_dir).expanduser()
    with cli.usage_errors(*cli.INPUT_ERRORS, WeightsError):
        if not run_dir.is_dir():
            raise cli.UsageError(f"run folder {run_dir} does not exist")
        unusable: list[tuple] = []
        saved = saved_models(run_dir, unusable)
        if not saved:
            why = f" usable ({len(unusable)} unusable, e.g. {unusable[0][1]})" if unusable else ""
            raise cli.UsageError(f"{run_dir} has no saved models{why} (models/*/*/seed*/): train with "
                                 f"--save-models all")
        device = pick_device(args.device)
        sname, folder, files, bad, named = resolve_test_set(args.test, args.data_root)
        if named and not args.no_verify:
            verify_manifest(folder)
        if not files:
            raise DataError(f"none of the {len(bad)} image files under {folder} can be read")
        meta = run_meta(run_dir)
        size, eval_size, backbone = _grey_settings(meta, saved)
        check_lpips_weights()  # the shipped LPIPS weights: one line before anything is scored
        images = HeldOutImages(files, folder, bad)
        images.get(size, eval_size)
        said = check_not_trained_on(meta, run_dir, images.stores[size])
    return EvaluateRequest(run_dir, meta, tuple(saved), tuple(unusable), device, sname, images, size, eval_size,
                           backbone, said or "", command_line(cli.prog("evaluate"), argv), not args.no_progress)


def execute(req: EvaluateRequest) -> int:
    """Score the untrained baselines and every saved model not yet scored on the test set, then print the tables."""
    from bench.reporting import leaderboard, testsets

    run_dir, unusable = req.run_dir, list(req.unusable)
    attach_run_log(run_dir)
    log.debug(f"command: {req.command}")
    if req.said:
        log.warning(req.said.removeprefix("warning: "))
    out = evaluation_dir(run_dir, req.test_set)
    with cli.usage_errors():
        check_writable(out)  # a read-only run folder: one line before anything is scored
        check_writable(run_dir)
        done = {tuple(str(r.get(k) or "") for k in RUN_KEY) for r in read_rows(out / "runs.csv")}
    todo = [s for s in req.saved if (s.model, s.cell, str(s.seed), _fold(s.fold)) not in done]
    log.info(f"{run_dir}: {len(req.saved)} saved models, {len(req.saved) - len(todo)} already scored on "
             f"{req.test_set} ({len(req.images.files)} images under {req.images.folder}) → {out}")
    for folder_, why in unusable:
        log.warning(f"skipping {folder_}: {why}")
    shared = {"run": run_dir.name, "test_set": req.test_set, "test_path": str(req.images.folder),
              **environment(req.device)}
    _score_baselines(req, out, done, shared)
    _score_saved(req, todo, out, shared, unusable)
    record_command(run_dir, req.command)
    # the leaderboard with a table per test set and the cross-set summary, ranked as the run was (run.json)
    rank_by = run_rank_by(req.meta)
    _, _, tables = testsets.write(run_dir, metric=rank_by)
    for name, board in list(tables.items())[1:]:  # compact; full tables in the file
        print(f"Test set {name}\n{leaderboard.to_terminal(board, metric=rank_by)}")
    log.info(f"full tables and the cross-set summary: {run_dir / 'leaderboard.md'}")
    if unusable:
        raise cli.UsageError(f"{len(unusable)} saved model(s) could not be used and were not scored, e.g. "
                             f"{unusable[0][1]}")
    return 0


def _score_baselines(req: EvaluateRequest, out: Path, done: set, shared: dict) -> None:
    """The untrained rows on the test set (grey, mean colour, oracle tint), those not scored yet."""
    from bench.metrics.compute import evaluate_grey, mean_scores, networks, oracle_tint_colorizer, score_set

    consts = _mean_abs(req.meta, req.run_dir)
    if consts is None:
        log.warning("the run records no training mean colour (run.json and runs.csv predate it): the mean-colour "
                    "baseline is left out")
    for cell in (GREY, MEAN_COLOUR, ORACLE_TINT):
        if ("(none)", cell, "0", "") in done or (cell == MEAN_COLOUR and consts is None):
            continue
        imgs, keys, n_skipped = req.images.get(req.size, req.eval_size)
        nets = networks(req.device, req.backbone)
        if cell == ORACLE_TINT:  # each test image's own mean colour: a reference row, never ranked
            scores = score_set(oracle_tint_colorizer, imgs, req.device, nets=nets)
        else:  # the mean colour of a k-fold run: each fold's constant scores every image; an image's score is their mean
            scores = mean_scores([evaluate_grey(imgs, req.device, nets=nets, ab=tuple(c))
                                  for c in ([(0.0, 0.0)] if cell == GREY else consts)])
        _record(out, {**shared, "model": "(none)", "cell": cell, "loss": "(none)", "seed": 0, "size": req.size,
                      "eval_size": req.eval_size, "encoder_pretrained": False,
                      **({"mean_ab": json.dumps(consts)} if cell == MEAN_COLOUR else {})}, keys, n_skipped, scores)


def _score_saved(req: EvaluateRequest, todo: list, out: Path, shared: dict, unusable: list) -> None:
    """Every saved model of ``todo`` scored as training scored its own test set; one that cannot be loaded is
    counted in ``unusable`` and the others are scored."""
    from tqdm.auto import tqdm

    from bench.data import folds
    from bench.metrics.compute import networks, score_test
    from bench.training.checkpoint import WeightsError, load_weights
    from bench.training.loop import autocast_dtype

    for s in tqdm(todo, desc=f"scoring on {req.test_set}", disable=not req.progress, dynamic_ncols=True):
        try:
            net, cfg, info = load_weights(s.folder, req.device)
        except WeightsError as err:  # counted, named, and the other models are scored
            unusable.append((s.folder, str(err)))
            log.warning(f"skipping {s.folder}: {err}")
            continue
        imgs, keys, n_skipped = req.images.get(cfg.size, cfg.eval_size)
        # the truth's network features are computed once per set (Truth)
        scores = score_test(net, imgs, req.device, cfg.batch_size, autocast_dtype(cfg, req.device),
                            networks(req.device, cfg.lpips_backbone))
        folded = ({} if s.fold is None else
                  {"fold": s.fold, "folds": info.get("folds", req.meta.get("folds", "")),
                   "fold_test_images": folds.ALL})
        _record(out, {**shared, "model": s.model, "cell": s.cell, "loss": cfg.loss, "seed": s.seed, **folded,
                      **{k: v for k, v in cfg.to_flat().items() if k not in ("model", "seed")},
                      "encoder_pretrained": info.get("encoder_pretrained", False),
                      "weights": str(s.folder.relative_to(req.run_dir))}, keys, n_skipped, scores)
        del net


def _mean_abs(meta: dict, run_dir: Path) -> list | None:
    """The mean-colour baseline's constant ab of every fold: ``run.json``'s ``mean_ab``, else the ``mean_colour``
    row of ``runs.csv``; None for a run that recorded neither."""
    if meta.get("mean_ab"):
        return meta["mean_ab"]
    for r in read_rows(run_dir / "runs.csv"):
        if r.get("cell") == MEAN_COLOUR and r.get("mean_ab"):
            try:
                return json.loads(r["mean_ab"])
            except ValueError:
                return None
    return None


def _fold(fold) -> str:
    """A fold as the CSV files hold it ("" without folds)."""
    return "" if fold is None else str(fold)


def _grey_settings(meta: dict, saved) -> tuple[int, int, str]:
    """(size, eval_size, lpips_backbone) of the greyscale baseline: the run's base configuration (``run.json``),
    else the first saved model's."""
    from bench.training.checkpoint import WeightsError, read_config

    base = meta.get("base_config", {})
    if "size" not in base or not base.get("lpips_backbone"):
        for i, s in enumerate(saved):  # the first readable configuration (a damaged one is reported later)
            try:
                cfg, _ = read_config(s.folder)
                break
            except WeightsError:
                if i == len(saved) - 1:
                    raise
    if "size" not in base:
        return cfg.size, cfg.eval_size, cfg.lpips_backbone
    backbone = base.get("lpips_backbone") or cfg.lpips_backbone
    return int(base["size"]), int(base.get("eval_size", base["size"])), str(backbone)


def run_rank_by(meta: dict) -> str:
    """The ranking metric the run was made with (``run.json``'s ``rank_by``; PSNR for runs that did not record
    one, or one no longer in the metric table)."""
    rank_by = meta.get("rank_by") if isinstance(meta, dict) else None
    return rank_by if rank_by in METRICS else "psnr"


def _record(out: Path, row: dict, keys: list[str], n_skipped: int, scores) -> None:
    """Append one scored model's run row and per-image rows (per-image first: a run counts once its row exists)."""
    from bench.metrics.compute import features_file, save_features

    key = {k: row.get(k, "") for k in ("run", "model", "cell", "seed", "fold", "test_set")}
    per_image = [{**key, "image": name, **{m: v[i] for m, v in scores.per_image.items()}} for i, name in enumerate(keys)]
    append_rows(out / "per_image.csv", per_image, key=IMAGE_KEY)
    save_features(features_file(out / "features", row["model"], row["cell"], row["seed"], row.get("fold")), scores,
                  keys)
    append_rows(out / "runs.csv", [{**row, "status": "ok", "n_test": len(keys), "n_skipped": n_skipped,
                                    **scores.row(), "evaluated_at": utc_now()}], key=RUN_KEY)


if __name__ == "__main__":
    sys.exit(main())
