"""Tune the learning rate (and the parameters the loss declares tunable, e.g. the AdaIN losses' style weight λ) of
one (model, loss[, data]) with Optuna.

    python -m bench.tune --loss mse --trials 30                     # quick preset, bundled Kodak24
    python -m bench.tune --loss kl --preset paper --data imagenet-sample --data-root ../shared/data
    python -m bench.tune --loss mse --storage postgresql+psycopg://user@db-host/optuna   # same command, N machines
    optuna-dashboard results/tune-unet_vgg16-mse-quick-kodak24-bundled/study.journal

Maximises the validation PSNR (never the test set's) with a seeded TPE sampler; a MedianPruner stops trials whose
periodic validation PSNR (reported every ``val_every`` steps) falls below the median of earlier trials at the same
step. The study name is deterministic (``tune-<model>-<loss>-<preset>-<data>``), so workers started with the same
command share it, and ``--trials`` counts the study's finished trials, all workers together. Writes
``best_params.json``, ``history.png`` (optimisation history) and ``importance.png`` (parameter importances) to
``results/<study name>/`` (or ``--out``); ``python -m bench.ablate --tuned`` trains each cell with these parameters.
"""
from __future__ import annotations

import json
import sys
import time
import warnings
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import cli
from bench.cli import finite_float
from bench.config.params import declared_tunables, symbol, tuned_words
from bench.core.log import attach_run_log, get_logger
from bench.core.paths import check_writable, results_root

log = get_logger(__name__)

if TYPE_CHECKING:  # annotations only: Optuna and the configuration (torch) are imported after parsing
    import optuna

    from bench.config.cell import CellConfig

LR_RANGE = (1e-5, 1e-2)

#: Names that tests and notebooks use through ``bench.tune``, imported from their modules when first asked for
#: (module ``__getattr__``): importing this module, and ``--help``, import no torch or Optuna.
REEXPORTED = {"preset": "config", "CellConfig": "config", "apply_params": "tuned", "load_best": "tuned",
              "study_name": "tuned", "tunable": "tuned"}


def __getattr__(name: str):
    """A name of ``REEXPORTED``, from its module (PEP 562: asked for only when not defined here)."""
    if name not in REEXPORTED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from bench.config import cell as config
    from bench.grid import tuned

    return getattr({"config": config, "tuned": tuned}[REEXPORTED[name]], name)


def suggest(trial: optuna.Trial, loss: str, lr_range=LR_RANGE, ranges: dict | None = None) -> dict:
    """Suggest the tuned parameters: ``lr`` (log scale) and every parameter the loss declares tunable
    (``losses.Tunable``: its range and scale).

    Args:
        trial: the Optuna trial.
        loss: the loss spec.
        lr_range: (low, high) of the learning rate.
        ranges: name → (low, high) replacing a tunable parameter's declared range.
    """
    from bench.grid.tuned import tunable

    params = {"lr": trial.suggest_float("lr", *lr_range, log=True)}
    for name, t in tunable(loss).items():
        lo, hi = (ranges or {}).get(name, (t.low, t.high))
        params[name] = trial.suggest_float(name, lo, hi, log=t.log)
    return params


def _range_item(text: str) -> tuple[str, tuple[float, float]]:
    """``--range`` value ``NAME=LOW,HIGH`` → (name, (low, high))."""
    import argparse

    name, eq, bounds = text.partition("=")
    parts = bounds.split(",")
    if not eq or not name.strip() or len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected NAME=LOW,HIGH (e.g. lr=1e-5,1e-2), got {text!r}")
    return name.strip(), (finite_float(parts[0]), finite_float(parts[1]))


