"""Where each field of a batch with list or dense fields comes from (issue 25).

A store of one-id fields gives the models an ids tensor ``(B, F)``: field ``f`` is column ``f``.
A store with multi-valued, sequence or dense fields gives a batch (``mutualctr.data.loader.Batch``:
``ids (B, n_id)``, ``bags`` {name: (B, L) padded with 0}, ``lengths``, ``values (B, n_dense)``,
``missing (B, n_dense)``). :class:`FieldLayout` says, in field order, which of them each field
reads; the embedding tables (:meth:`mutualctr.models.FeatureEmbedding.fields`) turn the batch
into the same ``(B, F, D)`` every model reads. The models never import the data layer: a batch
is read by its attributes, and a layout is built from any objects with ``name``, ``kind``,
``offset`` and ``spec`` (a store's ``FieldInfo``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

ID, BAG, DENSE = "id", "bag", "dense"
_BAG_KINDS = ("multi-valued", "sequence")  # the store's kind names (mutualctr.data.schema)
_DENSE_KIND = "dense"


@dataclass(frozen=True)
class FieldLayout:
    """Per field, in field order: where its embedding comes from.

    ``roles[f]``: ``"id"`` (the next column of ``batch.ids``), ``"bag"`` (the next list field of
    ``batch.bags``, pooled) or ``"dense"`` (the next column of ``batch.values``). ``names[f]``
    the field's name; ``pooling[f]`` ``"mean"`` or ``"sum"`` for a bag (a sequence pools by
    mean), else None; ``dense_rows[k]`` the global id of dense field ``k``'s value row (its
    missing row is the next one).
    """

    roles: tuple[str, ...]
    names: tuple[str, ...]
    pooling: tuple[str | None, ...]
    dense_rows: tuple[int, ...]

    @classmethod
    def from_fields(cls, fields: Sequence[Any]) -> "FieldLayout | None":
        """The layout of a store's fields (``feature_map.fields``); None when every field is a
        one-id field (the models then read the ``(B, F)`` ids tensor as before)."""
        roles = tuple(BAG if f.kind in _BAG_KINDS else DENSE if f.kind == _DENSE_KIND else ID
                      for f in fields)
        if all(r == ID for r in roles):
            return None
        pooling = tuple((f.spec or {}).get("pooling", "mean") if r == BAG else None
                        for f, r in zip(fields, roles))
        dense = tuple(int(f.offset) for f, r in zip(fields, roles) if r == DENSE)
        return cls(roles, tuple(f.name for f in fields), pooling, dense)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "FieldLayout | None":
        if d is None:
            return None
        return cls(tuple(d["roles"]), tuple(d["names"]), tuple(d["pooling"]), tuple(d["dense_rows"]))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) for k, v in asdict(self).items()}

    @property
    def bags(self) -> list[str]:
        """The list fields' names, in field order (the order of ``batch.bags``)."""
        return [n for n, r in zip(self.names, self.roles) if r == BAG]

    def order(self) -> torch.Tensor:
        """For each field (in field order) its position among [id fields, bags, dense fields]."""
        grouped = [f for role in (ID, BAG, DENSE) for f, r in enumerate(self.roles) if r == role]
        out = torch.empty(len(grouped), dtype=torch.long)
        out[torch.tensor(grouped, dtype=torch.long)] = torch.arange(len(grouped))
        return out


def lookup_ids(batch, layout: FieldLayout) -> torch.Tensor:
    """Every id a batch looks up, ``(B, n_id + sum L + n_dense)``: its one-id columns, each list
    field's padded items (layout order), each dense field's value or missing row. Built once per
    batch (kept in ``batch.memo``), so every table and every member of a group look up the very
    same tensor and share one :class:`~mutualctr.models.embedding.RowCache` answer."""
    key = ("lookup_ids", layout.dense_rows, tuple(layout.bags))
    got = batch.memo.get(key)
    if got is None:
        parts = [batch.ids] + [batch.bags[n] for n in layout.bags]
        if layout.dense_rows:
            rows = torch.tensor(layout.dense_rows, dtype=torch.long, device=batch.ids.device)
            parts.append(rows + batch.missing.long())
        got = batch.memo[key] = torch.cat(parts, dim=1)
    return got
