"""The command-line layer of every colorbench program (``colorbench <command>`` and ``python -m bench.<command>``).

One rule for all of them: a bad command line, configuration, data set or storage is reported as one line
``error: ...`` on stderr with exit code 2, before anything is trained or written; Ctrl-C ends with exit code 130
and a line saying what was kept. Options with the same name mean the same thing in every command (``ARGUMENTS``),
are never abbreviated (``--seed`` is not ``--seeds``), and there is one way from a command line to a ``CellConfig``
(``config_from_args``). This module imports no torch, Optuna or pandas: ``--help`` and ``--version`` stay fast,
and commands import them after parsing.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import errno
import re
import sys
from pathlib import Path
from typing import Callable

from bench.core.paths import SOURCE_ROOT
from bench.core.records import (
    TERMINAL_WIDTH, CorruptRecordError, colorbench_version, note_secrets, redact, write_error_message)
from bench.core.startup import torchvision_problem
from bench.core.tracking import BACKENDS

#: errno values of a full disk (or quota): reported in one line with exit code 2 wherever they happen
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


class UsageError(ValueError):
    """A bad command line or configuration: reported in one line with exit code 2, before any training."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with a line for the user about what was kept and how to resume."""

    def __init__(self, hint: str = ""):
        super().__init__(hint)
        self.hint = hint


#: Errors of the user's input (arguments, configuration, data, storage, records, folders) rather than of the code.
#: ``DataError``, ``StorageError`` and ``ReportError`` are ``ValueError``s.
INPUT_ERRORS = (ValueError, TypeError, OSError, CorruptRecordError)


@contextlib.contextmanager
def usage_errors(*types: type[BaseException]):
    """Turn the input errors raised inside the block into a ``UsageError`` (one line, exit 2).

    Wrap set-up phases only (parsing, planning, opening storage, reading data): an error while training is a bug
    or a fault and keeps its traceback.

    Args:
        types: the exception types to convert (default ``INPUT_ERRORS``).
    """
    try:
        yield
    except UsageError:
        raise
    except types or INPUT_ERRORS as err:
        raise UsageError(_one_line(err)) from None


def _one_line(err: BaseException) -> str:
    """The first line of an error's message, secrets redacted (``bench.core.records.redact``)."""
    text = str(err).strip()
    if isinstance(err, OSError) and err.errno in FULL_DISK:
        text = write_error_message(err)
    elif isinstance(err, OSError) and err.strerror:  # "[Errno 2] No such file ..." → "No such file ...: 'path'"
        text = f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    return redact(text.splitlines()[0] if text else type(err).__name__)


def arguments(argv: list[str] | None) -> list[str]:
    """A command's arguments: ``argv`` as given, or the process's own (``sys.argv[1:]``) when it is None."""
    return list(sys.argv[1:] if argv is None else argv)


