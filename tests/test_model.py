import pytest
import torch

from ecg_ray.model import ECGModel


@pytest.mark.parametrize("hidden, expected", [(256, 990_404), (128, 448_452)])
def test_parameter_count_matches_notebook(hidden, expected):
    assert ECGModel(hidden_size=hidden).num_parameters() == expected


def test_layers_are_the_notebooks():
    m = ECGModel(hidden_size=128, dropout_rate=0.0)
    convs = [l for l in m.conv if isinstance(l, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 16, (3, 3), (1, 1)),
        (16, 32, (3, 3), (1, 1)),
    ]
    assert sum(isinstance(l, torch.nn.MaxPool2d) for l in m.conv) == 2
    assert (m.gru.input_size, m.gru.hidden_size, m.gru.batch_first) == (1024, 128, True)
    assert (m.fc.in_features, m.fc.out_features) == (128, 4)


@pytest.mark.parametrize("batch", [1, 5])
def test_output_shape(batch):
    out = ECGModel(hidden_size=128)(torch.randn(batch, 9000))
    assert out.shape == (batch, 4)
    assert torch.isfinite(out).all()


def test_gru_sees_17_steps_of_1024_features():
    m = ECGModel(hidden_size=16)
    seen = {}

    def hook(module, inputs, output):
        seen["shape"] = inputs[0].shape

    m.gru.register_forward_hook(hook)
    m(torch.randn(2, 9000))
    assert seen["shape"] == (2, 17, 1024)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    m = ECGModel(hidden_size=32, dropout_rate=0.5)
    x = torch.randn(4, 9000)
    m.eval()
    assert torch.equal(m(x), m(x))
    m.train()
    assert not torch.equal(m(x), m(x))
