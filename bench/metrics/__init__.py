"""Scores and statistics: the metric table, the metrics themselves, paired tests and intervals, known answers.

Imports ``bench.core``, ``bench.data``, ``models`` and ``losses``.

Modules:
    table: every test metric declared once (name, direction, network, display).
    compute: colorize held-out images and score them.
    stats: sign-flip tests, Holm adjustment, two-level bootstrap intervals, cell comparisons.
    knownanswers: whether a network learned more than a tint, and the Bayes-optimal answers of the controls.
"""

__all__ = ["compute", "knownanswers", "stats", "table"]
