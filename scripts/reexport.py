#!/usr/bin/python3
"""Re-export components of an existing model directory with the current architecture definitions,
keeping their weights: for a directory whose diffusers source is gone (the built-in model, whose
weights were trained in Node), when the definitions gained a method (e.g. the U-Net's
forward_attention_control for prompt-to-prompt).

usage: /usr/bin/python3 scripts/reexport.py --model DIR [--components unet]
then:  npx tsx -e 'require("./lib").writeDirectoryChecksums("DIR")'   (its checksums.sha256)

Each component's weights are read from its TorchScript file (state_dict()), loaded strictly into the
module built from its config.json, and written back by export.py's export_module with the dtype and
fused-attention setting its torch_diffusion.json records; model_index.json's entry for the component
is updated and everything else in the directory is left as it is. Runs with PYTHONHASHSEED=0 so the
same definitions give byte-identical files.
"""
import argparse
import json
import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import export as exporter  # noqa: E402
from torch_diffusion_models import build_model, load_state_dict_strict  # noqa: E402


def reexport_component(model_dir: str, name: str) -> dict:
    folder = os.path.join(model_dir, name)
    meta = exporter.read_json(os.path.join(folder, "torch_diffusion.json"))
    config = exporter.read_json(os.path.join(folder, "config.json"))
    weights_file = os.path.join(folder, meta.get("file", "model.pt"))
    state_dict = torch.jit.load(weights_file, map_location="cpu").state_dict()
    class_name = meta.get("source_class", meta["class"])
    model = build_model(config, class_name, state_dict.keys())
    load_state_dict_strict(model, state_dict, class_name, sources=[weights_file])
    dtype = exporter.DTYPES[meta.get("dtype", "float32")]
    return exporter.export_module(model.eval(), class_name, config, folder, dtype, bool(meta.get("fused_attention")),
                                  meta.get("source_weights", ""))


def main(argv: Optional[List[str]] = None) -> int:
    if os.environ.get("PYTHONHASHSEED") != "0" and argv is None:
        # TorchScript's type-name mangling follows set/dict order: a fixed hash seed makes the files reproducible
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__)] + sys.argv[1:],
                  dict(os.environ, PYTHONHASHSEED="0"))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory (model_index.json + components)")
    parser.add_argument("--components", default="unet", help="comma-separated components (default: unet)")
    args = parser.parse_args(argv)
    index_path = os.path.join(args.model, "model_index.json")
    index = exporter.read_json(index_path)
    for name in [c.strip() for c in args.components.split(",") if c.strip()]:
        meta = reexport_component(args.model, name)
        index.setdefault("torch_diffusion", {}).setdefault("components", {})[name] = meta
        print(f"re-exported {name} ({meta['class']}): methods {', '.join(meta['methods'])}")
    exporter.write_json(index_path, index)
    print(f"now rewrite {os.path.join(args.model, 'checksums.sha256')} (writeDirectoryChecksums)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
