"""Shared helpers for the scripts/ unit tests (run: /usr/bin/python3 -m unittest discover -s scripts/tests)."""
import contextlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.dirname(HERE)
REPO = os.path.dirname(SCRIPTS)
if SCRIPTS not in sys.path:
    sys.path.insert(0, SCRIPTS)

import torch  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@contextlib.contextmanager
def no_init():
    """Build big models quickly: skip parameter initialisation (memory stays untouched)."""
    classes = (nn.Linear, nn.Conv2d, nn.Embedding, nn.GroupNorm, nn.LayerNorm)
    saved = [c.reset_parameters for c in classes]
    for c in classes:
        c.reset_parameters = lambda self: None
    try:
        yield
    finally:
        for c, f in zip(classes, saved):
            c.reset_parameters = f


def max_diff(a, b) -> float:
    if isinstance(a, (tuple, list)):
        return max(max_diff(x, y) for x, y in zip(a, b))
    return (a.float() - b.float()).abs().max().item()
