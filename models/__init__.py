"""Model registry. Add a model family by dropping a file in this folder whose factories are decorated with
``@register_model("name")``; it is imported here automatically and tested by tests/test_models.py.

Every model takes ``L`` (``B×1×H×W``, Lab lightness in [0, 100]) and, if ``needs_reference``, a colour reference
``ref`` (``B×3×H×W`` RGB in [0, 1]); it returns its head's raw output, and ``to_ab`` turns that into ab. A model
with a reference may also set ``reference_view``: ``"same"`` (the default: during training the reference is another
crop/flip of the same photo) or ``"other"`` (a view of another photo); the trainer reads it from the built model.
"""
import importlib
import pkgutil

from .registry import (available, build, check_kinds, check_params, check_values, get_factory, parameters,
                       register_model, shown)

for _m in pkgutil.iter_modules(__path__):
    if _m.name not in ("registry",):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["register_model", "build", "available", "get_factory", "parameters", "check_params", "check_kinds",
           "check_values", "shown"]
