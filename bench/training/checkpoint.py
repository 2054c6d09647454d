"""Trained models as results: final weights with their configuration, and training checkpoints to resume from.

Files of one run (model × cell × seed) in a run folder::

    models/<model>/<cell>/seed<seed>/model.safetensors   the final weights (safetensors: tensors only, no pickle)
    models/<model>/<cell>/seed<seed>/config.json         the CellConfig, the cell's name and the recorded metrics
    models/<model>/<cell>/seed<seed>/checkpoint.pt       while training: model, optimiser, loss module, step, RNGs
                                                         (every ``checkpoint_every`` steps; removed when it ends)

The weights carry their run's identity in the safetensors metadata (model, cell, seed, fold and the SHA-256 of the
configuration in ``config.json``): loading refuses weights whose identity is not that of their ``config.json`` (weights
swapped between seeds or cells, an edited configuration), and a damaged file of either kind is a ``WeightsError``
(one line) rather than a traceback.

A checkpoint is a plain dict of tensors, numbers and strings written by ``torch.save`` and read back with
``torch.load(weights_only=True)``, which refuses to unpickle anything else. Every file is written to a temporary
name in the same folder and renamed, so a killed worker leaves the previous version intact.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import random
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model

import losses
import models

from bench.config.cell import CellConfig, check_values
from bench.core.records import atomic_write_bytes, atomic_write_text, slug

WEIGHTS, CONFIG, CHECKPOINT = "model.safetensors", "config.json", "checkpoint.pt"
FORMAT = 1  # version of the checkpoint dict; a checkpoint of another version is not resumed from
#: The identity fields that the weights' metadata and ``config.json`` must agree on.
IDENTITY = ("model", "cell", "seed", "fold", "config_sha256")


class WeightsError(ValueError):
    """A saved model that cannot be used: damaged, of another code version, or not the run its folder says."""


def model_dir(run_dir, model: str, cell: str, seed: int) -> Path:
    """The folder of one run's weights, configuration and checkpoint (named like its sample folder)."""
    return Path(run_dir) / "models" / slug(model) / slug(cell) / f"seed{int(seed)}"


def _atomic(path: Path, write) -> None:
    """Call ``write(tmp_path)``, then rename the temporary file to ``path`` (never a half-written file). A full disk
    is an ``OSError`` (ENOSPC/EDQUOT) naming ``path``, whatever the writer raised (safetensors raises its own error)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are meant to be shared like any file
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        code = full_disk_errno(err)
        if code is not None:
            raise OSError(code, os.strerror(code), str(path)) from None
        raise


def full_disk_errno(err: BaseException) -> int | None:
    """ENOSPC or EDQUOT if ``err`` says the disk (or quota) is full, also when a writer wraps the ``OSError`` in its
    own exception (safetensors: "... No space left on device (os error 28)"); else None."""
    if isinstance(err, OSError):
        return err.errno if err.errno in (errno.ENOSPC, errno.EDQUOT) else None
    text = str(err)
    for code in (errno.ENOSPC, errno.EDQUOT):
        if f"os error {code})" in text or os.strerror(code) in text:
            return code
    return None


# ---------------------------------------------------------------------------------------------------- final weights


def config_sha256(config: dict) -> str:
    """SHA-256 of a configuration as ``config.json`` holds it (canonical JSON)."""
    text = json.dumps(json.loads(json.dumps(config, default=str)), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def identity(config: dict, info: dict) -> dict[str, str]:
    """The identity of a saved run (``IDENTITY``) as strings: what the weights' metadata records."""
    fold = info.get("fold")
    return {"model": str(info.get("model", "")), "cell": str(info.get("cell", "")), "seed": str(info.get("seed", "")),
            "fold": "" if fold is None else str(fold), "config_sha256": config_sha256(config)}


