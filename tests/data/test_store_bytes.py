"""Stores stay byte-identical: the golden cases of ``store_cases.py`` hash as recorded.

``store_hashes.json`` was written from the prepare code before it was restructured as
fit/transform (issue 24), so this test fails if a refactoring (or a new field kind) changes a
single byte of a store of today's kinds: the split matrices, the labels, the vocabularies or the
feature map (fingerprints included). See ``store_cases.py`` for the cases and how to regenerate.
"""

from __future__ import annotations

import json
from pathlib import Path

from .store_cases import all_hashes

EXPECTED = Path(__file__).with_name("store_hashes.json")


def test_stores_byte_identical_to_recorded(tmp_path):
    want = json.loads(EXPECTED.read_text())["cases"]
    got = all_hashes(tmp_path)
    assert sorted(got) == sorted(want)
    differ = {case: sorted(set(want[case]) ^ set(got[case])
                           | {f for f in want[case] if got[case].get(f) != want[case][f]})
              for case in want}
    assert not any(differ.values()), f"stores differ from the recorded ones: {differ}"
    # every store has its feature map, 6 split files and one vocabulary per field
    for case, files in got.items():
        fm = json.loads((tmp_path / case / "feature_map.json").read_text())
        assert len(files) == 7 + fm["num_fields"], case
