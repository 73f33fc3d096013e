"""Data augmentation of training batches, on the trial's device, vectorised over the batch.

    python -c "from ecg_ray.training.augment import AUGMENTATIONS; print(AUGMENTATIONS)"

Each augmentation has a probability `aug_<name>_p` (per record) and a strength `aug_<name>`
(TrialConfig keys, searchable; both 0 by default: no augmentation, no random draw, the
notebook's numbers):

    scale    amplitude x U(1 - s, 1 + s)                                  (electrode contact, gain)
    noise    + N(0, (s * the record's sd)^2) per sample                     (muscle, mains noise)
    stretch  resampled by a rate U(1 - s, 1 + s): a faster or slower heart, as Zihlmann et al. 2017
    burst    one contiguous stretch of s x the length set to 0              (lost contact)
    wander   + s * sd * sin(2 pi f t + phi), f ~ U(0.05, 0.5) Hz, phi ~ U(0, 2 pi)  (breathing)

Draws come from the trial's own augmentation generator (seeded from the trial's seed, saved
in checkpoints), in a fixed order, so a resumed or re-run trial augments the same way, bit
for bit on CPU. Validation and test data are never augmented.
"""

from __future__ import annotations

import math

import torch

from ecg_ray.config import AUGMENTATIONS
AUGMENT_STREAM = 7919  # the augmentation generator's seed is the trial's seed plus this


def enabled(trial) -> bool:
    return any(getattr(trial, f"aug_{name}_p") > 0 and getattr(trial, f"aug_{name}") > 0 for name in AUGMENTATIONS)


def generator(trial, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(trial.seed + AUGMENT_STREAM)


def _uniform(n: int, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device)


def augment(x: torch.Tensor, trial, gen: torch.Generator, fs: int = 300) -> torch.Tensor:
    """A new (batch, samples) tensor: `x` with each enabled augmentation applied to a random share of records."""
    b, n = x.shape
    device = x.device
    out = x
    sd = x.std(dim=1, keepdim=True)
    for name in AUGMENTATIONS:
        p, s = getattr(trial, f"aug_{name}_p"), getattr(trial, f"aug_{name}")
        if not (p > 0 and s > 0):
            continue
        chosen = (_uniform(b, gen, device) < p)[:, None]
        if name == "scale":
            factor = 1 + (2 * _uniform(b, gen, device) - 1) * s
            changed = out * factor[:, None]
        elif name == "noise":
            changed = out + torch.randn(b, n, generator=gen, device=device, dtype=x.dtype) * (s * sd)
        elif name == "stretch":
            rate = 1 + (2 * _uniform(b, gen, device) - 1) * s
            pos = torch.arange(n, device=device, dtype=x.dtype)[None, :] * rate[:, None]
            lo = pos.floor().long()
            frac = pos - lo
            inside = lo < n - 1
            lo = lo.clamp(max=n - 2)
            val = out.gather(1, lo) * (1 - frac) + out.gather(1, lo + 1) * frac
            changed = torch.where(inside, val, torch.zeros_like(val))  # past the end: the zero padding
        elif name == "burst":
            length = max(1, round(s * n))
            start = (_uniform(b, gen, device) * (n - length + 1)).long().clamp(max=n - length)
            idx = torch.arange(n, device=device)[None, :]
            gap = (idx >= start[:, None]) & (idx < start[:, None] + length)
            changed = out.masked_fill(gap, 0.0)
        else:  # wander
            freq = 0.05 + 0.45 * _uniform(b, gen, device)
            phase = 2 * math.pi * _uniform(b, gen, device)
            t = torch.arange(n, device=device, dtype=x.dtype)[None, :] / fs
            changed = out + s * sd * torch.sin(2 * math.pi * freq[:, None] * t + phase[:, None])
        out = torch.where(chosen, changed, out)
    return out
