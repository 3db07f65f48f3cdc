"""Example user models for mutualctr: ``pip install -e examples/mutualctr_plugins``, then
``mutualctr train --model plugin-mlp ...`` (entry point) or
``--model mutualctr_plugins.mlp:MLP`` (import string, no install needed on PYTHONPATH)."""
