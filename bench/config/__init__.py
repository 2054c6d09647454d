"""What a run is asked to do: the cell configuration and presets, config files, named grids, parameters.

Imports ``bench.core``, ``bench.data``, ``models`` and ``losses``.

Modules:
    cell: ``CellConfig``, the presets and their validation.
    file: ``--config FILE.yaml``: preset overrides and grid definitions, its schema and JSON Schema.
    schema: the type rules of configuration values (pydantic v2) and their one-line errors.
    grids: the named ablation grids.
    params: the loss and model parameters the registries declare (tunable, shown).
    models_check: configuration checks that need the model code.
"""

__all__ = ["cell", "file", "grids", "models_check", "params", "schema"]
