"""Experiment tracking: each training's loss, validation PSNR, test metrics, hyper-parameters and sample images, sent
to TensorBoard, MLflow or Weights & Biases (``--log`` of ``ablate`` and ``tune``).

Every backend speaks one protocol (``Tracker``): ``start(run_name, params, folder)``, ``scalar(tag, value, step)``,
``image(tag, uint8 H×W×3 array, step)``, ``hparams(params, final_metrics)`` and ``close(status)``. ``Trackers``
sends each call to every backend asked for; ``opened`` starts and closes them around one training. Where each
backend writes, under the run folder ``folder``:

    tensorboard   <folder>/tb/<run name>/           one event folder per training: ``tensorboard --logdir <folder>/tb``
    mlflow        <folder>/mlruns                   a file store; one experiment per run folder (named after it),
                                                    one MLflow run per training
    wandb         <folder>/wandb/                   ``mode`` from ``$WANDB_MODE`` (default offline), project
                                                    ``$WANDB_PROJECT`` (default colorbench), group: the run folder

The backends are optional extras (``pip install colorbench[tensorboard]``), imported only when asked for:
``require`` checks them before anything is created. Tracking changes no result and no configuration hash.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Protocol

from bench.core.records import locked

#: backend name → the module it needs (the extra of the same name installs it)
BACKENDS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


class MissingBackend(ValueError):
    """A tracking backend asked for with ``--log`` is not installed."""


class Tracker(Protocol):
    """What every tracking backend implements."""

    def start(self, run_name: str, params: dict, folder: Path) -> None:
        """Begin tracking one training named ``run_name`` with its hyper-parameters, under the run folder."""

    def scalar(self, tag: str, value: float, step: int) -> None:
        """Record one value of a curve (``train/loss``, ``val/psnr``, ``test/psnr`` ...) at a training step."""

    def image(self, tag: str, image, step: int) -> None:
        """Record a ``H×W×3`` uint8 RGB image (a sample colorization) at a training step."""

    def hparams(self, params: dict, final_metrics: dict) -> None:
        """Record the hyper-parameters with the training's final metrics (TensorBoard's HParams table)."""

    def close(self, status: str = "ok") -> None:
        """End the training's record: ``ok``, ``failed`` (diverged or crashed) or ``killed`` (pruned, interrupted)."""


def require(names) -> tuple[str, ...]:
    """Check that every backend in ``names`` can be imported; returns them once each, in order.

    Args:
        names: backend names (``--log`` values), or None.

    Raises:
        MissingBackend: one line naming the extra that installs it.
        ValueError: an unknown backend.
    """
    out = tuple(dict.fromkeys(names or ()))
    for name in out:
        if name not in BACKENDS:
            raise ValueError(f"unknown tracking backend {name!r} (one of {', '.join(BACKENDS)})")
        try:
            importlib.import_module(BACKENDS[name])
        except ImportError as err:
            raise MissingBackend(f"--log {name} needs the {BACKENDS[name]} package, which cannot be imported "
                                 f"({type(err).__name__}): pip install colorbench[{name}] (in a checkout: pip "
                                 f"install -e \".[{name}]\")") from None
    return out


def flat_params(params: dict) -> dict:
    """Hyper-parameters as the backends' tables take them: numbers, strings and booleans as they are, anything
    else (None, lists, dicts) as JSON text."""
    return {str(k): v if isinstance(v, (bool, int, float, str)) else json.dumps(v, sort_keys=True, default=str)
            for k, v in params.items()}


def finite_metrics(metrics: dict, prefix: str = "") -> dict:
    """The finite numbers of a metrics dict (strings such as backbone names and NaN metrics left out), keys
    prefixed."""
    return {f"{prefix}{k}": float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class TensorBoard:
    """Event files in ``<folder>/tb/<run name>/`` (``torch.utils.tensorboard``)."""

    def start(self, run_name: str, params: dict, folder: Path) -> None:
        """Open the run's event folder."""
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(folder) / "tb" / run_name))
        self.tags: set[str] = set()

    def scalar(self, tag: str, value: float, step: int) -> None:
        """One scalar event."""
        self.writer.add_scalar(tag, float(value), int(step))
        self.tags.add(tag)

    def image(self, tag: str, image, step: int) -> None:
        """One image event."""
        self.writer.add_image(tag, image, int(step), dataformats="HWC")

    def hparams(self, params: dict, final_metrics: dict) -> None:
        """The HParams plugin's summaries; a final metric that is no curve yet becomes a scalar of its own."""
        from torch.utils.tensorboard.summary import hparams

        for summary in hparams(flat_params(params), final_metrics):
            self.writer.file_writer.add_summary(summary)
        for tag, value in final_metrics.items():
            if tag not in self.tags:
                self.scalar(tag, value, 0)

    def close(self, status: str = "ok") -> None:
        """Flush and close the event file."""
        self.writer.close()


#: MLflow run status of each ``close`` status
MLFLOW_STATUS = {"ok": "FINISHED", "failed": "FAILED", "killed": "KILLED"}


