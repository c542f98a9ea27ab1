"""PyTorch side of scripts/bench/schedulers.ts: a worker that times scale_model_input + step of
the float32 reimplementation of diffusers' schedulers (scripts/fixtures/scheduler_refs_*.py).

Protocol: the first stdin line is {"shape", "threads"}; each further line is one case
{"config", "steps", "kwargs"}, answered with one line {"us": µs per step of one full loop}.
The TS benchmark interleaves these loops with its own so both run under the same machine load.
"""
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from scheduler_refs import CLASSES  # noqa: E402


def main():
    init = json.loads(sys.stdin.readline())
    torch.set_num_threads(init["threads"])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(init["shape"], generator=g)
    mo = torch.randn(init["shape"], generator=g) * 0.1
    noise_fn = lambda shp: torch.randn(tuple(shp), generator=g)  # noqa: E731
    print(json.dumps({"ready": True}), flush=True)
    with torch.no_grad():
        for line in sys.stdin:
            case = json.loads(line)
            cfg = dict(case["config"])
            cls = CLASSES[cfg.pop("_class_name")]
            s = cls(dict(cls.defaults, **cfg))
            s.set_timesteps(case["steps"])
            kwargs = case.get("kwargs") or {}
            start = time.perf_counter_ns()
            for t in s.timesteps:
                s.scale_model_input(x, t)
                s.step(mo, t, x, noise_fn, **kwargs)
            print(json.dumps({"us": (time.perf_counter_ns() - start) / 1e3 / len(s.timesteps)}), flush=True)


if __name__ == "__main__":
    main()
