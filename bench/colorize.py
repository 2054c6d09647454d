"""Colorize your own photos with a model saved by a run, at the photos' own resolution.

    python -m bench.colorize --run results/losses-quick-kodak24-bundled --cell mse photo.jpg out/
    python -m bench.colorize --run RUN_DIR --cell kl --seed 1 photos/ out/

The network sees the photo's lightness resized to its working scale (shorter side = the run's ``size``, both sides
rounded to a multiple of 16); the predicted ab is upsampled to the photo's resolution and combined with the
photo's own full-resolution L, so no detail is lost. Colour photos work too (their colour is discarded). OUTPUT is a
folder: one PNG per readable input (a folder's layout is kept), with the input's width and height. Unreadable files
are skipped and counted.

Inputs are never replaced: an output folder that holds or lies in the input folder is refused, as are two inputs
that would get one output name and an existing file that this command did not write. Every PNG is written to a
temporary file and renamed (an interrupted or concurrent command never leaves a half-written one), and the
full-resolution stage works in strips of rows (``STRIP_PIXELS``), so memory stays bounded for huge photos.
"""
from __future__ import annotations

import io
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from bench import cli
from bench.core.log import get_logger
from bench.core.records import atomic_write_bytes, check_writable

log = get_logger(__name__)

# torch, numpy and the modules that need them are imported where they are used, after the command line is parsed:
# --help stays fast
if TYPE_CHECKING:
    import numpy as np
    import torch

BAD_IMAGE = (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError, SyntaxError)


UsageError = cli.UsageError

#: Pixels of the photo that the full-resolution stage (lightness, upsampled ab, Lab → RGB) handles at once: about
#: 60 MB of float tensors, whatever the photo's size (the whole photo at once took 6.7 GB at 49 megapixels).
STRIP_PIXELS = 1 << 20
#: The PNG text chunk that marks a file written by this command (only such files are ever replaced).
MARK = ("Software", "colorbench colorize")


def parse_args(argv=None):
    p = cli.parser("colorize", __doc__)
    p.add_argument("--run", required=True, help="run folder with saved models (python -m bench.ablate --out ...)")
    p.add_argument("--cell", required=True, help="the grid cell whose model to use (e.g. mse)")
    p.add_argument("--seed", type=int, default=None, help="training seed of the model (default: the lowest saved)")
    p.add_argument("--fold", type=int, default=None, help="k-fold runs: the fold whose network to use (default: the "
                   "lowest saved; every fold's network learnt from other images)")
    p.add_argument("--model", default=None, help="model name, when the run trained several")
    cli.add(p, "device", "no_progress")
    p.add_argument("input", help="a photo or a folder of photos (searched recursively)")
    p.add_argument("output", help="folder for the colorized PNGs (created)")
    return p.parse_args(argv)


def pick_model(run_dir: Path, cell: str, seed: int | None, model: str | None, fold: int | None = None):
    """The saved model of (model, cell, seed, fold); a UsageError naming what is available otherwise."""
    from bench.training.checkpoint import saved_models

    unusable: list[tuple] = []
    saved = saved_models(run_dir, unusable)
    why = f"; {len(unusable)} unusable, e.g. {unusable[0][1]}" if unusable else ""
    if not saved:
        raise UsageError(f"{run_dir} has no saved models (models/*/*/seed*/): train with --save-models all{why}")
    match = [s for s in saved if s.cell == cell and (model is None or s.model == model)]
    if not match:
        cells = sorted({s.cell for s in saved})
        raise UsageError(f"no saved model of cell {cell!r}{f' and model {model!r}' if model else ''} in {run_dir}; "
                         f"saved cells: {', '.join(cells)}{why}")
    if len({s.model for s in match}) > 1:
        raise UsageError(f"cell {cell!r} was trained with several models ({', '.join(sorted({s.model for s in match}))})"
                         f": choose one with --model")
    if seed is not None:
        if not any(s.seed == seed for s in match):
            raise UsageError(f"no saved model of cell {cell!r} with seed {seed}; saved seeds: "
                             f"{', '.join(sorted({str(s.seed) for s in match}))}{why}")
        match = [s for s in match if s.seed == seed]
    if fold is not None:
        if not any(s.fold == fold for s in match):
            folds = sorted({s.fold for s in match if s.fold is not None})
            raise UsageError(f"no saved model of cell {cell!r} with fold {fold}; "
                             + (f"saved folds: {', '.join(map(str, folds))}" if folds else "the run has no folds")
                             + why)
        match = [s for s in match if s.fold == fold]
    return min(match, key=lambda s: (s.seed, -1 if s.fold is None else s.fold))


