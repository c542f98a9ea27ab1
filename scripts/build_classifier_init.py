#!/usr/bin/python3
"""The benchmark classifier's starting point: a small seeded CNN for 1x32x32 Fashion-MNIST
images in [-1, 1] (three conv blocks, global average pool, a 64-d feature layer, a linear
head to 10 classes), TorchScript-scripted with two methods:

  forward(x)  -> logits    (B, 10)
  features(x) -> features  (B, 64), the input of the head (used for the Frechet distance)

scripts/train-classifier.ts trains it in Node; scripts/bench/builtin-quality.ts uses it.

  /usr/bin/python3 scripts/build_classifier_init.py [--out build/classifier-init.pt] [--seed 0]
"""
import argparse
import os
import sys
from typing import Optional

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
FEATURES = 64
NUM_CLASSES = 10


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """3x3 conv -> BatchNorm -> ReLU -> 2x2 max pool (halves H and W)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))


class FashionClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(conv_block(1, 16), conv_block(16, 32), conv_block(32, 64))
        self.embed = nn.Linear(64, FEATURES)
        self.head = nn.Linear(FEATURES, NUM_CLASSES)

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(x)  # (B, 64, 4, 4)
        h = h.mean(dim=(2, 3))  # (B, 64)
        return torch.relu(self.embed(h))  # (B, FEATURES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, NUM_CLASSES)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "build", "classifier-init.pt"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    model = FashionClassifier().eval()
    scripted = torch.jit.script(model)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert scripted(x).shape == (2, NUM_CLASSES) and scripted.features(x).shape == (2, FEATURES)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    scripted.save(args.out)
    params = sum(p.numel() for p in model.parameters())
    print(f"classifier init: {params / 1e3:.1f}k parameters -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
