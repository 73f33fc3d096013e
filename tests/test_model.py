import pytest
import torch

from ecg_ray.training.model import ECGModel, NotebookECGModel


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


@pytest.mark.parametrize("hidden, batch", [(128, 32), (16, 3)])
def test_fast_conv_blocks_equal_the_notebooks_bit_for_bit(hidden, batch):
    """Pool before ReLU, on a channels_last copy: the same outputs and gradients as the notebook's order,
    on inputs full of ties (values on a coarse grid), positive and not."""
    torch.manual_seed(1)
    fast = ECGModel(hidden_size=hidden)
    slow = NotebookECGModel(hidden_size=hidden)
    slow.load_state_dict(fast.state_dict())
    spec = torch.randint(-3, 4, (batch, 1, 129, 71)).float() / 2  # ties everywhere, some windows all <= 0
    a, b = fast.conv_blocks(spec), slow.conv_blocks(spec)
    assert torch.equal(a, b) and a.is_contiguous()
    grads = [torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), list(m.conv.parameters()))
             for m, out in ((fast, a), (slow, b))]
    assert all(torch.equal(g, h) for g, h in zip(*grads))
    x = torch.randn(batch, 9000)
    assert torch.equal(fast(x), slow(x))


def test_channels_last_is_the_same_model_with_close_numbers():
    torch.manual_seed(2)
    default = ECGModel(hidden_size=32)
    fast = ECGModel(hidden_size=32, channels_last=True)
    fast.load_state_dict(default.state_dict())  # the same parameters: checkpoints load either way
    x = torch.randn(4, 9000) * 500
    a, b = default(x), fast(x)
    assert b.is_contiguous() and torch.allclose(a, b, rtol=1e-4, atol=1e-4)
