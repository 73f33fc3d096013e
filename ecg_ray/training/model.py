"""The notebook's STFT -> CNN -> GRU rhythm classifier, layer for layer: the model `crnn` of the
registry (ecg_ray.models.build_model builds it from a trial's keys).

    python -c "from ecg_ray.training.model import ECGModel; print(ECGModel(256).num_parameters())"
"""

from __future__ import annotations

import torch
from torch import nn

from ecg_ray.labels import NUM_CLASSES

N_FFT = 256
HOP_LENGTH = 128


class ECGModel(nn.Module):
    """|STFT| -> log1p -> two conv blocks -> GRU over time -> dropout -> 4 logits.

    Args:
        hidden_size: GRU hidden size H (the notebook tried 128 and 256).
        dropout_rate: dropout applied to the GRU's last hidden state (and between GRU layers).
        gru_layers, bidirectional: the GRU's depth and direction (the notebook: 1, one way).
        conv_channels: channels of the first conv block; the second has twice as many (16, 32).
        n_fft, hop_length: the STFT's (256, 128).
        normalize: "zscore" scales each record to mean 0, sd 1 first; "none" (the notebook) does not.
        channels_last: run the conv blocks in channels-last memory layout: faster (about 2x per
            training step on a CPU), but the convolutions sum in another order, so the numbers
            differ from the notebook's in the last bits (an option that changes the numbers).
    The defaults build the notebook's modules in the notebook's order (so the same seed gives
    the same initial weights).

    Input: (batch, samples) float32 signals; 9000 samples give 129 x 71 STFT bins.
    Output: (batch, 4) logits for Normal, AF, Other, Noisy.
    """

    def __init__(self, hidden_size: int = 128, dropout_rate: float = 0.0, gru_layers: int = 1, bidirectional: bool = False,
                 conv_channels: int = 16, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH, normalize: str = "none",
                 channels_last: bool = False):
        super().__init__()
        self.hidden_size, self.n_fft, self.hop_length, self.normalize = hidden_size, n_fft, hop_length, normalize
        self.channels_last = channels_last
        c1, c2 = conv_channels, 2 * conv_channels  # the notebook's 16 then 32
        self.conv = nn.Sequential(
            nn.Conv2d(1, c1, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        # n_fft // 2 + 1 frequency bins pooled twice (the notebook's 129 -> 32); c2 channels x those bins per step.
        bins = (n_fft // 2 + 1) // 2 // 2
        self.gru = nn.GRU(input_size=c2 * bins, hidden_size=hidden_size, num_layers=gru_layers, batch_first=True,
                          bidirectional=bidirectional, dropout=dropout_rate if gru_layers > 1 else 0.0)
        self.directions = 2 if bidirectional else 1
        self.dropout = nn.Dropout(dropout_rate)
        self.fc = nn.Linear(self.directions * hidden_size, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize == "zscore":  # per record: gain and offset no longer matter
            x = (x - x.mean(dim=1, keepdim=True)) / (x.std(dim=1, keepdim=True) + 1e-6)
        # The notebook passed no window, i.e. a rectangular one; say so explicitly.
        window = torch.ones(self.n_fft, device=x.device, dtype=x.dtype)
        spec = torch.stft(x, n_fft=self.n_fft, hop_length=self.hop_length, window=window, return_complex=True)
        spec = torch.log1p(spec.abs()).unsqueeze(1)  # (batch, 1, 129, 71)
        feats = self.conv_blocks(spec)  # (batch, 32, 32, 17)
        b, c, f, t = feats.shape
        feats = feats.permute(0, 3, 1, 2).reshape(b, t, c * f)  # (batch, 17, 1024)
        _, h_n = self.gru(feats)  # h_n: (layers x directions, batch, H)
        last = h_n[-1] if self.directions == 1 else torch.cat([h_n[-2], h_n[-1]], dim=1)  # the top layer, both ways
        return self.fc(self.dropout(last))  # (batch, 4)

    def conv_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """self.conv (the notebook's Conv2d -> ReLU -> MaxPool2d, twice), computed faster with the
        same numbers, bit for bit: each block pools before its ReLU (ReLU is monotone, so it commutes
        with a max, and a window whose max is <= 0 passes no gradient either way), so the ReLU and its
        backward touch a quarter of the values; on a CPU the pooling reads a channels_last copy,
        where PyTorch's kernel is vectorised over channels (the same maxima and, for every window
        whose max is > 0, the same argmax: tests/test_model.py). Under `compile: true` it is the
        notebook's order: Inductor fuses and pools on its own (the copies made compiled code slower).
        With `channels_last` the whole stack runs in that layout instead (not bit for bit)."""
        conv1, relu1, pool1, conv2, relu2, pool2 = self.conv
        blocks = ((conv1, relu1, pool1), (conv2, relu2, pool2))
        if self.channels_last:  # the whole stack in that layout (the option that changes the numbers)
            x = x.contiguous(memory_format=torch.channels_last)
            for conv, relu, pool in blocks:
                x = relu(pool(conv(x)))
            return x.contiguous()
        if torch.compiler.is_compiling():  # Inductor fuses and pools on its own: the notebook's order
            return self.conv(x)
        for conv, relu, pool in blocks:
            x = conv(x)
            if x.device.type == "cpu":
                x = relu(pool(x.contiguous(memory_format=torch.channels_last))).contiguous()
            else:
                x = relu(pool(x))
        return x

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


class NotebookECGModel(ECGModel):
    """ECGModel with the notebook's conv blocks run as written (Conv2d -> ReLU -> MaxPool2d): the
    reference that ECGModel.conv_blocks is checked against (tests/test_train.py's parity test) and
    the model of the notebook's loop in benchmarks/speed.py."""

    def conv_blocks(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
