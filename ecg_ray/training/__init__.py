"""The training stage: plain PyTorch, one trial's model and epochs, the same on a laptop and in a Ray
Train worker. No Ray here (ecg_ray.tuning.worker calls it).

    model       the notebook's STFT-CNN-GRU (|stft| -> log1p -> 2 conv blocks -> GRU -> dropout -> linear)
    augment     the optional train-time augmentations (crops, scaling, noise), seeded
    loop        seeding and determinism, the weighted loss, epochs, metrics, self-describing checkpoints
"""
