"""Example user models for mutualctr: ``pip install -e examples/mutualctr_plugins``, then
``mutualctr train --model plugin-mlp ...`` or ``--models deepfm,plugin-din`` (entry points), or
``--model mutualctr_plugins.mlp:MLP`` / ``mutualctr_plugins.din:DIN`` (import strings, no install
needed with the folder on PYTHONPATH). ``din``: a DIN target attention over a behaviour sequence
(a store with one, e.g. ``mutualctr prepare --dataset ml100k``); ``mlp``: a minimal MLP."""
