"""models/slicing.py and models/ase.py: prefix convolutions and MLPs, the ASE block and its interweaving layout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.ase import AnyScaleEnhancement, ase_input_size, interweave_layout
from models.slicing import SlicedConv2d, SlicedMLP, mlp_regions, prefix_box
from models.widths import WIDTHS, channels_at

FULL_CHANNELS = 64
CHUNK = 16


def make_ase(interweave: bool = True, seed: int = 0) -> AnyScaleEnhancement:
    """The product's ASE (64 channels, chunk 16, hidden 128) with W2 randomised so the gate is not 1."""
    generator = torch.Generator().manual_seed(seed)
    ase = AnyScaleEnhancement(FULL_CHANNELS, 128, CHUNK, interweave)
    with torch.no_grad():
        for param in ase.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return ase


@pytest.mark.parametrize(("width", "length"), [(0.5, 36), (0.7, 48), (0.9, 63), (1.0, 72)])
def test_interweave_input_lengths_for_edsr_baseline(width: float, length: int) -> None:
    channels = channels_at(FULL_CHANNELS, width)
    assert ase_input_size(channels, CHUNK, interweave=True) == length
    assert len(interweave_layout(channels, CHUNK)) == channels


def test_interweave_layout_puts_a_scale_pair_after_every_complete_chunk() -> None:
    positions = interweave_layout(FULL_CHANNELS, CHUNK)
    assert positions[:16] == list(range(16))
    assert positions[16:32] == list(range(18, 34))
    assert positions[32:48] == list(range(36, 52))
    assert positions[48:] == list(range(54, 70))
    gaps = sorted(set(range(72)) - set(positions))
    assert gaps == [16, 17, 34, 35, 52, 53, 70, 71]


@pytest.mark.parametrize("width", WIDTHS)
def test_build_vector_places_channels_and_scale_pairs(width: float) -> None:
    ase = make_ase()
    channels = channels_at(FULL_CHANNELS, width)
    pooled = torch.arange(1.0, channels + 1.0)[None].repeat(2, 1) * torch.tensor([[1.0], [-1.0]])
    scale = torch.tensor([[1.3, 2.7], [4.0, 1.1]])
    vector = ase.build_vector(pooled, scale)
    length = ase_input_size(channels, CHUNK, interweave=True)
    assert vector.shape == (2, length)
    positions = interweave_layout(channels, CHUNK)
    torch.testing.assert_close(vector[:, positions], pooled, rtol=0, atol=0)
    pair_starts = [position for position in range(CHUNK, length, CHUNK + 2)]
    assert len(pair_starts) == channels // CHUNK
    for start in pair_starts:
        torch.testing.assert_close(vector[:, start : start + 2], scale, rtol=0, atol=0)


def test_narrow_vector_is_a_prefix_of_the_full_one() -> None:
    """The point of interweaving: a scale value meets the same W1 column at every width."""
    ase = make_ase()
    pooled = torch.randn(3, FULL_CHANNELS)
    scale = torch.tensor([[1.5, 2.5], [3.0, 3.0], [1.2, 3.9]])
    full = ase.build_vector(pooled, scale)
    for width in WIDTHS:
        channels = channels_at(FULL_CHANNELS, width)
        narrow = ase.build_vector(pooled[:, :channels], scale)
        torch.testing.assert_close(narrow, full[:, : narrow.shape[1]], rtol=0, atol=0)


def test_without_interweaving_the_pair_is_appended_once() -> None:
    ase = make_ase(interweave=False)
    assert ase.fc1.in_features == FULL_CHANNELS + 2
    for width in WIDTHS:
        channels = channels_at(FULL_CHANNELS, width)
        assert ase_input_size(channels, CHUNK, interweave=False) == channels + 2
        pooled = torch.randn(2, channels)
        scale = torch.tensor([[1.3, 2.7], [2.0, 2.0]])
        vector = ase.build_vector(pooled, scale)
        torch.testing.assert_close(vector, torch.cat([pooled, scale], dim=1), rtol=0, atol=0)


@pytest.mark.parametrize("interweave", [True, False])
@pytest.mark.parametrize("width", WIDTHS)
def test_ase_gate_matches_the_sliced_formula(width: float, interweave: bool) -> None:
    """gate = 2·sigmoid(W2[:k] · ReLU(W1[:, :len] · v + b1) + b2[:k]), applied per channel."""
    ase = make_ase(interweave)
    channels = channels_at(FULL_CHANNELS, width)
    length = ase_input_size(channels, CHUNK, interweave)
    features = torch.randn(2, channels, 5, 3)
    scale = torch.tensor([[1.3, 2.7], [3.5, 3.5]])
    vector = ase.build_vector(features.mean(dim=(2, 3)), scale)
    hidden = F.relu(vector @ ase.fc1.weight[:, :length].T + ase.fc1.bias)
    gate = 2 * torch.sigmoid(hidden @ ase.fc2.weight[:channels].T + ase.fc2.bias[:channels])
    expected = features * gate[:, :, None, None]
    torch.testing.assert_close(ase(features, scale), expected)


