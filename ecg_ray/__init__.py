"""ecg_ray: tune the CinC 2017 STFT-CNN-GRU rhythm classifier with Ray Tune + Ray Train."""

__version__ = "0.1.0"