def save_weights(folder, net: torch.nn.Module, cfg: CellConfig, info: dict) -> Path:
    """Save a trained network's weights (safetensors, with the run's identity as metadata) and its configuration
    (``config.json``) in ``folder``.

    Args:
        folder: the run's model folder (:func:`model_dir`).
        net: the trained network.
        cfg: its configuration.
        info: what else identifies the run (``model``, ``cell``, ``seed``, recorded metrics, ...), JSON-serialisable.
    """
    folder = Path(folder)
    config = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    meta = {"format": "colorbench", **identity(config, info)}
    _atomic(folder / WEIGHTS, lambda tmp: save_model(net, tmp, metadata=meta))
    doc = {"config": config, **info, "weights": WEIGHTS}
    atomic_write_text(folder / CONFIG, json.dumps(doc, indent=2, default=str))
    return folder / WEIGHTS


def read_config(folder) -> tuple[CellConfig, dict]:
    """(configuration, the rest of ``config.json``) of a saved model.

    Raises:
        WeightsError: ``config.json`` missing, not JSON, or not a configuration of this version (one line).
    """
    path = Path(folder) / CONFIG
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
            raise ValueError("no 'config' object")
        config = doc.pop("config")
        check_values(config)
        cfg = CellConfig(**config)
        doc["config_sha256"] = config_sha256(config)
    except (OSError, ValueError, TypeError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0] if str(err) \
            else type(err).__name__
        raise WeightsError(f"{path} is damaged or of another version ({why}); retrain this run or move its "
                           f"folder away") from None
    return cfg, doc


def build_model(cfg: CellConfig) -> torch.nn.Module:
    """The network of a configuration, with its head chosen from the loss, without loading any encoder weights
    (they are overwritten by a saved state anyway, and building must work offline)."""
    head = losses.head_of(cfg.loss)
    return models.build(cfg.model, head=head, width=cfg.width, encoder_weights="none", **cfg.model_params)


def load_weights(folder, device="cpu") -> tuple[torch.nn.Module, CellConfig, dict]:
    """A saved network (in evaluation mode, on ``device``), its configuration and its ``config.json`` info.

    Raises:
        FileNotFoundError: the folder has no weights.
        WeightsError: damaged or truncated weights or configuration, weights of another network, or weights whose
            recorded identity (model, cell, seed, fold, configuration hash) is not that of ``config.json``.
    """
    folder = Path(folder)
    if not (folder / WEIGHTS).is_file():
        raise FileNotFoundError(f"no saved weights in {folder}")
    cfg, info = read_config(folder)
    try:
        with safe_open(folder / WEIGHTS, framework="pt") as fh:
            meta = fh.metadata() or {}
        if "config_sha256" in meta:  # weights saved before identities were recorded carry none
            mine = identity({}, info) | {"config_sha256": info["config_sha256"]}
            differ = [k for k in IDENTITY if meta.get(k) != mine[k]]
            if differ:
                what = [f"{k} {meta.get(k)!r} ≠ {mine[k]!r}" if k != "config_sha256" else "another configuration"
                        for k in differ]
                raise WeightsError(f"{folder / WEIGHTS} belongs to another run than its {CONFIG} ({', '.join(what)})"
                                   f": weights swapped or the configuration edited; retrain this run or move its "
                                   f"folder away")
        net = build_model(cfg)
        load_model(net, folder / WEIGHTS, strict=True, device="cpu")
    except WeightsError:
        raise
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, SafetensorError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise WeightsError(f"{folder / WEIGHTS} is damaged or does not fit its {CONFIG} ({type(err).__name__}: "
                           f"{first}); retrain this run or move its folder away") from None
    net.encoder_pretrained = bool(info.get("encoder_pretrained", False))
    return net.to(device).eval(), cfg, info


@dataclass
class SavedModel:
    """One saved model of a run folder."""

    folder: Path
    model: str
    cell: str
    seed: int
    fold: int | None = None  # k-fold runs: every fold trained its own network (``seed<k>/fold<f>/``)


