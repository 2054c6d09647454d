"""Running a grid: the plan of jobs, the engine that runs them through a shared Optuna study, the run folder.

Imports every stage below it. Only the ``python -m bench.*`` commands stand above it.

Modules:
    plan: the jobs (model × cell × seed × fold) and their configuration hash.
    engine: ``GridRun``: one grid run (its fields, its data), made of the two rooms below.
    binding: the run folder and the study (``FolderBinding``): check, bind, open, what is missing.
    trials: the trial loop (``TrialLoop``): baselines, claim, train, record, finish.
    jobrun: the training of one job and the untrained baselines, as rows.
    runfolder: ``identity.json``, ``run.json`` and the CSV files kept in step with the study.
    study: Optuna storages, and grids as studies shared by workers.
    tuned: tuned parameters (the tuning study's best) and how they change a configuration.
    workers: several local worker processes of one grid run.
    optuna_compat: the one place that reaches past Optuna's public API.
"""

__all__ = ["binding", "engine", "jobrun", "optuna_compat", "plan", "runfolder", "study", "trials", "tuned", "workers"]
