"""A model of a store loaded onto a descendant store whose vocabularies grew (``prepare --grow``).

Growing keeps each field's local ids and lays the fields out again from the same start, so the
rows of field ``f`` move from ``offset_old(f) + l`` to ``offset_new(f) + l`` (``l`` < the old
vocabulary size), and the rows of the new values follow them. Every parameter whose first
dimension is the old store's number of features (the embedding tables, first-order weights) is
re-laid out: old rows copied exactly; the new rows either as a freshly initialised model of the
grown store has them (``new_rows="fresh"``: a warm start, ``train --init``, ``mutual --init``) or
as copies of their field's OOV row (``new_rows="oov"``: scoring, ``evaluate``, ``predict``,
``export``, ``churn``: a value the run never saw is scored as the run scores every unseen value,
so the grown model's prediction of any row equals the run's on the same raw row encoded in its
own store). The other parameters are copied unchanged. Optimiser state is never carried over (a
loaded run starts a fresh optimiser), so the new rows' state is fresh too.
"""

from __future__ import annotations

import torch


NEW_ROWS = ("fresh", "oov")


def grow_tables(state: dict[str, torch.Tensor], fresh: dict[str, torch.Tensor], old_layout: list[list[int]],
                new_layout: list[list[int]], new_rows: str = "fresh") -> dict[str, torch.Tensor]:
    """``state`` (of a model of the old layout) laid out as ``fresh`` (a model of the new one);
    the rows of new values as ``fresh`` has them, or (``new_rows="oov"``) their field's OOV row."""
    if new_rows not in NEW_ROWS:
        raise ValueError(f"new_rows: expected one of {', '.join(NEW_ROWS)}, got {new_rows!r}")
    old_n = max(o + n for o, n in old_layout)
    new_n = max(o + n for o, n in new_layout)
    out = {}
    for name, value in state.items():
        target = fresh[name]
        if value.dim() >= 1 and value.shape[0] == old_n and target.shape[0] == new_n and target.shape[1:] == value.shape[1:]:
            grown = target.detach().clone()
            for (o_old, n_old), (o_new, n_new) in zip(old_layout, new_layout):
                if n_new < n_old:
                    raise ValueError(f"a field shrank from {n_old} to {n_new} rows: not a grown store")
                grown[o_new:o_new + n_old] = value[o_old:o_old + n_old]
                if new_rows == "oov" and n_new > n_old:
                    grown[o_new + n_old:o_new + n_new] = value[o_old]  # local id 0: the field's OOV row
            out[name] = grown
        else:
            out[name] = value
    return out


def grown_model(model: torch.nn.Module, fresh: torch.nn.Module, old_layout: list[list[int]],
                new_layout: list[list[int]], new_rows: str = "fresh") -> torch.nn.Module:
    """``fresh`` (a new model of the grown store) holding ``model``'s weights at their new rows."""
    fresh.load_state_dict(grow_tables(model.state_dict(), fresh.state_dict(), old_layout, new_layout, new_rows))
    return fresh