@pytest.mark.parametrize("width", [0.5, 0.7, 0.9])
def test_ase_reads_only_its_w1_columns_and_w2_rows(width: float) -> None:
    ase = make_ase()
    channels = channels_at(FULL_CHANNELS, width)
    length = ase_input_size(channels, CHUNK, interweave=True)
    features = torch.randn(2, channels, 4, 4)
    scale = torch.tensor([[1.3, 2.7], [2.2, 2.2]])
    before = ase(features, scale)
    with torch.no_grad():
        ase.fc1.weight[:, length:] += 100.0
        ase.fc2.weight[channels:] += 100.0
        ase.fc2.bias[channels:] += 100.0
    assert torch.equal(ase(features, scale), before)
    for param, index in [(ase.fc1.weight, (slice(None), length - 1)), (ase.fc2.weight, (channels - 1,))]:
        with torch.no_grad():
            param[index] += 1.0
        assert not torch.allclose(ase(features, scale), before)


def test_ase_depends_on_the_scale() -> None:
    ase = make_ase()
    features = torch.randn(1, FULL_CHANNELS, 4, 4)
    first = ase(features, torch.tensor([[1.5, 1.5]]))
    assert not torch.allclose(first, ase(features, torch.tensor([[3.5, 3.5]])))
    assert not torch.allclose(first, ase(features, torch.tensor([[1.5, 3.5]])))


@pytest.mark.parametrize("interweave", [True, False])
def test_fresh_ase_is_the_identity(interweave: bool) -> None:
    """W2 = 0 at initialisation gives gate 2·sigmoid(0) = 1 exactly: a stage-1 model is reproduced."""
    ase = AnyScaleEnhancement(FULL_CHANNELS, 128, CHUNK, interweave)
    for width in WIDTHS:
        features = torch.randn(2, channels_at(FULL_CHANNELS, width), 3, 4)
        assert torch.equal(ase(features, torch.tensor([[1.3, 2.7], [4.0, 4.0]])), features)


def test_sliced_conv_uses_the_first_filters_and_input_channels() -> None:
    conv = SlicedConv2d(16, 16, 3, padding=1)
    x = torch.randn(2, 16, 5, 6)
    torch.testing.assert_close(conv.forward_sliced(x), conv(x), rtol=0, atol=0)
    narrow_in = x[:, :11]
    expected = F.conv2d(narrow_in, conv.weight[:8, :11], conv.bias[:8], padding=1)
    torch.testing.assert_close(conv.forward_sliced(narrow_in, 8), expected, rtol=0, atol=0)
    assert conv.forward_sliced(narrow_in).shape == (2, 16, 5, 6)


def test_sliced_mlp_layer_sizes() -> None:
    mlp = SlicedMLP(580, (256, 256, 256, 256), 3)
    assert [(layer.in_features, layer.out_features) for layer in mlp.layers] == [
        (580, 256),
        (256, 256),
        (256, 256),
        (256, 256),
        (256, 3),
    ]


def test_mlp_regions_cover_the_sliced_rows_and_columns_of_each_layer() -> None:
    regions = mlp_regions("mlp", [256, 256], [128, 128])
    assert regions == {
        "mlp.layers.0.weight": (prefix_box(128, None),),
        "mlp.layers.0.bias": (prefix_box(128),),
        "mlp.layers.1.weight": (prefix_box(128, 128),),
        "mlp.layers.1.bias": (prefix_box(128),),
        "mlp.layers.2.weight": (prefix_box(None, 128),),
        "mlp.layers.2.bias": (prefix_box(None),),
    }
    assert mlp_regions("mlp", [256, 256], [256, 256]) == {}


def test_ase_regions_are_the_prefix_vector_and_rows() -> None:
    ase = make_ase()
    assert ase.used_regions(FULL_CHANNELS) == {}
    regions = ase.used_regions(32)
    assert regions["fc1.weight"] == (prefix_box(None, 36),)
    assert regions["fc2.weight"] == (prefix_box(32),)
    assert ase.macs(32) == 36 * 128 + 128 * 32
