"""Checks made when ``bench`` is imported, before anything heavy: that ``models`` and ``losses`` are colorbench's
own packages (not another project's folder of the same name, e.g. under the current folder with ``python -m``),
and that an installed torchvision matches torch (colorbench itself does not import torchvision, but torchmetrics'
image metrics import an installed one, and so does torch-fidelity for FID: a broken one fails there). Each problem
is one line; started as a program (``colorbench ...``, ``python -m bench...``) it is printed as ``error: ...``
with exit code 2.

Imports nothing but the standard library (this runs on every ``--help``).
"""
from __future__ import annotations

import importlib.util
import re
import sys
from importlib import metadata
from pathlib import Path
from bench.core.paths import SOURCE_ROOT

ROOT = SOURCE_ROOT
#: colorbench's top-level packages besides ``bench``: found beside it, or another project's folder shadows them
SIBLINGS = ("models", "losses")
HOW_TO_RUN = "run the `colorbench` command (e.g. `colorbench ablate ...`) instead of `python -m bench...`"


def shadowed() -> str | None:
    """A line naming the first of ``models``/``losses`` that resolves to another folder than colorbench's own."""
    for name in SIBLINGS:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            continue
        where = spec.origin if spec.origin not in (None, "namespace") else next(iter(spec.submodule_search_locations
                                                                                     or []), None)
        if where is None:
            continue
        path = Path(where).resolve()
        own = ROOT / name
        if path != own and own not in path.parents:
            return (f"`{name}` resolves to {path.parent if path.name == '__init__.py' else path}, another project's "
                    f"`{name}`, not colorbench's ({own}); {HOW_TO_RUN}, or start it from another folder")
    return None


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0])[:2])


def torch_pair_problem(torch_version: str, vision_version: str, linux: bool = sys.platform.startswith("linux")
                       ) -> str | None:
    """A line when torch and torchvision are not a pair built for each other, else None.

    torch 2.N pairs with torchvision 0.(N+15) (2.5 ↔ 0.20, 2.14 ↔ 0.29); the builds must also agree on the
    accelerator tag (``+cpu`` against ``+cu124`` fails to load torchvision's operators, and so does a ``+cpu``
    torch with PyPI's untagged Linux torchvision, a CUDA build: measured with torch 2.13.0+cpu, torchvision 0.28.0).
    """
    t, v = _release(torch_version), _release(vision_version)
    tag_t, tag_v = (x.partition("+")[2] for x in (torch_version, vision_version))
    fix = ("colorbench does not need torchvision: pip uninstall torchvision, or install the pair together, e.g. "
           "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu (see the README's Quick "
           "start)")
    if len(t) == 2 and len(v) == 2 and t[0] == 2 and v[0] == 0 and v[1] != t[1] + 15:
        return (f"torch {torch_version} and torchvision {vision_version} do not match (torch 2.{t[1]} needs "
                f"torchvision 0.{t[1] + 15}); {fix}")
    if tag_t and tag_v and tag_t != tag_v:
        return f"torch {torch_version} and torchvision {vision_version} are different builds; {fix}"
    if linux and tag_t == "cpu" and not tag_v:  # PyPI's Linux torchvision is a CUDA build
        return (f"torch {torch_version} is a CPU build but torchvision {vision_version} is PyPI's CUDA build; "
                f"{fix}")
    return None


def torch_pair() -> str | None:
    """:func:`torch_pair_problem` for the installed distributions (None when either is not installed)."""
    try:
        return torch_pair_problem(metadata.version("torch"), metadata.version("torchvision"))
    except metadata.PackageNotFoundError:
        return None


def torchvision_problem(err: BaseException) -> str | None:
    """The one line for torchvision's "operator torchvision::nms does not exist" (a torch/torchvision mismatch
    met at import), else None."""
    text = str(err)
    if "torchvision::" not in text or "does not exist" not in text:
        return None
    try:
        versions = f" (torch {metadata.version('torch')}, torchvision {metadata.version('torchvision')})"
    except metadata.PackageNotFoundError:
        versions = ""
    return (f"torchvision cannot load its operators: it was not built for the installed torch{versions}; "
            f"colorbench does not need it (pip uninstall torchvision), or install the pair together (see the README's "
            f"Quick start)")


def check() -> None:
    """Refuse to go on with a shadowed package or a mismatched torch/torchvision: started as a program, print
    ``error: ...`` and exit 2; imported as a library, raise ``ImportError`` with the same line."""
    problem = shadowed() or torch_pair()
    if problem is None:
        return
    program = sys.argv[:1] == ["-m"] or Path(sys.argv[0] if sys.argv else "").name.startswith("colorbench")
    if program:
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    raise ImportError(problem)
