"""PyTorch side of scripts/bench/sampling-loop.ts: a worker that runs the same 50-step DDIM loop
with classifier-free guidance as our Node loop, on the same TorchScript U-Net (torch.jit.load of
the same unet/model.pt) and the same libtorch, with the DDIM update written by hand (python
floats for the scalars: the cheapest thing a Python user can write), and the small-op
`torch.add` timing.

Protocol: one JSON request per stdin line, one JSON answer per stdout line.
  {"cmd": "init", "threads"}                                       -> {"ready", "torch", "threads"}
  {"cmd": "model", "key", "path", "shape", "ctx", "pred", "alphas", "final", "timesteps", "scale"}
  {"cmd": "loop", "key"}                                           -> {"ms", "checksum"}
  {"cmd": "add", "batches", "n"}                                   -> {"ns": [per-op ns of each batch]}
"""
import json
import math
import sys
import time

import torch


def pattern(shape, freq, amp):
    n = 1
    for s in shape:
        n *= s
    return (torch.sin(torch.arange(n, dtype=torch.float32) * freq) * amp).reshape(shape)


def main():
    models = {}
    for line in sys.stdin:
        req = json.loads(line)
        cmd = req["cmd"]
        if cmd == "init":
            torch.set_num_threads(req["threads"])
            out = {"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads()}
        elif cmd == "model":
            unet = torch.jit.load(req["path"], map_location="cpu").eval()
            models[req["key"]] = dict(req, unet=unet, x=pattern(req["shape"], 0.01, 1.0), c=pattern(req["ctx"], 0.1, 0.5))
            out = {"ok": True}
        elif cmd == "loop":
            m = models[req["key"]]
            unet, alphas, final, ts, s, pred = m["unet"], m["alphas"], m["final"], m["timesteps"], m["scale"], m["pred"]
            ctx = m["c"]
            with torch.no_grad():
                start = time.perf_counter_ns()
                x = m["x"].clone()
                for i, t in enumerate(ts):
                    out_ = unet(torch.cat([x, x]), torch.tensor(t), ctx, None, None)
                    u, c = out_.chunk(2)
                    g = u + s * (c - u)
                    a = alphas[t]
                    prev = t - len(alphas) // len(ts)
                    ap = alphas[prev] if prev >= 0 else final
                    sa, sb = math.sqrt(a), math.sqrt(1 - a)
                    if pred == "epsilon":
                        x0 = (x - sb * g) / sa
                        eps = g
                    else:  # v_prediction
                        x0 = sa * x - sb * g
                        eps = sa * g + sb * x
                    x = x0 * math.sqrt(ap) + eps * math.sqrt(1 - ap)
                ms = (time.perf_counter_ns() - start) / 1e6
            out = {"ms": ms, "checksum": float(x.abs().sum())}
        elif cmd == "add":
            a = torch.rand(16)
            b = torch.rand(16)
            n = req["n"]
            ns = []
            for _ in range(req["batches"]):
                start = time.perf_counter_ns()
                for _ in range(n):
                    torch.add(a, b)
                ns.append((time.perf_counter_ns() - start) / n)
            out = {"ns": ns}
        else:
            out = {"error": f"unknown cmd {cmd}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