class MLflow:
    """A file store in ``<folder>/mlruns``: one experiment per run folder, one MLflow run per training. Scalars are
    sent in batches (``FLUSH_EVERY``)."""

    FLUSH_EVERY = 200

    def start(self, run_name: str, params: dict, folder: Path) -> None:
        """Open the store, its experiment (created once, under a lock: workers share it) and a new MLflow run."""
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        store = (Path(folder) / "mlruns").resolve()
        store.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=store.as_uri())
        name = Path(folder).resolve().name
        with locked(store):  # <folder>/mlruns.lock: two workers never create the experiment twice
            found = self.client.get_experiment_by_name(name)
            eid = found.experiment_id if found else self.client.create_experiment(name)
        self.run_id = self.client.create_run(eid, run_name=run_name).info.run_id
        self.params = flat_params(params)
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in self.params.items()])
        self.pending: list = []
        self.last_step, self.tags = 0, set()

    def scalar(self, tag: str, value: float, step: int) -> None:
        """Queue one metric value (sent every ``FLUSH_EVERY`` values and at the end)."""
        from mlflow.entities import Metric

        self.pending.append(Metric(tag, float(value), int(time.time() * 1000), int(step)))
        self.last_step = max(self.last_step, int(step))
        self.tags.add(tag)
        if len(self.pending) >= self.FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Send the queued metric values."""
        if self.pending:
            self.client.log_batch(self.run_id, metrics=self.pending)
            self.pending = []

    def image(self, tag: str, image, step: int) -> None:
        """A PNG artifact ``<tag>/step<step>.png``."""
        self.client.log_image(self.run_id, image, artifact_file=f"{tag}/step{int(step)}.png")

    def hparams(self, params: dict, final_metrics: dict) -> None:
        """The parameters not logged at the start, and the final metrics that are no curve yet (at the last step
        logged)."""
        from mlflow.entities import Param

        new = {k: v for k, v in flat_params(params).items() if k not in self.params}
        for tag, value in final_metrics.items():
            if tag not in self.tags:
                self.scalar(tag, value, self.last_step)
        self.flush()
        if new:
            self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in new.items()])
            self.params.update(new)

    def close(self, status: str = "ok") -> None:
        """Send what is queued and end the MLflow run with its status."""
        try:
            self.flush()
        finally:
            self.client.set_terminated(self.run_id, MLFLOW_STATUS.get(status, "FAILED"))


class WandB:
    """A Weights & Biases run in ``<folder>/wandb/``; ``$WANDB_MODE`` picks the mode (default offline: nothing is
    sent; ``wandb sync`` uploads later)."""

    def start(self, run_name: str, params: dict, folder: Path) -> None:
        """``wandb.init`` of one run, grouped by the run folder."""
        import wandb

        self.wandb = wandb
        folder = Path(folder).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or "colorbench", group=folder.name,
                              name=run_name, config=params, dir=str(folder),
                              mode=os.environ.get("WANDB_MODE") or "offline",
                              settings=wandb.Settings(console="off", silent=True))

    def scalar(self, tag: str, value: float, step: int) -> None:
        """One history value."""
        self.run.log({tag: float(value)}, step=int(step))

    def image(self, tag: str, image, step: int) -> None:
        """One ``wandb.Image``."""
        self.run.log({tag: self.wandb.Image(image)}, step=int(step))

    def hparams(self, params: dict, final_metrics: dict) -> None:
        """The parameters into the run's config, the final metrics into its summary."""
        self.run.config.update(params, allow_val_change=True)
        self.run.summary.update(final_metrics)

    def close(self, status: str = "ok") -> None:
        """Finish the run (exit code 1 unless ``ok``)."""
        self.run.finish(exit_code=0 if status == "ok" else 1)


MAKERS = {"tensorboard": TensorBoard, "mlflow": MLflow, "wandb": WandB}


class Trackers:
    """Several backends behind the one protocol: each call goes to every backend. A backend that fails is
    reported once on stderr and left out for the rest of the training (tracking never stops a training)."""

    def __init__(self, names):
        self.names = require(names)
        self.backends = {name: MAKERS[name]() for name in self.names}
        self.params: dict = {}

    def _each(self, method: str, *args) -> None:
        for name, backend in list(self.backends.items()):
            try:
                getattr(backend, method)(*args)
            except Exception as err:  # a tracking fault must not cost the training
                del self.backends[name]
                print(f"warning: tracking with {name} failed in {method} ({type(err).__name__}: "
                      f"{str(err).splitlines()[0] if str(err) else ''}); {name} is off for the rest of this training",
                      file=sys.stderr)

    def start(self, run_name: str, params: dict, folder: Path) -> None:
        """Start every backend."""
        self.params = dict(params)
        self._each("start", run_name, params, folder)

    def scalar(self, tag: str, value: float, step: int) -> None:
        """A scalar to every backend."""
        self._each("scalar", tag, value, step)

    def image(self, tag: str, image, step: int) -> None:
        """An image to every backend."""
        self._each("image", tag, image, step)

    def hparams(self, params: dict | None, final_metrics: dict) -> None:
        """Hyper-parameters (None: those given to ``start``) and final metrics to every backend."""
        self._each("hparams", self.params if params is None else params, final_metrics)

    def close(self, status: str = "ok") -> None:
        """Close every backend."""
        self._each("close", status)
        self.backends = {}


@contextlib.contextmanager
def opened(names, folder: Path, run_name: str, params: dict):
    """``Trackers`` started for one training and closed after it, with its status (``failed`` on an error,
    ``killed`` when pruned or interrupted); yields None when ``names`` is empty.

    Args:
        names: backend names (``--log``).
        folder: the run folder.
        run_name: the training's name (its TensorBoard folder, its MLflow and W&B run name).
        params: its hyper-parameters.
    """
    if not names:
        yield None
        return
    tracker = Trackers(names)
    tracker.start(run_name, params, folder)
    status = "killed"
    try:
        yield tracker
        status = "ok"
    except Exception as err:
        status = "killed" if type(err).__name__ == "TrialPruned" else "failed"
        raise
    finally:
        tracker.close(status)
