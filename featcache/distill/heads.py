"""The forward projector (student stage -> teacher channels) and the return decoder (back).

Two kinds, chosen by distill.projector:
- "conv3x3", the paper's: Conv3x3-BN-ReLU-Conv1x1 forward, mirrored back.
- "separable" (default): a depthwise 3x3, BN-ReLU, then a 1x1 to the teacher's channels (the
  MobileNet separable block: the paper's 3x3 view at a fraction of the multiply-adds); back, its
  mirror: a 1x1 to the student's channels, BN-ReLU, then a depthwise 3x3.

Both projectors end in a linear 1x1 from a hidden map, and the separable return decoder starts
with a 1x1: applied to the projection, the two compose into one 1x1 on the hidden map. The return
decoder runs that product, which is the same function with the same gradients and, for 108
student channels against 256 teacher channels, 2.4x fewer multiply-adds in its first layer.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Projector(nn.Module):
    """(B, cin, h, w) -> projection (B, cout, h, w), and the hidden map its last 1x1 reads."""

    def __init__(self, cin: int, cout: int, kind: str) -> None:
        super().__init__()
        if kind == "conv3x3":
            self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
            hidden = cout
        else:
            self.body = nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
                                      nn.BatchNorm2d(cin), nn.ReLU(inplace=True))
            hidden = cin
        self.out = nn.Conv2d(hidden, cout, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.body(x)
        return self.out(hidden), hidden


class ReturnDecoder(nn.Module):
    """Teacher space (B, ct, h, w) -> the student stage (B, cs, h, w)."""

    def __init__(self, ct: int, cs: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        if kind == "conv3x3":
            self.first = nn.Conv2d(ct, cs, 3, padding=1, bias=False)
            self.rest = nn.Sequential(nn.BatchNorm2d(cs), nn.ReLU(inplace=True), nn.Conv2d(cs, cs, 1))
        else:
            self.first = nn.Conv2d(ct, cs, 1, bias=False)
            self.rest = nn.Sequential(nn.BatchNorm2d(cs), nn.ReLU(inplace=True),
                                      nn.Conv2d(cs, cs, 3, padding=1, groups=cs))

    def forward(self, projection: torch.Tensor, hidden: torch.Tensor, projector: Projector) -> torch.Tensor:
        """projection = projector.out(hidden); the separable first 1x1 composes with that one."""
        if self.kind == "conv3x3":
            return self.rest(self.first(projection))
        first = self.first.weight.flatten(1)  # (cs, ct)
        weight = first @ projector.out.weight.flatten(1)  # (cs, hidden)
        bias = first @ projector.out.bias
        return self.rest(F.conv2d(hidden, weight[:, :, None, None], bias))
