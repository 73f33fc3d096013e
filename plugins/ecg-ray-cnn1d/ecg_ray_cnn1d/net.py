"""The cnn1d network (imported by `build` only: it needs torch)."""

import torch
from torch import nn


def channels(width: int, depth: int) -> list[int]:
    """Output channels of each block: width, 2x, 4x, 8x, then 8x again."""
    return [width * 2 ** min(i, 3) for i in range(depth)]


class CNN1d(nn.Module):
    """(batch, samples) raw signal -> conv blocks -> global average -> dropout -> (batch, 4) logits.

    The first conv has stride 2; every block but the last max-pools by 4, so 9000 samples reach the last
    block as 70 steps at depth 4. `normalize: zscore` scales each record to mean 0, sd 1 first.
    """

    def __init__(self, width: int = 16, depth: int = 4, kernel_size: int = 7, dropout: float = 0.2,
                 normalize: str = "none"):
        super().__init__()
        self.normalize = normalize
        layers, c_in = [], 1
        for i, c_out in enumerate(channels(width, depth)):
            layers += [nn.Conv1d(c_in, c_out, kernel_size, stride=2 if i == 0 else 1, padding=kernel_size // 2),
                       nn.BatchNorm1d(c_out), nn.ReLU()]
            if i < depth - 1:
                layers.append(nn.MaxPool1d(4))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c_in, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize == "zscore":
            x = (x - x.mean(dim=1, keepdim=True)) / (x.std(dim=1, keepdim=True) + 1e-6)
        else:  # ADC units (1000 per mV): to millivolts, so the first conv starts at a sane scale
            x = x / 1000.0
        h = self.features(x.unsqueeze(1)).mean(dim=2)  # (batch, channels)
        return self.fc(self.dropout(h))
