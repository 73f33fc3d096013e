"""The notebook's STFT -> CNN -> GRU rhythm classifier, layer for layer.

    python -c "from ecg_ray.model import ECGModel; print(ECGModel(256).num_parameters())"
"""

from __future__ import annotations

import torch
from torch import nn

from ecg_ray.schema import NUM_CLASSES

N_FFT = 256
HOP_LENGTH = 128


class ECGModel(nn.Module):
    """|STFT| -> log1p -> two conv blocks -> GRU over time -> dropout -> 4 logits.

    Args:
        hidden_size: GRU hidden size H (the notebook tried 128 and 256).
        dropout_rate: dropout applied to the GRU's last hidden state.

    Input: (batch, samples) float32 signals; 9000 samples give 129 x 71 STFT bins.
    Output: (batch, 4) logits for Normal, AF, Other, Noisy.
    """

    def __init__(self, hidden_size: int = 128, dropout_rate: float = 0.0):
        super().__init__()
        self.hidden_size = hidden_size
        self.conv = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        # 129 frequency bins pooled twice -> 32; 32 channels x 32 bins per time step.
        self.gru = nn.GRU(input_size=32 * 32, hidden_size=hidden_size, batch_first=True)
        self.dropout = nn.Dropout(dropout_rate)
        self.fc = nn.Linear(hidden_size, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The notebook passed no window, i.e. a rectangular one; say so explicitly.
        window = torch.ones(N_FFT, device=x.device, dtype=x.dtype)
        spec = torch.stft(x, n_fft=N_FFT, hop_length=HOP_LENGTH, window=window, return_complex=True)
        spec = torch.log1p(spec.abs()).unsqueeze(1)  # (batch, 1, 129, 71)
        feats = self.conv(spec)  # (batch, 32, 32, 17)
        b, c, f, t = feats.shape
        feats = feats.permute(0, 3, 1, 2).reshape(b, t, c * f)  # (batch, 17, 1024)
        _, h_n = self.gru(feats)  # h_n: (1, batch, H)
        return self.fc(self.dropout(h_n[-1]))  # (batch, 4)

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
