"""The studies' CNN families: output shapes, parameter counts against hand formulas, and the MAC
counter against hand-computed convolutions. Expected counts are computed here from the layer
shapes, never by calling the code under test."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from hwval.workloads.complexity import count_macs, count_parameters  # noqa: E402
from hwval.workloads.models import ARCHS, build_model  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def conv_bn(c_in, c_out, k=3, groups=1):
    """Parameters of a bias-free conv followed by batch norm (weight + shift per channel)."""
    return c_out * (c_in // groups) * k * k + 2 * c_out


def linear(c_in, c_out):
    return c_in * c_out + c_out


def vgg_params(w, d, c_in, classes):
    total, c = 0, c_in
    for stage in range(3):
        for _ in range(d):
            total += conv_bn(c, w * 2 ** stage)
            c = w * 2 ** stage
    return total + linear(c, classes)


def resnet_params(w, d, c_in, classes):
    total = conv_bn(c_in, w)
    c = w
    for stage in range(3):
        out = w * 2 ** stage
        for block in range(d):
            total += conv_bn(c, out) + conv_bn(out, out)
            if c != out or (stage > 0 and block == 0):
                total += conv_bn(c, out, k=1)
            c = out
    return total + linear(c, classes)


def mobilenet_params(w, d, c_in, classes):
    total = conv_bn(c_in, w)
    c = w
    for stage in range(3):
        out = w * 2 ** (stage + 1)
        for _ in range(d):
            total += conv_bn(c, c, groups=c) + conv_bn(c, out, k=1)
            c = out
    return total + linear(c, classes)


@pytest.mark.parametrize("width,depth", [(4, 1), (16, 2), (8, 3)])
def test_vgg_parameter_count_matches_the_hand_formula(width, depth):
    model = build_model("vgg", width, depth, 3, 10)
    assert count_parameters(model) == vgg_params(width, depth, 3, 10)


@pytest.mark.parametrize("width,depth", [(4, 1), (16, 2)])
def test_resnet_parameter_count_matches_the_hand_formula(width, depth):
    model = build_model("resnet", width, depth, 3, 10)
    assert count_parameters(model) == resnet_params(width, depth, 3, 10)


def test_mobilenet_parameter_count_matches_the_hand_formula():
    model = build_model("mobilenet", 8, 2, 1, 5)
    assert count_parameters(model) == mobilenet_params(8, 2, 1, 5)


def test_default_width_counts_written_out():
    # vgg at width 16, depth 2, CIFAR shape, by hand:
    # convs 3->16, 16->16, 16->32, 32->32, 32->64, 64->64 (weights 9*cin*cout, BN 2*cout), fc 64->10
    expected = (432 + 32) + (2304 + 32) + (4608 + 64) + (9216 + 64) + (18432 + 128) + (36864 + 128) + 650
    assert expected == 72954
    assert count_parameters(build_model("vgg", 16, None, 3, 10)) == expected


def test_densenet_parameter_count_by_layer():
    # width 4 -> growth 2, depth 1: stem 3->4; block1 BN(4)+conv 4->2 (c=6); transition BN(6)+1x1 6->3;
    # block2 BN(3)+conv 3->2 (c=5); transition BN(5)+1x1 5->2; block3 BN(2)+conv 2->2 (c=4); BN(4); fc 4->10
    expected = (9 * 3 * 4) + (8 + 9 * 4 * 2) + (12 + 6 * 3) + (6 + 9 * 3 * 2) + (10 + 5 * 2) \
        + (4 + 9 * 2 * 2) + 8 + (4 * 10 + 10)
    assert count_parameters(build_model("densenet", 4, 1, 3, 10)) == expected


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (3, 8, 8), (4, 40, 24)])
def test_every_family_maps_any_image_size_to_class_logits(arch, shape):
    model = build_model(arch, 4, 1, shape[0], 7)
    out = model(torch.zeros(2, *shape))
    assert out.shape == (2, 7)
    loss = out.sum()
    loss.backward()  # trainable end to end
    assert all(p.grad is not None for p in model.parameters())


def test_bad_model_arguments_are_value_errors():
    with pytest.raises(ValueError, match="unknown architecture 'alexnet'"):
        build_model("alexnet", 8, 1, 3, 10)
    with pytest.raises(ValueError, match="width must be at least 1"):
        build_model("vgg", 0, 1, 3, 10)
    with pytest.raises(ValueError, match="classes must be at least 2"):
        build_model("vgg", 4, 1, 3, 1)


def test_mac_counter_on_hand_computable_layers():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),               # 8*10*10 outputs x 3*3*3 = 21600
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),  # depthwise: 8*5*5 outputs x 1*3*3 = 1800
        nn.Conv2d(8, 6, 1),                          # pointwise: 6*5*5 x 8 = 1200
        nn.ReLU(), nn.Flatten(),
        nn.Linear(6 * 5 * 5, 7),                     # 150*7 = 1050
    )
    macs = count_macs(net, (3, 10, 10))
    assert macs.by_kind == {"conv": 21600 + 1800 + 1200, "linear": 1050}
    assert macs.total == 21600 + 1800 + 1200 + 1050


def test_mac_counter_scales_with_image_area_and_leaves_the_model_as_it_was():
    model = build_model("vgg", 4, 1, 3, 10)
    model.train()
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    stats_before = bn.running_mean.clone()
    small, large = count_macs(model, (3, 16, 16)), count_macs(model, (3, 32, 32))
    assert model.training
    assert torch.equal(bn.running_mean, stats_before)  # counted in eval mode: BN stats untouched
    # convolutions scale with the area (x4); the classifier after global pooling does not
    assert large.by_kind["conv"] == 4 * small.by_kind["conv"]
    assert large.by_kind["linear"] == small.by_kind["linear"] == 16 * 10
    # vgg width 4, depth 1 on 32x32, by hand: 3->4 at 32x32, 4->8 at 16x16, 8->16 at 8x8
    assert large.by_kind["conv"] == 1024 * 4 * 27 + 256 * 8 * 36 + 64 * 16 * 72


def test_mobilenet_costs_fewer_macs_than_vgg_at_the_same_width():
    vgg = count_macs(build_model("vgg", 16, None, 3, 10), (3, 32, 32)).total
    mobile = count_macs(build_model("mobilenet", 16, None, 3, 10), (3, 32, 32)).total
    assert mobile < 0.7 * vgg
