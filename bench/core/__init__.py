"""The ground floor: what every stage stands on, importing nothing else of colorbench.

Modules:
    records: run records (environment, atomic CSV files, redaction of secrets, one-line write errors).
    paths: where results go, the one ``check_writable``, and where the package's own files are.
    device: which device, and mixed-precision autocast.
    startup: the checks made when ``bench`` is imported.
    limits: the upper bound of every numeric input.
    log: the ``colorbench`` logger, ``-v``/``-q`` and a run folder's log file.
    plugins: losses, models and metrics from entry points, ``--import`` and ``plugins:``.
    tracking: TensorBoard, MLflow and W&B behind one logger protocol (``--log``).
"""

__all__ = ["device", "limits", "log", "paths", "plugins", "records", "startup", "tracking"]
