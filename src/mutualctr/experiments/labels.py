"""Display names shared by the tables (:mod:`.report`) and the plots (:mod:`.plots`)."""

LABELS = {"deepfm": "DeepFM", "dcn": "DCN", "pnn": "PNN", "fibinet": "FiBiNET", "dcnv2": "DCNv2",
          "fm": "FM", "lr": "LR"}
