"""Run-time options: one typed object, checked when built, handed down whole from the CLI and
the API to the jobs and the trainer."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

import mutualctr as mc
from mutualctr.errors import ConfigError
from mutualctr.runtime import RuntimeOptions
from tests.conftest import tiny_config


@pytest.mark.parametrize("kw, message", [
    (dict(threads=-1), "threads must be an integer >= 0"),
    (dict(threads=1.5), "threads must be an integer >= 0"),
    (dict(device="tpu"), "train.device: expected one of 'auto' | 'cpu' | 'cuda', got 'tpu'"),
    (dict(precision="fp8"), "train.precision: expected one of 'fp32' | 'bf16' | 'auto', got 'fp8'"),
    (dict(dist_timeout=0), "dist_timeout must be a positive number of seconds, got 0"),
    (dict(dist_timeout=-3.0), "dist_timeout must be a positive number of seconds"),
    (dict(dist_timeout=math.nan), "dist_timeout must be a positive number of seconds, got nan"),
    (dict(quiet="yes"), "quiet: expected true/false"),
    (dict(compile=1), "compile: expected true/false"),
])
def test_bad_values_are_one_line_naming_the_option(kw, message):
    with pytest.raises(ConfigError) as e:
        RuntimeOptions(**kw)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_from_dict_rejects_unknown_keys_and_keeps_known_ones():
    with pytest.raises(ConfigError, match="unknown run-time option 'theads'"):
        RuntimeOptions.from_dict({"theads": 1})
    o = RuntimeOptions.from_dict({"threads": 2, "quiet": True, "tensorboard": "tb", "device": None})
    assert o == RuntimeOptions(threads=2, quiet=True, tensorboard="tb")
    assert RuntimeOptions.from_dict(o.to_dict()) == o
    with pytest.raises(Exception):
        o.threads = 3  # frozen


def test_api_takes_options_whole_or_as_keywords(tiny_store, tmp_path):
    before = torch.get_num_threads()
    try:
        r = mc.train(tiny_store, tmp_path / "r", config=tiny_config(epochs=1),
                     options=RuntimeOptions(device="cpu", quiet=True, threads=1))
        assert torch.get_num_threads() == 1  # the API follows its own --threads advice (issue 30)
        saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
        assert saved["train"]["device"] == "cpu"  # the run records what ran
        torch.set_num_threads(2)
        g = mc.mutual(tiny_store, tmp_path / "g", init=[r.run_dir, r.run_dir], alpha=0.5, epochs=1,
                      evals_per_epoch=1, threads=1, options=RuntimeOptions(precision="fp32"))
        assert torch.get_num_threads() == 1 and g.settings.alpha == 0.5
        member = yaml.safe_load((tmp_path / "g" / "m0-deepfm" / "config.yaml").read_text())
        assert member["train"]["precision"] == "fp32"
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match="train.device"):
        mc.train(tiny_store, tmp_path / "bad", config=tiny_config(epochs=1), device="tpu")
    assert not (tmp_path / "bad").exists()


def test_cli_builds_the_options_once_and_names_a_bad_flag(tiny_store, tmp_path):
    from typer.testing import CliRunner

    from mutualctr.cli import app

    res = CliRunner().invoke(app, ["train", "--data", str(tiny_store), "--model", "lr", "--epochs", "1",
                                   "--out", str(tmp_path / "r"), "--quiet", "--dist-timeout", "nan"])
    assert res.exit_code != 0 and "dist_timeout must be a positive number of seconds, got nan" in str(res.exception)
    assert not (tmp_path / "r").exists()