def make_sampler(seed: int, trial_number: int, startup: int) -> optuna.samplers.TPESampler:
    """A TPE sampler seeded from (``seed``, trial number): one worker repeats its sequence of suggestions for the
    same seed, and concurrent workers (which draw different trial numbers) do not repeat each other's."""
    import optuna

    return optuna.samplers.TPESampler(seed=zlib.crc32(f"{seed}:{trial_number}".encode()), n_startup_trials=startup)


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = cli.parser("tune", __doc__)
    cli.add(p, "models", help="the model to tune (one; default: the preset's)")
    p.add_argument("--model", dest="model_alias", default=None, help="deprecated spelling of --models")
    p.add_argument("--loss", default="mse", help="loss spec, e.g. mse, kl, 'mse+10*adain_style' (default mse)")
    p.add_argument("--trials", type=cli.bounded_int(1, cli.MAX_TRIALS), default=20, help="finished trials the study should have (default 20)")
    p.add_argument("--timeout", type=finite_float, default=None, metavar="SECONDS",
                   help="stop starting new trials after this many seconds")
    p.add_argument("--seed", type=cli.bounded_int(0, cli.MAX_SEED), default=0, help="sampler seed (default 0)")
    p.add_argument("--startup-trials", type=cli.bounded_int(0, cli.MAX_TRIALS), default=5,
                   help="random trials before TPE, and trials before the pruner acts (default 5)")
    p.add_argument("--warmup-steps", type=cli.bounded_int(0, cli.MAX_STEPS), default=0,
                   help="no pruning before this training step (default 0)")
    p.add_argument("--lr-range", type=finite_float, nargs=2, default=LR_RANGE, metavar=("LOW", "HIGH"))
    p.add_argument("--range", dest="ranges", type=_range_item, action="append", default=[], metavar="NAME=LOW,HIGH",
                   help="search range of a tunable parameter of the loss (repeatable; default: the range the loss "
                        "declares)")
    # --NAME-range LOW HIGH: the same as --range NAME=LOW,HIGH; the declarations are read without importing the
    # losses (torch), and tuned_ranges checks the values against the loss's own after parsing
    for name, t in declared_tunables().items():
        p.add_argument(f"--{name.replace('_', '-')}-range", dest=f"range__{name}", type=finite_float, nargs=2,
                       default=None, metavar=("LOW", "HIGH"),
                       help=f"search range of {t.label or name} (default {t.low:g} {t.high:g}) for the losses that "
                            f"tune it")
    cli.add(p, "storage", "study_name", "heartbeat")
    cli.add(p, "out", help="results folder (default: results/<study name> under the current folder, or under "
                           "$COLORBENCH_RESULTS)")
    cli.add_training_arguments(p)
    return p.parse_args(argv)


def base_config(args, device) -> tuple[CellConfig, str]:
    """The configuration to tune (validated) and the preset's name."""
    fixed = {"loss": args.loss}
    names = cli.pick_models(args)
    if names:
        if len(names) > 1:
            raise cli.UsageError(f"bench.tune tunes one model at a time, got --models {' '.join(names)}")
        fixed["model"] = names[0]
    cfg, name = cli.config_from_args(args, device, **fixed)
    with cli.usage_errors():
        cfg.validate()
        from bench.config.models_check import check_backbones, check_encoder_weights

        check_encoder_weights(cfg, [cfg.model], [cfg.loss])  # weights files: missing or damaged, before any folder
        check_backbones([cfg])
    args.lr_range, args.tuned_ranges = tuned_ranges(args, cfg.loss)
    if args.trials < 1:
        raise cli.UsageError(f"--trials must be at least 1, got {args.trials}")
    if args.timeout is not None and args.timeout <= 0:
        raise cli.UsageError(f"--timeout must be positive, got {args.timeout}")
    if args.startup_trials < 0 or args.warmup_steps < 0:
        raise cli.UsageError("--startup-trials and --warmup-steps must not be negative")
    return cfg, name


