"""RQ1-RQ4 orchestration, result tables, statistics, plots and the demo."""

from mutualctr.experiments.runner import QUESTIONS, run_experiment  # noqa: F401

__all__ = ["run_experiment", "QUESTIONS"]
