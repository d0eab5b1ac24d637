"""Explain fixed images with every precision plan a bundle ships, and write the outputs as JSON.

``tests/test_pi.py`` runs this file twice on the same model files: in the emulated Pi with the
installed release's Python (arm64 LiteRT), and on the host (x86-64 LiteRT), then compares the
two plan by plan. It needs only numpy and edgecam's device side, as on a Pi (no pytest, no
TensorFlow), so it imports nothing from ``tests``::

    python plan_outputs.py RELEASE IMAGES.npy OUT.json

``IMAGES.npy`` is ``(N, H, W, 3)`` uint8 RGB: the same arrays on both machines, so no image
decoder takes part in the comparison. ``OUT.json``: ``{"machine", "tensorflow" (imported?),
"plans": {plan: {"file", "quantization", "class_index", "probabilities", "cam", "cams"}}}``, with
the raw maps (ReLU'd, not normalised) at feature-map resolution: ``cam`` of the predicted class and
``cams`` of every class (``explain(image, class_index=k)``), so classes the images do not predict
are compared too.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path


def main(argv) -> int:
    import numpy as np

    from firmware_host.model import ExplainableModel
    from firmware_host.plans import read_plans

    root, images, out = (Path(a) for a in argv)
    x = np.load(images)
    table = read_plans(root)
    if table is None:
        print(f"{root} ships no plans.json", file=sys.stderr)
        return 2
    plans = {}
    for row in table["shipped"]:
        model = ExplainableModel(root / row["file"])
        exps = [model.explain(image) for image in x]
        classes = range(len(model.metadata.classes))
        cams = [[np.asarray(model.explain(image, class_index=k).cam, float).tolist() for k in classes] for image in x]
        plans[row["plan"]] = {
            "file": row["file"],
            "quantization": model.metadata.quantization,
            "class_index": [int(e.class_index) for e in exps],
            "probabilities": [np.asarray(e.probabilities, float).tolist() for e in exps],
            "cam": [np.asarray(e.cam, float).tolist() for e in exps],
            "cams": cams,
        }
    record = {"machine": platform.machine(), "tensorflow": "tensorflow" in sys.modules, "plans": plans}
    out.write_text(json.dumps(record), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
