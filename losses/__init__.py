"""Loss registry. Add a loss by dropping a file in this folder that defines a class decorated with
``@register_loss("name")``; it is imported here automatically and tested by tests/test_losses.py."""
import importlib
import pkgutil

from .registry import (CompositeLoss, Tunable, all_tunables, available, build, check_params, check_values, get_class, head_of,
                       parameters, parse_spec, positive, prior_bins, register_loss, shown, takes, tunables)

for _m in pkgutil.iter_modules(__path__):
    if _m.name not in ("registry", "base"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["register_loss", "build", "available", "get_class", "head_of", "parse_spec", "CompositeLoss",
           "parameters", "check_params", "check_values", "takes", "Tunable", "tunables", "all_tunables", "shown", "positive",
           "prior_bins"]
