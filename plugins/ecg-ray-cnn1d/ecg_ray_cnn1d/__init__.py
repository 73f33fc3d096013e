"""cnn1d: a compact 1-D CNN on the raw signal, declared for ecg_ray's model registry.

    search:
      model: cnn1d
      model_args: {width: 16, depth: 4, kernel_size: 7}

The declaration imports no torch (reading an experiment file stays light); `build` does.
"""

from ecg_ray.config.constraints import Interval, Rule
from ecg_ray.models import Hyperparameter, ModelSpec


def build(args: dict):
    from ecg_ray_cnn1d.net import CNN1d

    return CNN1d(width=args["width"], depth=args["depth"], kernel_size=args["kernel_size"], dropout=args["dropout"],
                 normalize=args["normalize"])


def memory(args: dict, samples: int) -> tuple[int, float]:
    """Parameters, and bytes of activations per record: each block's conv, norm and ReLU outputs, pooled."""
    from ecg_ray_cnn1d.net import channels

    params, floats, length, c_in = 0, 0.0, samples // 2, 1
    for i, c_out in enumerate(channels(args["width"], args["depth"])):
        params += c_in * c_out * args["kernel_size"] + c_out + 2 * c_out
        floats += 3 * c_out * length
        length //= 4 if i < args["depth"] - 1 else 1
        c_in = c_out
    return params + (c_in + 1) * 4, 4.0 * (samples + floats)


MODEL = ModelSpec(
    name="cnn1d",
    build=build,
    about="a compact 1-D CNN on the raw signal: conv blocks (conv, batch norm, ReLU, max-pool 4), global average, "
          "dropout, linear",
    reads=("dropout", "normalize"),
    hyperparameters={
        "width": Hyperparameter(16, Interval(int, 4, 256), "channels of the first block; each next block doubles them, up to 8x"),
        "depth": Hyperparameter(4, Interval(int, 1, 6), "conv blocks"),
        "kernel_size": Hyperparameter(7, Rule("an odd int in [3, 31]", lambda v: isinstance(v, int) and not isinstance(v, bool)
                                              and 3 <= v <= 31 and v % 2 == 1, invalid=4), "of every conv"),
    },
    memory=memory,
)
