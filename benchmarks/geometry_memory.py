"""Peak CPU memory of loading a saved model at another image size (ViT-B/16 classifier, 224 ->
384 px), each in a fresh child process (`memory.cpu_peak_bytes`):

- `from_pretrained`: loading at the saved geometry (the floor: one model);
- `two models`: what loading at another geometry did before `load_at_geometry`: load at the
  saved geometry, build a second, randomly initialised model at the new one, copy the adapted
  weights into it;
- `load_at_geometry`: the new model is built on the meta device and takes the loaded weights
  by assignment.

    PYTHONPATH=src python benchmarks/geometry_memory.py [--hidden 768 --layers 12]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from memory import cpu_peak_bytes  # noqa: E402

SETUP = "import torch\nfrom mim_hub import MAEForImageClassification\nfrom mim_hub.models.geometry import adapt_geometry\n"
JOBS = {
    "from_pretrained": "m = MAEForImageClassification.from_pretrained(PATH)",
    "two models": (
        "m = MAEForImageClassification.from_pretrained(PATH)\n"
        "config = type(m.config).from_dict({**m.config.to_dict(), 'image_size': SIZE})\n"
        "r = MAEForImageClassification(config)\n"
        "r.load_state_dict(adapt_geometry(m.state_dict(), r, old_model=m))\n"
        "del m"
    ),
    "load_at_geometry": "m = MAEForImageClassification.load_at_geometry(PATH, image_size=SIZE)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--size", type=int, default=384)
    args = parser.parse_args()
    from mim_hub import MAEConfig, MAEForImageClassification

    config = MAEConfig(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                       intermediate_size=4 * args.hidden, num_labels=1000)
    with tempfile.TemporaryDirectory() as folder:
        model = MAEForImageClassification(config)
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        model.save_pretrained(folder)
        del model
        results = {"weights_bytes": weights}
        for name, job in JOBS.items():
            code = job.replace("PATH", repr(folder)).replace("SIZE", str(args.size))
            results[name] = cpu_peak_bytes(code, setup=SETUP)
    results["two models / load_at_geometry"] = round(results["two models"] / results["load_at_geometry"], 2)
    results["load_at_geometry / from_pretrained"] = round(results["load_at_geometry"] / results["from_pretrained"], 2)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