def saved_models(run_dir, damaged: list | None = None) -> list[SavedModel]:
    """Every saved model of a run folder (those with both weights and configuration), sorted by model, cell, seed
    and fold.

    Args:
        run_dir: the run folder.
        damaged: if given, receives ``(folder, why)`` for each model folder left out: a ``config.json`` that cannot
            be read or lacks the run's identity, or two folders that claim the same run.
    """
    out = []
    run_dir = Path(run_dir)
    files = [*run_dir.glob(f"models/*/*/seed*/{CONFIG}"), *run_dir.glob(f"models/*/*/seed*/fold*/{CONFIG}")]
    for cfg_file in sorted(files):
        folder = cfg_file.parent
        if not (folder / WEIGHTS).is_file():
            continue
        try:
            info = json.loads(cfg_file.read_text(encoding="utf-8"))
            fold = info.get("fold")
            out.append(SavedModel(folder, str(info["model"]), str(info["cell"]), int(info["seed"]),
                                  None if fold in (None, "") else int(fold)))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            if damaged is not None:  # a damaged configuration: not a usable model
                damaged.append((folder, f"{cfg_file} cannot be read ({type(err).__name__})"))
    claims: dict[tuple, list[SavedModel]] = {}
    for s in out:
        claims.setdefault((s.model, s.cell, s.seed, s.fold), []).append(s)
    clash = {id(s) for group in claims.values() if len(group) > 1 for s in group}
    if damaged is not None:
        damaged += [(s.folder, (f"{s.folder / CONFIG} claims the same run as another folder "
                                f"({s.model}/{s.cell} seed {s.seed})")) for s in out if id(s) in clash]
    out = [s for s in out if id(s) not in clash]
    return sorted(out, key=lambda s: (s.model, s.cell, s.seed, -1 if s.fold is None else s.fold))


# ------------------------------------------------------------------------------------------------- checkpoints


def rng_state() -> dict:
    """The torch (CPU and CUDA), numpy and Python random states, as tensors, numbers and tuples only."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(tuple(state["python"][:1]) + (tuple(state["python"][1]),) + tuple(state["python"][2:]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _identity(cfg: CellConfig) -> str:
    """What a checkpoint must share with the run that resumes it: the configuration, except how often to save."""
    flat = cfg.to_flat()
    flat.pop("checkpoint_every", None)
    return json.dumps(flat, sort_keys=True, default=str)


def save_checkpoint(path, cfg: CellConfig, train_state: dict, extra: dict) -> None:
    """Write a training checkpoint atomically, with the RNG states of this moment.

    Args:
        path: the checkpoint file.
        cfg: the run's configuration (a checkpoint is resumed only by the same configuration).
        train_state: ``TrainStep.state_dict()``: model, loss module (with any critic and its optimiser), optimiser,
            steps done.
        extra: the training loop's own state (history, last loss, elapsed time), plain values only.
    """
    state = {"format": FORMAT, "config": _identity(cfg), "train_step": train_state, "rng": rng_state(),
             "extra": extra}
    buf = io.BytesIO()  # serialised in memory: torch.save reports a full disk as an obscure RuntimeError
    torch.save(state, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_checkpoint(path, cfg: CellConfig) -> tuple[dict | None, str]:
    """(checkpoint, "") if ``path`` holds a readable checkpoint of this configuration, else (None, why not)."""
    path = Path(path)
    if not path.is_file():
        return None, f"no checkpoint at {path}"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # damaged, truncated, or not a plain checkpoint: never trusted
        return None, f"checkpoint {path} cannot be read ({type(err).__name__})"
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return None, f"checkpoint {path} has another format"
    if state.get("config") != _identity(cfg):
        return None, f"checkpoint {path} belongs to another configuration"
    return state, ""


def remove_checkpoint(path) -> None:
    """Delete a finished run's checkpoint (its final weights, if saved, are in ``model.safetensors``)."""
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    for folder in list(path.parents)[:4]:  # seed<k>/, <cell>/, <model>/, models/: only while they are empty
        try:
            folder.rmdir()
        except OSError:
            break
