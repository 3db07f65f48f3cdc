"""mutualctr: CTR prediction with deep mutual learning.

``import mutualctr as mc``: the Python API (:mod:`mutualctr.api`: ``mc.prepare``, ``mc.train``,
``mc.mutual``, ``mc.distill``, ``mc.ensemble``, ``mc.evaluate``, ``mc.churn``, ``mc.predict``, ``mc.load_run``,
``mc.export``, ``mc.synth``, ``mc.experiment``), its result types (:mod:`mutualctr.results`) and
configs (``mc.RunConfig``, ``mc.MutualConfig``). They are imported on first use, so that
``import mutualctr`` and ``mutualctr --help`` stay fast.
"""

__version__ = "0.1.0"

_API = ("synth", "prepare", "train", "evaluate", "predict", "mutual", "distill", "ensemble", "load_run",
        "export", "churn", "online_experiment", "experiment", "default_config", "load_config")
_RESULTS = ("Scores", "RunResult", "GroupResult", "EnsembleResult", "Predictions", "Churn",
            "StartMetrics", "GroupSettings", "GroupMean", "GroupChurn", "AlphaPoint", "MemberScores", "Evaluation",
            "VersionChurn", "Calibration", "GroupedAUC", "ReliabilityBin")
_CONFIGS = {"RunConfig": "mutualctr.training.config", "MutualConfig": "mutualctr.training.config",
            "TrainConfig": "mutualctr.training.config", "OptimConfig": "mutualctr.training.optim",
            "MutualCTRError": "mutualctr.errors", "ConfigError": "mutualctr.errors",
            "PrepareResult": "mutualctr.data.prepare",
            "PrepareSummary": "mutualctr.data.prepare", "RuntimeOptions": "mutualctr.runtime",
            "LoadedRun": "mutualctr.training.jobs"}

__all__ = ["__version__", *_API, *_RESULTS, *_CONFIGS]


def __getattr__(name: str):
    import importlib  # lazy: `import mutualctr` stays light; attributes load on first use

    if name in _API:
        return getattr(importlib.import_module("mutualctr.api"), name)
    if name in _RESULTS:
        return getattr(importlib.import_module("mutualctr.results"), name)
    if name in _CONFIGS:
        return getattr(importlib.import_module(_CONFIGS[name]), name)
    raise AttributeError(f"module 'mutualctr' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