def tuned_ranges(args, loss: str) -> tuple[tuple[float, float], dict]:
    """(lr range, name → range of each tunable parameter of ``loss``) from ``--lr-range``, ``--range`` and the
    ``--NAME-range`` options, checked: a parameter the loss does not tune, or a bad range, is a usage error."""
    from bench.grid.tuned import tunable

    tunables = tunable(loss)
    given = [(f"--{k[len('range__'):].replace('_', '-')}-range", k[len("range__"):], tuple(v))
             for k, v in sorted(vars(args).items()) if k.startswith("range__") and v is not None]
    given += [(f"--range {name}", name, r) for name, r in args.ranges]
    lr_range, ranges = tuple(args.lr_range), {}
    for flag, name, (lo, hi) in [("--lr-range", "lr", lr_range), *given]:
        if name != "lr" and name not in tunables:
            raise cli.UsageError(f"{flag}: loss {loss} does not tune {name!r} (it tunes: "
                                 f"{', '.join(['lr', *tunables])})")
        t = tunables.get(name)
        positive = t is None or t.log or t.positive  # lr, and any parameter searched on a log scale
        if not lo < hi or (positive and not lo > 0):
            raise cli.UsageError(f"{flag} needs {'0 < ' if positive else ''}LOW < HIGH, got {lo} {hi}")
        if name == "lr":
            lr_range = (lo, hi)
        else:
            ranges[name] = (lo, hi)
    return lr_range, ranges


def _fmt(params: dict) -> str:
    return ", ".join(f"{symbol(k)}={v:.3g}" for k, v in params.items())


def open_study(args, name: str, url: str, cfg: CellConfig) -> optuna.Study:
    import optuna

    from bench.grid import study as gs

    pruner = optuna.pruners.MedianPruner(n_startup_trials=args.startup_trials, n_warmup_steps=args.warmup_steps)
    study = gs.open_study(name, url, args.heartbeat, make_sampler(args.seed, 0, args.startup_trials), pruner)
    # the tuned configuration, minus what is tuned: a study is never continued with another configuration
    fixed = {k: v for k, v in cfg.to_flat().items() if k not in ("lr", "seed")}
    old = study.user_attrs.get("config")
    if old is None:
        study.set_user_attr("config", fixed)
    elif old != fixed:
        diff = ", ".join(f"{k}: {old.get(k)!r} → {fixed.get(k)!r}" for k in sorted(set(old) | set(fixed))
                         if old.get(k) != fixed.get(k))
        raise cli.UsageError(f"study {name} was tuned with another configuration ({diff}); pass --study-name or --out "
                         f"for a new study")
    return study