def run(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Call a command's ``main(argv)`` under the exit-code rule: ``UsageError`` → ``error: ...`` and 2, Ctrl-C →
    130. Every program's ``main`` goes through here."""
    note_secrets(arguments(argv))  # a storage password never shows in what is printed
    try:
        return main(argv)
    except UsageError as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of stdout went away (``| head``): stop quietly, as a piped program does
        with contextlib.suppress(OSError):  # no second error when Python flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, the shell's code for a program the pipe stopped
    except OSError as err:
        if err.errno not in FULL_DISK:  # a full disk is the user's to fix; other I/O errors keep their traceback
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        problem = torchvision_problem(err)  # a torch/torchvision mismatch met at import
        if problem is None:
            raise
        print(f"error: {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        hint = getattr(err, "hint", "")
        print(f"\ninterrupted{': ' + hint if hint else ''}", file=sys.stderr)
        return 130


def command(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Decorator: ``main(argv)`` runs under ``run`` (exit-code rule)."""

    def wrapped(argv: list[str] | None = None) -> int:
        return run(main, argv)

    wrapped.__doc__, wrapped.__name__, wrapped.__wrapped__ = main.__doc__, main.__name__, main
    return wrapped


#: How the commands are started: ``python -m bench.<name>``, or ``colorbench <name>`` through the dispatcher.
INVOKED_AS = "python -m bench.{}"


def prog(name: str) -> str:
    """The program name of command ``name`` as the user typed it (``python -m bench.ablate``, ``colorbench
    ablate``): for --help, error messages and the command line recorded with results."""
    return INVOKED_AS.format(name)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the one-line error rule (``error: ...``, exit 2) instead of usage text and ``prog: error:``,
    and without abbreviations: ``--seed 3`` is an unknown option, not ``--seeds 3``."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def format_help(self) -> str:
        """The help, its examples and option texts in the README's spelling (``colorbench X``); the usage line
        keeps the name the command was started under."""
        usage, sep, rest = super().format_help().partition("\n\n")
        return usage + sep + re.sub(r"python -m bench\.(\w+)", r"colorbench \1", rest)

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")

    def parse_known_args(self, args=None, namespace=None):
        """Parse, after the options every command shares have taken effect (``early_options``): the logging level,
        the plugins of ``--import`` and of installed entry points, so that option values may name what they add."""
        args = arguments(args)
        if getattr(self, "shared_options", False):  # a command's parser (``parser``)
            early_options(args, self.prog)
        return super().parse_known_args(args, namespace)


def parser(name: str, doc: str | None) -> ArgumentParser:
    """The argument parser of command ``name`` (``ablate``, ``tune`` ...); the first paragraph of the module
    docstring is the description, the rest is shown after the options."""
    head, _, rest = (doc or "").partition("\n\n")
    p = ArgumentParser(prog=prog(name), description=head, epilog=rest or None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=version_line())
    add_shared_options(p)
    p.shared_options = True
    return p


def add_shared_options(p: argparse.ArgumentParser, exclusive: bool = True) -> None:
    """The options of every command, whatever it does: ``-v``/``-q`` (what stderr shows, ``bench.core.log``) and
    ``--import`` (plugins, ``bench.core.plugins``).

    Args:
        p: a command's parser.
        exclusive: refuse ``-v`` with ``-q`` (the parser that reads them early lets the last one win).
    """
    g = p.add_mutually_exclusive_group() if exclusive else p
    g.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1, default=0,
                   help="show debugging notes on stderr too")
    g.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1,
                   help="show only warnings and errors on stderr (results still go to stdout)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import a plugin that registers losses, models or metrics: a module name or a .py file "
                        "(repeatable; see the README's Plugins section)")


def early_options(argv: list[str], name: str = "colorbench") -> None:
    """Apply the shared options of a command line before it is parsed: ``-v``/``-q``, then the installed
    entry-point plugins and the ``--import`` ones (not for ``--help``/``--version``, which stay fast).

    Args:
        argv: the command's arguments.
        name: the command's program name (for errors).

    Raises:
        UsageError: a plugin that fails to load (one line naming it).
    """
    from bench.core import log
    from bench.core import plugins

    pre = ArgumentParser(prog=name, add_help=False)
    add_shared_options(pre, exclusive=False)
    known, _ = pre.parse_known_args([a for a in argv if a != "--"])
    log.set_verbosity(known.verbosity)
    if any(a in ("-h", "--help", "--version") for a in argv):
        return
    with usage_errors():
        plugins.load_all()
        plugins.import_all(known.imports)


def version_line() -> str:
    """``colorbench 0.1.0`` (with the git commit when the code runs from a checkout): ``--version``."""
    from bench.core.records import _commit_of

    commit = _commit_of(str(SOURCE_ROOT))
    return f"colorbench {colorbench_version()}" + (f" (git {commit})" if commit else "")


# ---------------------------------------------------------------------------------------------------------------------
# Shared options: one name, one meaning, in every command
# ---------------------------------------------------------------------------------------------------------------------

def _source_names(pattern: str, *files: Path) -> list[str]:
    """Names found by a regular expression in source files (read, not imported: ``--help`` imports no torch)."""
    names = []
    for f in files:
        try:
            names += re.findall(pattern, f.read_text(encoding="utf-8"), re.MULTILINE)
        except OSError:
            continue
    return list(dict.fromkeys(names))


ROOT = SOURCE_ROOT  # the checkout (or site-packages) that holds bench/, models/, losses/


def model_names() -> list[str]:
    """The registered models' names (``@register_model("name")`` in ``models/*.py``), read from the source: the same
    list as ``models.available()`` without importing torch."""
    return sorted(_source_names(r'^@register_model\(\s*"([^"]+)"', *sorted((ROOT / "models").glob("*.py"))))


def _models_help() -> str:
    found = model_names()
    return "models to train (default: the preset's" + (f"; available: {', '.join(found)})" if found else ")")


def preset_names() -> list[str]:
    """The presets' names (keys of ``bench.config.cell.PRESETS``), read from its source."""
    import ast

    try:
        tree = ast.parse((ROOT / "bench" / "config" / "cell.py").read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return []
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (node.targets[0] if isinstance(node, ast.Assign)
                                                                      else None)
        if isinstance(target, ast.Name) and target.id == "PRESETS" and isinstance(node.value, ast.Dict):
            return [k.value for k in node.value.keys if isinstance(k, ast.Constant)]
    return []


def finite_float(text: str) -> float:
    """``bench.config.cell.finite_float`` (imported when an option is parsed)."""
    from bench.config.cell import finite_float as check

    return check(text)


#: Upper bounds of the numeric options that are no configuration field (those are bounded by
#: ``bench.config.cell.CellConfig.validate``): each is named in its error, so that no value can hang a command.
from bench.core.limits import (  # noqa: E402,F401
    MAX_BATCH_SIZE, MAX_BOOT, MAX_CACHE_MB, MAX_FOLDS, MAX_HEARTBEAT, MAX_IMAGES, MAX_LOADER_WORKERS, MAX_SEED,
    MAX_SEEDS, MAX_STEPS, MAX_TIMINGS, MAX_TRIALS, MAX_WORKERS)


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high``, else an error that names both bounds.

    Args:
        low, high: the smallest and the largest value allowed.
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high} (the bound), got {value}")
        return value

    parse.__name__ = "whole number"
    return parse


def gpu_list(text: str) -> list[str]:
    """A ``--gpus`` value: comma-separated GPUs as ``CUDA_VISIBLE_DEVICES`` names them (indexes, ``GPU-<uuid>``,
    ``MIG-<uuid>``), at most ``MAX_WORKERS``."""
    gpus = [g.strip() for g in text.split(",")]
    bad = [g for g in gpus if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9:_/-]*", g)]
    if bad:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of GPUs (e.g. 0,1): {text!r}")
    if len(gpus) > MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"at most {MAX_WORKERS} GPUs (the bound), got {len(gpus)}")
    return gpus


def rank_by_metric(name: str) -> str:
    """A ``--rank-by`` value: any metric of the metric table (``bench.metrics.table``)."""
    from bench.metrics.table import METRICS

    if name not in METRICS:
        raise argparse.ArgumentTypeError(f"unknown metric {name!r} (one of {', '.join(METRICS)})")
    return name


def _rank_by_help() -> str:
    from bench.metrics.table import METRICS

    lower = [m.name for m in METRICS.values() if not m.higher_is_better]
    return (f"rank the leaderboard by this test metric: {', '.join(METRICS)} (default psnr; lower is better for "
            f"{', '.join(lower)})")


#: name → (option strings, argparse keywords). Commands add them with ``add(parser, name, ...)`` and may change the
#: default and help, never the meaning.
ARGUMENTS: dict[str, tuple[tuple[str, ...], dict]] = {
    "models": (("--models",), dict(nargs="+", default=None, metavar="MODEL", help=_models_help)),
    "preset": (("--preset",), dict(default=None, choices=sorted(preset_names()),
                                   help="quick (default without a GPU) or paper (default with one)")),
    "config": (("--config",), dict(default=None, metavar="FILE.yaml",
                                   help="configuration file: preset overrides and grid definitions (see README)")),
    "set": (("--set",), dict(action="append", default=[], metavar="KEY=VALUE",
                             help="override any CellConfig field, e.g. --set batch_size=8 (JSON values)")),
    "steps": (("--steps",), dict(type=int, default=None, help="training steps (default: the preset's)")),
    "lr": (("--lr",), dict(type=finite_float, default=None, help="learning rate (default: the preset's)")),
    "batch_size": (("--batch-size",), dict(type=int, default=None, help="images per step (default: the preset's)")),
    "size": (("--size",), dict(type=int, default=None,
                               help="images are resized so that their shorter side is SIZE (default: the preset's)")),
    "crop": (("--crop",), dict(type=int, default=None, help="side of the square training crops (default: the "
                                                            "preset's)")),
    "encoder_weights": (("--encoder-weights",), dict(default=None, help="none | imagenet | PATH (default: the "
                                                                        "preset's)")),
    "crop_seed": (("--crop-seed",), dict(type=int, default=None,
                                         help="seed of the fixed crops shared by all cells (default 0)")),
    "data": (("--data",), dict(default=None, help="training data: imagenet-sample | kodak24 | cbsd68 | a folder "
                                                  "(default: the bundled, downscaled Kodak24)")),
    "data_root": (("--data-root",), dict(default=None, help="folder with the named data sets (default: "
                                                             "$BENCH_DATA)")),
    "device": (("--device",), dict(default=None, help="cpu, cuda, cuda:1 ... (default: CUDA if available)")),
    "out": (("--out",), dict(default=None, help="output folder (default: under ./results or $COLORBENCH_RESULTS)")),
    "storage": (("--storage",), dict(default=None, metavar="URL",
                                     help="Optuna storage shared by the workers: a journal file path, sqlite:///FILE, "
                                          "postgresql+psycopg://USER@HOST/DB ... (default: <out>/study.journal)")),
    "study_name": (("--study-name",), dict(default=None, help="study name (default: derived from the "
                                                              "configuration)")),
    "heartbeat": (("--heartbeat",), dict(type=bounded_int(1, MAX_HEARTBEAT), default=30, metavar="SECONDS",
                                         help="heartbeat interval of a running trial; after 3× this without one it "
                                              "is retried (default 30)")),
    "workers": (("--workers",), dict(type=bounded_int(1, MAX_WORKERS), default=None, metavar="N",
                                     help="start N local worker processes of this command on its study, wait for "
                                          "them and print the leaderboard (logs in <out>/workers/)")),
    "gpus": (("--gpus",), dict(type=gpu_list, default=None, metavar="LIST",
                               help="one worker per listed GPU, e.g. 0,1 (its CUDA_VISIBLE_DEVICES); --workers "
                                    "defaults to their number")),
    "rank_by": (("--rank-by",), dict(default="psnr", metavar="METRIC", type=rank_by_metric,
                                     help=_rank_by_help)),
    "cache_mb": (("--cache-mb",), dict(type=bounded_int(0, MAX_CACHE_MB), default=None, metavar="MIB",
                                       help="RAM budget of the decoded training set: a larger set is streamed from "
                                            "disk by DataLoader workers (default: a quarter of the available memory)")),
    "loader_workers": (("--loader-workers",), dict(type=bounded_int(0, MAX_LOADER_WORKERS), default=None,
                                                   metavar="N", help="DataLoader workers that decode a streamed "
                                                                     "training set (default: cores − 1, at most 8)")),
    "no_verify": (("--no-verify",), dict(action="store_true", help="skip the SHA256 check of named data sets")),
    "no_progress": (("--no-progress",), dict(action="store_true", help="no progress bars")),
    "log": (("--log",), dict(action="extend", nargs="+", default=[], choices=list(BACKENDS), metavar="BACKEND",
                             help=f"track every training with these backends ({', '.join(BACKENDS)}; several "
                                  f"allowed, the option repeatable): loss, validation PSNR, test metrics, "
                                  f"hyper-parameters and sample images under the run folder (tb/, mlruns/, wandb/); "
                                  f"each is an extra: pip install colorbench[tensorboard]")),
}

#: The options that map one to one onto a ``CellConfig`` field (option name = field name).
CONFIG_OPTIONS = ("steps", "lr", "batch_size", "size", "crop", "encoder_weights", "crop_seed")


def add(p: argparse.ArgumentParser | argparse._ArgumentGroup, *names: str, aliases: tuple[str, ...] = (),
        **changes) -> None:
    """Add shared options to a parser (or group).

    Args:
        p: the parser.
        names: keys of ``ARGUMENTS``.
        aliases: more option strings for a single option (e.g. ``("--batch",)`` for ``batch_size``).
        changes: argparse keywords that replace the shared ones (``default=``, ``help=``).
    """
    for name in names:
        flags, kw = ARGUMENTS[name]
        kw = {**kw, **changes}
        if callable(kw.get("help")):
            kw["help"] = kw["help"]()
        p.add_argument(*flags, *aliases, dest=name, **kw)


def add_training_arguments(p: argparse.ArgumentParser, *extra: str) -> None:
    """The options of the programs that train cells (``bench.ablate``, ``bench.tune``): preset, config file,
    overrides, data, device, manifest check, progress bars and experiment tracking, plus ``extra`` shared
    options."""
    add(p, "preset", "config", "data", "data_root", "device", "steps", "batch_size", "size", "crop",
        "encoder_weights", "crop_seed", *extra, "set", "cache_mb", "loader_workers", "no_verify", "no_progress",
        "log")


def trackers(args: argparse.Namespace) -> tuple[str, ...]:
    """The ``--log`` backends of a command line, each checked to be installed (``bench.core.tracking.require``).

    Raises:
        UsageError: a backend that cannot be imported (the line names its extra); call it before any folder exists.
    """
    from bench.core.tracking import require

    with usage_errors():
        return require(getattr(args, "log", None))


def config_file(args: argparse.Namespace):
    """The ``--config`` file of a command line (``bench.config.file.ConfigFile``), read once; None without one.

    Raises:
        UsageError: unreadable file, bad YAML, unknown key or value.
    """
    if not getattr(args, "config", None):
        return None
    if getattr(args, "_config_file", None) is None:
        from bench.config import file as configfile

        with usage_errors():
            args._config_file = configfile.load(args.config)
    return args._config_file


def config_from_args(args: argparse.Namespace, device, **fixed):
    """The one way from a command line to the base ``CellConfig``.

    Applied in this order, each with ``bench.config.cell.merge`` (``loss_params``/``model_params`` merged key by key):
    the preset (``--preset``, else the ``--config`` file's ``preset:``, else ``paper`` on CUDA and ``quick``
    elsewhere), the config file's ``set:`` block, ``fixed`` (what the command decides, e.g. tune's ``--loss``),
    the options in ``CONFIG_OPTIONS``, and finally ``--set``.

    Returns:
        (configuration, preset name); not yet validated (``CellConfig.validate``).

    Raises:
        UsageError: unknown preset or key, a value of the wrong kind.
    """
    from bench.config.cell import default_preset, merge, parse_overrides, preset

    cf = config_file(args)
    with usage_errors():
        name = default_preset(getattr(args, "preset", None) or (cf.preset if cf else None), device)
        cfg = preset(name)
        flags = {k: getattr(args, k) for k in CONFIG_OPTIONS if getattr(args, k, None) is not None}
        for layer in (cf.changes if cf else {}, fixed, flags, parse_overrides(getattr(args, "set", []) or [])):
            cfg = merge(cfg, layer)
    return cfg, name


def pick_models(args: argparse.Namespace) -> list[str] | None:
    """``--models`` (or the deprecated ``--model`` of older tune command lines), None when not given."""
    alias = getattr(args, "model_alias", None)
    if alias:
        from bench.core.log import get_logger

        get_logger(__name__).warning("--model is deprecated; use --models")
        return [alias]
    return args.models


def out_dir(out: str | None):
    """``--out`` as a path (``~`` expanded), None when not given."""
    from pathlib import Path

    return Path(out).expanduser() if out else None


# ---------------------------------------------------------------------------------------------------------------------
# The ``colorbench`` console script
# ---------------------------------------------------------------------------------------------------------------------

def commands() -> dict[str, str]:
    """Command name → one-line description, for every module of the ``bench`` package that defines ``main``.

    Found by reading the modules' source (``ast``), not by importing them: ``colorbench --help`` stays fast and a
    module that fails to import breaks only its own command.
    """
    import ast

    found = {}
    for path in sorted(Path(__file__).parent.glob("*.py")):
        name = path.stem
        if name.startswith("_") or name == "cli":
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError):
            continue
        if any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body):
            found[name] = (ast.get_docstring(tree) or "").strip().split("\n\n")[0].replace("\n", " ")
    return found


