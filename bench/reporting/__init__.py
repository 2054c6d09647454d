"""What a run shows: leaderboards and their verdict, the report document, plots, samples, test-set tables.

Imports ``bench.core``, ``bench.data``, ``bench.metrics``, ``bench.config``, ``models`` and ``losses``.

Modules:
    leaderboard: cells ranked by a test metric, with paired statistics and the verdict.
    document: the report as blocks, rendered to Markdown and to one self-contained HTML page.
    plots: the report's figures.
    samples: sample colorizations and their labelled grid.
    testsets: one leaderboard per test set, and how the rankings agree.
"""

__all__ = ["document", "leaderboard", "plots", "samples", "testsets"]