def save_results(study: optuna.Study, out: Path, info: dict) -> dict | None:
    """Write ``best_params.json``, ``history.png`` and (with two or more completed trials) ``importance.png``;
    return the best-parameters record, whose ``files`` lists what was written and ``not_written`` why a figure
    was not."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return None
    best = study.best_trial
    counts = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,)))
              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    record = {**info, "study": study.study_name, "params": best.params, "value": best.value,
              "best_trial": best.number, "trials": counts,
              "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    from bench.core.records import atomic_write_text

    atomic_write_text(out / "best_params.json", json.dumps(record, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ax = ovm.plot_optimization_history(study, target_name="validation PSNR (dB)")
        ax.figure.set_size_inches(7, 4)
        ax.figure.tight_layout()
        ax.figure.savefig(out / "history.png", dpi=120, bbox_inches="tight")
        plt.close(ax.figure)
        files, not_written = ["best_params.json", "history.png"], ""
        if len(done) >= 2:
            try:
                ax = ovm.plot_param_importances(study, target_name="validation PSNR")
                ax.figure.set_size_inches(7, 3)
                ax.figure.tight_layout()
                ax.figure.savefig(out / "importance.png", dpi=120, bbox_inches="tight")
                plt.close(ax.figure)
                files.append("importance.png")
            except (RuntimeError, ValueError, ImportError) as err:  # e.g. every trial drew the same value; Optuna
                # 4.x's default evaluator (fANOVA) needs scikit-learn, which colorbench does not install
                not_written = f"importance.png not written: parameter importances failed ({err})"
        else:
            not_written = (f"importance.png not written: parameter importances need at least 2 completed trials "
                           f"(the study has {len(done)})")
    return {**record, "files": files, "not_written": not_written}


@dataclass(frozen=True)
class TuneRequest:
    """What one ``tune`` command line asks for, resolved and checked: the one input of :func:`execute`.

    Attributes:
        device: where to train; ``cfg`` the base configuration of every trial, ``preset`` its preset's name.
        data: the data set's name; ``prep`` its decoded splits (checked before any folder or study exists).
        name, url, study: the study's name, its storage (redacted when shown) and the open study.
        out: the results folder (checked writable).
        trackers: the ``--log`` backends.
        trials, timeout, seed, startup_trials, lr_range, tuned_ranges, progress: the options of those names.
    """

    device: Any
    cfg: Any
    preset: str
    data: str
    prep: Any
    name: str
    url: str
    study: Any
    out: Path
    trackers: tuple
    trials: int
    timeout: float | None
    seed: int
    startup_trials: int
    lr_range: Any
    tuned_ranges: Any
    progress: bool


@cli.command
def main(argv=None) -> int:
    args = parse_args(argv)
    trackers = cli.trackers(args)  # a backend that is not installed: one line, before any folder
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return execute(request_from_args(args, trackers))


def request_from_args(args, trackers) -> TuneRequest:
    """Resolve a parsed command line: device, base configuration, study name and folder, the decoded data (checked
    before the folder or the study exist: a refused run leaves nothing), then the open study."""
    from bench.data.sources import data_root, resolve
    from bench.grid.tuned import study_name
    from bench.training.loop import pick_device, prepare

    with cli.usage_errors():
        device = pick_device(args.device)
        cfg, preset_name = base_config(args, device)
        dname = resolve(args.data, data_root(args.data_root))[0]
        name = args.study_name or study_name(cfg.model, cfg.loss, preset_name, dname)
        out = cli.out_dir(args.out) or results_root() / name
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            prep = prepare(cfg, args.data, None, args.data_root, verify=not args.no_verify, cache_mb=args.cache_mb,
                           loader_workers=args.loader_workers)
            prep.check_held_out()  # a streamed set: waits for its fingerprints (tuning scores every trial's test)
        for w in (w for w in caught if issubclass(w.category, UserWarning)):
            log.warning(w.message)
        check_writable(out)
        url = args.storage or str(out / "study.journal")
        study = open_study(args, name, url, cfg)
    return TuneRequest(device, cfg, preset_name, dname, prep, name, url, study, out, tuple(trackers), args.trials,
                       args.timeout, args.seed, args.startup_trials, args.lr_range, args.tuned_ranges,
                       not args.no_progress)


def execute(req: TuneRequest) -> int:
    """Run the trials a request still needs, then save and print the best parameters."""
    from optuna.trial import TrialState

    from bench.grid import study as gs

    if req.out.is_dir():
        attach_run_log(req.out)
    cfg, study = req.cfg, req.study
    info = {"model": cfg.model, "loss": cfg.loss, "preset": req.preset, "data": req.data,
            "storage": gs.redact(req.url)}
    gs.describe(study, model=cfg.model, loss=cfg.loss, preset=req.preset, data=req.data)  # optuna-dashboard shows it
    gs.fail_stale(study)  # trials of a killed worker (journal storages; Study.optimize does it for RDB ones)
    # --trials counts the study's trials, every worker's: finished ones and those running elsewhere right now
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
    finished = len(study.get_trials(deepcopy=False, states=counted[:3]))
    remaining = req.trials - len(study.get_trials(deepcopy=False, states=counted))
    log.info(f"tuning {tuned_words(cfg.loss)} of {cfg.model} / {cfg.loss} ({req.preset}, {req.data}, {cfg.steps} "
             f"steps): {finished} of {req.trials} trials done\nstudy {req.name} in {gs.redact(req.url)}")
    if remaining > 0:
        _optimize(req, remaining, counted)
    record = save_results(study, req.out, info)
    if record is None:
        log.warning("no trial completed yet: no best parameters")
        return 1
    print(f"best (trial {record['best_trial']}, val PSNR {record['value']:.2f} dB): {_fmt(record['params'])}\n"
          f"trials: {record['trials']}\nsaved in {req.out}: {', '.join(record['files'])}")
    if record["not_written"]:
        log.warning(record["not_written"])
    print(json.dumps(record["params"]))
    return 0


def _optimize(req: TuneRequest, remaining: int, counted: tuple) -> None:
    """Run up to ``remaining`` trials (``--trials`` counts every worker's), each line logged as it ends."""
    import optuna

    from bench.grid import study as gs
    from bench.training.loop import DivergenceError

    t0 = time.perf_counter()
    try:
        req.study.optimize(_objective(req), n_trials=remaining, timeout=req.timeout, catch=(DivergenceError,),
                           callbacks=[optuna.study.MaxTrialsCallback(req.trials, states=counted), _report_trial])
    except KeyboardInterrupt:
        raise cli.Interrupted(f"finished trials are saved in {gs.redact(req.url)}; run the same command again to "
                              f"resume.") from None
    log.info(f"{time.perf_counter() - t0:.0f} s")


def _objective(req: TuneRequest):
    """The Optuna objective: one trial's parameters trained with ``train_cell``; its validation PSNR."""
    import optuna

    from bench.core.tracking import opened
    from bench.grid import study as gs
    from bench.grid.tuned import apply_params
    from bench.training.loop import DivergenceError, train_cell

    def objective(trial: optuna.Trial) -> float:
        # a fresh sampler per trial, seeded by the trial number (see make_sampler)
        req.study.sampler = make_sampler(req.seed, trial.number, req.startup_trials)
        trial_cfg = apply_params(req.cfg, suggest(trial, req.cfg.loss, req.lr_range, req.tuned_ranges))

        def on_validation(step, val_psnr):
            trial.report(val_psnr, step)
            if trial.should_prune():
                trial.set_user_attr("pruned_at_step", step)
                raise optuna.TrialPruned(f"pruned at step {step} (val PSNR {val_psnr:.2f} dB)")

        tracked = {"study": req.name, "trial": trial.number, **trial_cfg.to_flat()}  # the trackers' hyper-parameters
        with gs.keep_alive(req.study, trial, native=False):
            try:
                with opened(req.trackers, req.out, f"trial{trial.number}", tracked) as tracker:  # tb/trial<N>/
                    res = train_cell(trial_cfg, req.prep, req.device, progress=req.progress,
                                     desc=f"trial {trial.number}", on_validation=on_validation, tracker=tracker)
            except DivergenceError as err:
                trial.set_user_attr("outcome", "diverged")
                trial.set_user_attr("error", f"step {err.step}: {err.reason}")
                raise
        return res["metrics"]["val_psnr"]

    return objective


def _report_trial(study, t) -> None:
    """The line of a finished trial: its parameters, outcome and the best so far."""
    from optuna.trial import TrialState

    if t.state == TrialState.COMPLETE:
        what = f"val PSNR {t.value:.2f} dB"
    elif t.state == TrialState.PRUNED:
        what = f"pruned at step {t.user_attrs.get('pruned_at_step', t.last_step)}"
    else:
        what = f"failed ({t.user_attrs.get('error', 'error')})"
    try:
        best = f"; best #{study.best_trial.number}: {study.best_value:.2f} dB"
    except ValueError:
        best = ""
    log.info(f"trial {t.number}: {_fmt(t.params)} → {what}{best}")


if __name__ == "__main__":
    sys.exit(main())