def main(argv: list[str] | None = None) -> int:
    """``colorbench <command> [options]``: run ``bench.<command>.main`` with the options."""
    return run(_dispatch, argv)


def _dispatch(argv: list[str] | None = None) -> int:
    """The dispatcher's work: ``--version``, ``--config-schema``, the list of commands, or one command."""
    import textwrap

    global INVOKED_AS
    argv = arguments(argv)
    if argv[:1] == ["--version"]:
        print(version_line())
        return 0
    if argv[:1] == ["--config-schema"]:  # the JSON Schema of --config files, for editors
        import json

        from bench.config.file import json_schema

        print(json.dumps(json_schema(), indent=2, ensure_ascii=False))
        return 0
    found = commands()
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, found), default=0)
        print("usage: colorbench <command> [options]   (colorbench <command> --help for its options)\n"
              "       colorbench --version\n"
              "       colorbench --config-schema   (the JSON Schema of --config files, for editors)\n\ncommands:")
        for name, doc in found.items():
            print(textwrap.fill(doc, TERMINAL_WIDTH, initial_indent=f"  {name:<{width}}  ", subsequent_indent=" " * (width + 4)))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in found:
        print(f"error: unknown command {name!r}; available: {', '.join(found)}", file=sys.stderr)
        return 2
    import importlib

    before, INVOKED_AS = INVOKED_AS, "colorbench {}"
    try:
        module = importlib.import_module(f"bench.{name}")
    except RuntimeError as err:  # torchvision's operators missing: a torch/torchvision mismatch
        if torchvision_problem(err) is None:
            raise
        print(f"error: {torchvision_problem(err)}", file=sys.stderr)
        return 2
    try:
        return module.main(rest)
    finally:
        INVOKED_AS = before