def working_size(h: int, w: int, size: int) -> tuple[int, int]:
    """(height, width) the network sees: shorter side ``size``, both sides rounded to a multiple of 16."""
    from bench.data.sources import shorter_side_size

    nh, nw = shorter_side_size(h, w, size)
    return max(16, round(nh / 16) * 16), max(16, round(nw / 16) * 16)


def colorize_photo(net, rgb: np.ndarray, size: int, device, amp: torch.dtype | None = None,
                   strip_pixels: int | None = None) -> np.ndarray:
    """Colorize one ``H×W×3`` uint8 photo; returns ``H×W×3`` uint8 RGB with the photo's own L and predicted ab.

    Args:
        net: a trained colorization model (evaluation mode).
        rgb: the photo (any colour is discarded: only its lightness is used).
        size: the model's working scale (its training ``size``).
        device: where the network lives.
        amp: autocast dtype, or None for full precision.
        strip_pixels: pixels per strip of the full-resolution stage (default ``STRIP_PIXELS``).
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    from bench.data import colour
    from bench.metrics.compute import colorize

    split_lab, merge_lab = colour.split_lab, colour.merge_lab  # looked up when called (a test's spy replaces them)
    h, w = rgb.shape[:2]
    wh, ww = working_size(h, w, size)
    small = np.array(Image.fromarray(rgb).resize((ww, wh), Image.BILINEAR))
    with torch.no_grad():
        L_small, _ = split_lab(torch.from_numpy(small).permute(2, 0, 1)[None].to(device))
        with torch.autocast(device_type=torch.device(device).type, dtype=amp or torch.float32,
                            enabled=amp is not None):
            ab = colorize(net, L_small).float()
        # bilinear upsampling as F.interpolate(ab, (h, w), align_corners=False), split in two: along the rows here
        # (the working height is small), then down the columns strip by strip with the same weights
        ab = F.interpolate(ab, size=(wh, w), mode="bilinear", align_corners=False)
        y = ((torch.arange(h, dtype=torch.float32, device=ab.device) + 0.5) * (wh / h) - 0.5).clamp_min(0)
        y0 = y.long().clamp_max(wh - 1)
        y1 = (y0 + 1).clamp_max(wh - 1)
        t = (y - y0).view(1, 1, h, 1)
        out = np.empty((h, w, 3), dtype=np.uint8)
        rows = max(1, (strip_pixels or STRIP_PIXELS) // w)
        for top in range(0, h, rows):
            r = slice(top, min(h, top + rows))
            ab_r = ab[:, :, y0[r]] * (1 - t[:, :, r]) + ab[:, :, y1[r]] * t[:, :, r]
            L, _ = split_lab(torch.from_numpy(rgb[r]).permute(2, 0, 1)[None].to(device))
            strip = merge_lab(L, ab_r)[0].clamp(0, 1).mul(255).round().to(torch.uint8)
            out[r] = strip.permute(1, 2, 0).cpu().numpy()
    return out


def png_bytes(rgb: np.ndarray) -> bytes:
    """A PNG of ``rgb`` marked as written by this command (``MARK``)."""
    info = PngInfo()
    info.add_text(*MARK)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def written_here(path: Path) -> bool:
    """Whether ``path`` is a PNG written by this command (one that may be replaced)."""
    try:
        with Image.open(path) as im:
            return im.format == "PNG" and im.info.get(MARK[0]) == MARK[1]
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False


def inputs(path: Path) -> tuple[Path, list[Path]]:
    """(the folder outputs are named relative to, the input files) of a photo or a folder."""
    from bench.data.sources import list_images

    if path.is_file():
        return path.parent, [path]
    if path.is_dir():
        return path, list_images(path)
    raise UsageError(f"input {path} does not exist")


def output_names(root: Path, files: list[Path]) -> dict[Path, Path]:
    """Output path (relative, ``.png``) of each input: its relative path with the suffix replaced, or with
    ``.png`` appended where two inputs would collide (``a.jpg`` and ``a.png``).

    Raises:
        UsageError: two inputs would still share an output name (``a.jpg``, ``a.png`` and ``a.jpg.png``).
    """
    plain = {f: f.relative_to(root).with_suffix(".png") for f in files}
    counts: dict[Path, int] = {}
    for p in plain.values():
        counts[p] = counts.get(p, 0) + 1
    names = {f: p if counts[p] == 1 else Path(str(f.relative_to(root)) + ".png") for f, p in plain.items()}
    first: dict[Path, Path] = {}
    for f, p in names.items():
        if p in first:
            raise UsageError(f"inputs {first[p]} and {f} would both be written as {p}; rename one of them")
        first[p] = f
    return names


def check_outputs(root: Path, files: list[Path], out_dir: Path, targets: list[Path], folder_input: bool) -> None:
    """Refuse, before anything is written, an output that could replace an input or a file of the user's.

    Raises:
        UsageError: the output folder is, holds or lies in the input folder; a target is an input file; a target
            exists and was not written by this command.
    """
    out_r, root_r = out_dir.resolve(), root.resolve()
    if folder_input and (out_r == root_r or root_r in out_r.parents or out_r in root_r.parents):
        raise UsageError(f"output folder {out_dir} overlaps the input folder {root}: the colorized photos could "
                         f"replace or mix with the inputs; choose an output folder outside it")
    inputs_r = {f.resolve() for f in files}
    for t in targets:
        if t.resolve() in inputs_r:
            raise UsageError(f"output {t} would replace the input photo itself; choose another output folder")
        if (t.exists() or t.is_symlink()) and not written_here(t):
            raise UsageError(f"output {t} exists and was not written by colorize; move it away or choose another "
                             f"output folder")


def _terminated(signum, frame):
    raise cli.Interrupted("the photos colorized so far are complete; the one in progress was not written")


@cli.command
def main(argv=None) -> int:
    args = parse_args(argv)
    from tqdm.auto import tqdm

    from bench.core.device import pick_device
    from bench.data.sources import load_image
    from bench.training.checkpoint import load_weights
    from bench.training.loop import autocast_dtype

    with cli.usage_errors():
        run_dir = Path(args.run).expanduser()
        if not run_dir.is_dir():
            raise UsageError(f"run folder {run_dir} does not exist")
        chosen = pick_model(run_dir, args.cell, args.seed, args.model, args.fold)
        root, files = inputs(Path(args.input).expanduser())
        out_dir = Path(args.output).expanduser()
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"output {out_dir} exists and is not a folder")
        names = output_names(root, files)
        check_outputs(root, files, out_dir, [out_dir / names[f] for f in files], Path(args.input).expanduser().is_dir())
        check_writable(out_dir)
        device = pick_device(args.device)
        net, cfg, _ = load_weights(chosen.folder, device)
        if getattr(net, "needs_reference", False):
            raise UsageError(f"model {cfg.model} needs a colour reference image; bench.colorize handles "
                             f"reference-free models only")
    amp = autocast_dtype(cfg, device)
    fold = "" if chosen.fold is None else f" fold {chosen.fold}"
    log.info(f"{chosen.model}/{chosen.cell} seed {chosen.seed}{fold} ({chosen.folder}) → {out_dir}")
    written, skipped = 0, []
    before = signal.signal(signal.SIGTERM, _terminated)  # SIGTERM as Ctrl-C: the temporary file is removed
    try:
        for f in tqdm(files, desc="colorizing", unit="img", disable=args.no_progress, dynamic_ncols=True):
            try:
                rgb = load_image(f)
            except BAD_IMAGE as err:
                skipped.append(f)
                log.info(f"skipping {f}: unreadable ({type(err).__name__})")
                continue
            with cli.usage_errors(OSError):  # a full disk or a folder gone read-only: one line
                atomic_write_bytes(out_dir / names[f], png_bytes(colorize_photo(net, rgb, cfg.size, device, amp)))
            written += 1
    finally:
        signal.signal(signal.SIGTERM, before)
    log.info(f"{written} colorized image(s) in {out_dir}" + (f"; {len(skipped)} unreadable file(s) skipped"
                                                             if skipped else ""))
    if not written:
        raise UsageError(f"none of the {len(files)} input file(s) could be read")
    return 0


if __name__ == "__main__":
    sys.exit(main())
