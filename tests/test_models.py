import math
import re
import typing

import pytest
import torch
from torch import nn

from advnb import models
from advnb.data import DATASETS
from advnb.models import ARCHITECTURES, Normalize, build_model, count_parameters, extract_features
from advnb.papers.c_implicit_fourier import CircularConv2d, end_to_end_weights
from advnb.papers.e_spectral import FixupBlock
from advnb.registry import load_plugins

load_plugins()  # the papers' architectures (C's shallow models, E's Fixup ResNets and WRN-50-2, B's ResNet-50) are plug-ins

SHAPES = [(1, 28, 28), (3, 32, 32), (3, 96, 96)]
K = 7  # not 10, so a hard-coded class count would show

# small settings of every architecture (and of a few variants), so the whole file runs in seconds
SMALL = {
    "resnet18": {"width": 4},
    "preact_resnet": {"depth": 8, "width": 1},
    "wrn": {"depth": 10, "widen_factor": 1},
    "wrn-madry": ("wrn", {"depth": 10, "widen_factor": 2, "variant": "madry"}),
    "vgg19": {"width": 2},
    "simple_cnn": {"width": 4, "hidden": 16},
    "fully_connected": {"hidden": 16},
    "fully_connected-deep-relu": ("fully_connected", {"hidden": 16, "depth": 3, "nonlinear": True}),
    "full_width_conv": {"channels": 3},
    "full_width_conv-deep-relu": ("full_width_conv", {"depth": 3, "nonlinear": True}),
    "bounded_conv": {"channels": 3},
    "bounded_conv-deep-circular": ("bounded_conv", {"channels": 4, "depth": 3, "padding": "circular", "nonlinear": True}),
    "locally_connected": {"channels": 2},
    "locally_connected-relu": ("locally_connected", {"channels": 2, "nonlinear": True}),
    "shallow_resnet": {"width": 4},
    "fixup_resnet": {"depth": 8, "width": 1},
    "wrn50_2": {"stem": "imagenet"},  # torchvision's stride-4 stem: cheap at these sizes (paper E's stem: below)
    "resnet50": {},  # paper B's Restricted ImageNet network (torchvision's, stride-4 stem)
}


def _spec(key):
    v = SMALL[key]
    return v if isinstance(v, tuple) else (key, v)


def _stats(c):
    return [0.4 + 0.05 * i for i in range(c)], [0.2 + 0.03 * i for i in range(c)]


def _families() -> tuple[set[str], dict]:
    """The family builders in ARCHITECTURES and each builder's model class. A builder is a preset, not a family,
    only when another builder of the same model class has a strict superset of its knobs and its name is that
    builder's name plus a depth/width suffix (`preact_resnet20`, `wrn34_10`); anything else counts as a family,
    so a new builder must get a SMALL configuration unless it is clearly a preset of a covered family."""
    cls = {n: typing.get_type_hints(f).get("return", f) for n, f in ARCHITECTURES.items()}
    knobs = {n: set(models.arch_knobs(n)) for n in ARCHITECTURES}

    def preset_of(n, o):
        return (cls[o] is cls[n] and knobs[n] < knobs[o]
                and re.fullmatch(re.escape(o) + r"\d+(_\d+)*", n) is not None)
    fams = {n for n in ARCHITECTURES if not any(preset_of(n, o) for o in ARCHITECTURES)}
    return fams, cls


def test_every_family_is_covered():
    covered = {_spec(k)[0] for k in SMALL}
    families, cls = _families()
    assert families, "no architecture families found in advnb.models.ARCHITECTURES"
    missing = sorted(families - covered)
    assert not missing, f"families without a SMALL configuration in this file: {missing}"
    assert covered <= set(ARCHITECTURES), f"SMALL names unknown architectures: {sorted(covered - set(ARCHITECTURES))}"
    assert set(cls.values()) <= {cls[a] for a in covered}  # every model class (presets' too) is exercised


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("key", list(SMALL))
def test_forward_shape_and_gradients_reach_input_and_every_parameter(key, shape):
    arch, knobs = _spec(key)
    torch.manual_seed(0)
    mean, std = _stats(shape[0])
    m = build_model(arch, K, shape, mean=mean, std=std, **knobs)
    assert isinstance(next(m.children()), Normalize), "the first layer must be Normalize"
    if arch == "fixup_resnet":  # Fixup starts the classifier and each branch's last conv at 0: no gradient flows yet
        with torch.no_grad():
            for p in m.parameters():
                if not p.any():
                    p.normal_(0, 0.05)
    m.train()
    x = torch.rand(2, *shape, requires_grad=True)
    out = m(x)
    assert out.shape == (2, K)
    nn.functional.cross_entropy(out, torch.tensor([1, 5])).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # in train mode the bias of a conv followed by BatchNorm has a gradient of exactly zero in exact arithmetic (the
    # batch mean removes it; VGG-19 at 1x28x28 gets 0.0 in floating point too), so reachability is checked in eval
    # mode, where BatchNorm is a fixed affine map and every parameter must receive a gradient
    m.eval()
    m.zero_grad()
    nn.functional.cross_entropy(m(x), torch.tensor([1, 5])).backward()
    no_grad = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"no gradient reaches {no_grad}"
    # named features: all of them, in order, from one forward pass; the last is the logits
    m.eval()
    calls = []
    h = m.register_forward_pre_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        feats = extract_features(m, x)
        ref = m(x)
    h.remove()
    assert len(calls) == 2  # one for extract_features, one for the reference call
    assert list(feats) == m.feature_names and len(m.feature_names) >= 2
    assert all(v.shape[0] == 2 for v in feats.values())
    torch.testing.assert_close(feats["logits"], ref)


def test_normalize_is_exact():
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    n = Normalize(mean, std)
    x = torch.rand(4, 3, 5, 6)
    expect = torch.stack([(x[:, c] - mean[c]) / std[c] for c in range(3)], 1)
    torch.testing.assert_close(n(x), expect, rtol=0, atol=1e-7)
    assert set(n.state_dict()) == {"mean", "std"} and not list(n.parameters())
    # a scalar broadcasts to the channels; wrong channel counts and non-positive std are refused
    torch.testing.assert_close(Normalize(0.5, 0.25, channels=3)(x), (x - 0.5) / 0.25)
    with pytest.raises(ValueError, match="channels"):
        Normalize(mean, std, channels=1)
    with pytest.raises(ValueError, match="positive"):
        Normalize(0.0, [1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="channels"):
        build_model("resnet18", 10, (1, 28, 28), mean=mean, std=std, width=4)


@pytest.mark.parametrize("arch,knobs", [("resnet18", {"width": 4}), ("fully_connected", {"hidden": 8}),
                                        ("wrn", {"depth": 10, "widen_factor": 1})])
def test_model_normalizes_its_input_first(arch, knobs):
    "A model with statistics (m, s) on x equals the same weights with identity statistics on (x - m) / s."
    mean, std = _stats(3)
    torch.manual_seed(0)
    a = build_model(arch, K, (3, 32, 32), mean=mean, std=std, **knobs).eval()
    b = build_model(arch, K, (3, 32, 32), **knobs).eval()
    b.load_state_dict({k: v for k, v in a.state_dict().items() if not k.startswith("normalize.")}, strict=False)
    assert torch.equal(b.normalize.mean, torch.zeros(1, 3, 1, 1)) and torch.equal(b.normalize.std, torch.ones(1, 3, 1, 1))
    x = torch.rand(3, 3, 32, 32)
    z = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(z), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("width", [8, 64])
def test_resnet18_paper_a_layers(width):
    m = build_model("resnet18", 10, (3, 32, 32), width=width).eval()
    assert m.feature_names[:6] == ["Conv1", "Layer0", "Layer1", "Layer2", "Layer3", "Layer4"]
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        f = extract_features(m, x, ["Layer4", "Conv1", "Layer0", "Layer1", "Layer2", "Layer3"])
        conv1 = m.conv1(m.normalize(x))
    assert list(f) == ["Layer4", "Conv1", "Layer0", "Layer1", "Layer2", "Layer3"]  # the order asked for
    w = width
    assert {k: tuple(v.shape[1:]) for k, v in f.items()} == {
        "Conv1": (w, 32, 32), "Layer0": (w, 32, 32), "Layer1": (w, 32, 32),
        "Layer2": (2 * w, 16, 16), "Layer3": (4 * w, 8, 8), "Layer4": (8 * w, 4, 4)}
    torch.testing.assert_close(f["Conv1"], conv1)  # Conv1 = output of the first conv (before BN)
    torch.testing.assert_close(f["Layer0"], torch.relu(m.bn1(conv1)))  # Layer0 = after bn1 + ReLU
    with pytest.raises(ValueError, match="Layer1"):
        extract_features(m, x, ["Layer5"])


def test_extract_features_on_any_module():
    seq = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.randn(5, 4)
    f = extract_features(seq, x)
    assert list(f) == ["0", "1", "2"]
    torch.testing.assert_close(f["1"], torch.relu(seq[0](x)))
    torch.testing.assert_close(f["2"], seq(x))
    assert not seq._forward_hooks and not any(mod._forward_hooks for mod in seq)  # hooks removed


LINEAR = [("fully_connected", {"hidden": 12}), ("fully_connected", {"hidden": 12, "depth": 3}),
          ("full_width_conv", {}), ("full_width_conv", {"depth": 3}), ("bounded_conv", {"channels": 3}),
          ("bounded_conv", {"channels": 4, "depth": 3, "padding": "circular"}), ("locally_connected", {"channels": 3}),
          ("shallow_resnet", {"width": 4, "nonlinear": False})]


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)], ids=["3x32x32", "1x28x28"])
@pytest.mark.parametrize("arch,knobs", LINEAR)
def test_end_to_end_weights_reproduce_logits(arch, knobs, shape):
    mean, std = _stats(shape[0])
    torch.manual_seed(1)
    m = build_model(arch, K, shape, mean=mean, std=std, **knobs).eval()
    beta, b = end_to_end_weights(m, return_bias=True)
    assert beta.shape == (K, *shape) and b.shape == (K,)
    x = torch.rand(5, *shape)
    with torch.no_grad():
        logits = m(x)
    z = m.normalize(x)
    torch.testing.assert_close(z.flatten(1) @ beta.flatten(1).T + b, logits, rtol=1e-4, atol=1e-5)
    bp, bb = end_to_end_weights(m, pixel_space=True, return_bias=True)
    torch.testing.assert_close(x.flatten(1) @ bp.flatten(1).T + bb, logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(end_to_end_weights(m), beta)


def test_end_to_end_weights_of_one_hidden_layer_is_w2_w1():
    m = build_model("fully_connected", K, (3, 8, 8), hidden=20)
    w1, w2 = m.body.hidden1[1].weight, m.body.readout.weight
    torch.testing.assert_close(end_to_end_weights(m).flatten(1), (w2 @ w1).detach(), rtol=1e-5, atol=1e-6)


def test_end_to_end_weights_refuses_nonlinear_models():
    with pytest.raises(ValueError, match="linear"):
        end_to_end_weights(build_model("bounded_conv", nonlinear=True))
    with pytest.raises(ValueError, match="linear"):
        end_to_end_weights(build_model("resnet18", width=2))


def test_circular_conv_is_circular_convolution():
    "Known answer: y[o] = sum_c sum_k w[o, c, k] x[c, n - k (mod size)] + b[o]."
    torch.manual_seed(0)
    conv = CircularConv2d(2, 3, (5, 6))
    x = torch.randn(2, 2, 5, 6)
    expect = sum(torch.einsum("oc,nchw->nohw", conv.weight[:, :, i, j], torch.roll(x, (i, j), (2, 3)))
                 for i in range(5) for j in range(6)) + conv.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(conv(x), expect, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("nonlinear", [False, True])
def test_full_width_conv_is_translation_equivariant(nonlinear):
    torch.manual_seed(0)
    m = build_model("full_width_conv", K, (3, 32, 32), mean=_stats(3)[0], std=_stats(3)[1], depth=3, nonlinear=nonlinear)
    x = torch.rand(2, 3, 32, 32)
    shift = ((3, -11), (2, 3))
    with torch.no_grad():
        f = extract_features(m, x, ["hidden1", "hidden3"])
        g = extract_features(m, torch.roll(x, *shift), ["hidden1", "hidden3"])
    for name in f:
        assert f[name].shape == (2, 3, 32, 32)
        torch.testing.assert_close(g[name], torch.roll(f[name], *shift), rtol=1e-4, atol=1e-4)
        assert not torch.allclose(g[name], f[name], atol=1e-3)  # the shift does change the map


@pytest.mark.parametrize("arch", ["fully_connected", "full_width_conv", "bounded_conv", "locally_connected", "shallow_resnet"])
def test_alpha_scales_initial_weights(arch):
    knobs = {"hidden": 16} if arch == "fully_connected" else {"channels": 2} if arch == "locally_connected" else {}
    nets = {}
    for alpha in (0.1, 1.0, 10.0):
        torch.manual_seed(3)
        nets[alpha] = dict(build_model(arch, K, (3, 16, 16), alpha=alpha, **knobs).named_parameters())
    weights = [n for n in nets[1.0] if n.endswith("weight")]
    assert len(weights) >= 2  # hidden layer(s) and readout
    for alpha in (0.1, 10.0):
        for n, p in nets[1.0].items():
            if n.endswith("weight"):
                assert math.isclose(float(nets[alpha][n].detach().norm() / p.detach().norm()), alpha, rel_tol=1e-5), n
            else:
                assert torch.equal(nets[alpha][n], p), n  # biases keep their default initialisation
    with pytest.raises(ValueError, match="alpha"):
        build_model(arch, alpha=0.0)


@pytest.mark.parametrize("depth,branches", [(56, 27), (110, 54)])
def test_fixup_resnet(depth, branches):
    torch.manual_seed(0)
    m = build_model("fixup_resnet", 10, (3, 32, 32), depth=depth)
    assert not any(isinstance(mod, nn.modules.batchnorm._BatchNorm) for mod in m.modules())
    blocks = [mod for mod in m.modules() if isinstance(mod, FixupBlock)]
    assert len(blocks) == branches == m.num_branches
    assert all(not b.conv2.weight.any() for b in blocks)  # each residual branch's last layer starts at 0
    assert not m.fc.weight.any() and not m.fc.bias.any()
    assert all(b.conv1.bias is None and b.conv2.bias is None for b in blocks)  # no scalar biases / multipliers
    assert all(p.dim() > 1 or n.startswith("fc.") for n, p in m.named_parameters())
    w = torch.cat([b.conv1.weight.detach().flatten() for b in blocks if b.conv1.weight.shape[0] == 16])
    expect = math.sqrt(2 / (16 * 9)) * branches ** -0.5  # Fixup: He init scaled by L^(-1/(2m-2)), m = 2
    assert abs(float(w.std()) / expect - 1) < 0.05
    with torch.no_grad():  # the residual branches are off at init: every block is the identity (after ReLU)
        h = m.relu(m.conv1(m.normalize(torch.rand(2, 3, 32, 32))))
        torch.testing.assert_close(m.layer1(h), h)
    assert count_parameters(m) == count_parameters(build_model(f"fixup_resnet{depth}"))


def _count(arch, shape=(3, 32, 32), num_classes=10, **knobs):
    with torch.device("meta"):
        return count_parameters(build_model(arch, num_classes, shape, **knobs))


def test_known_parameter_counts():
    assert _count("resnet18") == 11_173_962  # He et al. CIFAR ResNet-18
    assert _count("wrn34_10") == _count("wrn", depth=34, widen_factor=10) == 46_160_474  # WRN-34-10 (TRADES)
    assert _count("wrn40_2", (3, 96, 96)) == 2_243_546  # WRN-40-2, 2.2 M in Zagoruyko & Komodakis
    # the Madry/RLFAT variant replaces the three 1×1 shortcut convolutions by pooling + zero padding
    assert _count("wrn34_10", variant="madry") == 46_160_474 - (16 * 160 + 160 * 320 + 320 * 640)
    assert _count("vgg19") == 20_040_522
    assert _count("simple_cnn", (1, 28, 28)) == 3_274_634  # Madry et al.'s MNIST network
    assert _count("fully_connected") == 3072 * 2700 + 2700 + 2700 * 10 + 10
    assert _count("locally_connected") == 32 * 900 * 27 + 32 * 900 + 32 * 900 * 10 + 10
    for d in (20, 56, 110):
        assert _count(f"preact_resnet{d}") == _count("preact_resnet", depth=d)
    assert 0.26e6 < _count("preact_resnet20") < 0.28e6 and 1.7e6 < _count("preact_resnet110") < 1.75e6
    assert _count("resnet18", width=32) < _count("resnet18") / 3  # width is a real knob
    assert _count("wrn50_2", (3, 224, 224), 1000, stem="imagenet") == 68_883_240  # torchvision's WRN-50-2
    assert _count("wrn50_2", (3, 64, 64), 1000) == 68_883_240 - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64  # paper E's 3x3 stem


def test_build_model_errors_and_metadata():
    with pytest.raises(ValueError, match="resnet18"):
        build_model("resnet19")
    with pytest.raises(ValueError, match="width=64"):  # lists the valid knobs with defaults
        build_model("resnet18", widht=8)
    with pytest.raises(ValueError, match="6n\\+2"):
        build_model("preact_resnet", depth=21)
    with pytest.raises(ValueError, match="6n\\+4"):
        build_model("wrn", depth=28 + 1)
    with pytest.raises(ValueError, match="padding"):
        build_model("bounded_conv", padding="reflect")
    with pytest.raises(ValueError, match="width"):
        build_model("vgg19", width=0)
    with pytest.raises(ValueError, match="in_shape"):
        build_model("resnet18", in_shape=(32, 32))
    m = build_model("simple_cnn", 4, (1, 28, 28), width=4)
    assert (m.arch, m.arch_kwargs, m.in_shape, m.num_classes) == ("simple_cnn", {"width": 4}, (1, 28, 28), 4)
    # no statistics and no dataset: identity normalisation
    assert torch.equal(m.normalize.mean, torch.zeros(1, 1, 1, 1)) and torch.equal(m.normalize.std, torch.ones(1, 1, 1, 1))


def test_build_model_takes_statistics_from_a_dataset():
    name = "cifar10"
    info = DATASETS[name]
    m = build_model("resnet18", dataset=name, width=2)
    assert m.in_shape == tuple(info.shape) and m.num_classes == info.num_classes
    torch.testing.assert_close(m.normalize.mean.flatten(), torch.tensor(info.mean, dtype=torch.float32).expand(info.shape[0]))
    torch.testing.assert_close(m.normalize.std.flatten(), torch.tensor(info.std, dtype=torch.float32).expand(info.shape[0]))
    m2 = build_model("resnet18", dataset=name, mean=0.0, std=1.0, width=2)  # explicit statistics win
    assert torch.equal(m2.normalize.std, torch.ones_like(m2.normalize.std))


def test_wrn50_2_bottleneck_width_2_on_64x64():
    "Paper E's Tiny-ImageNet network: 50 layers of bottleneck blocks whose 3×3 convolutions are twice ResNet-50's width."
    from torchvision.models.resnet import Bottleneck
    torch.manual_seed(0)
    m = build_model("wrn50_2", 200, (3, 64, 64), mean=[0.48, 0.45, 0.40], std=[0.28, 0.27, 0.28]).eval()
    assert isinstance(next(m.children()), Normalize)
    with torch.no_grad():
        feats = extract_features(m, torch.rand(1, 3, 64, 64))
    assert feats["logits"].shape == (1, 200)
    # App. D.2: a 3×3 stride-1 first convolution and no max-pool, so the four groups see 64, 32, 16 and 8 pixels
    assert [tuple(feats[k].shape[1:]) for k in ("conv1", "layer1", "layer2", "layer3", "layer4")] == [
        (64, 64, 64), (256, 64, 64), (512, 32, 32), (1024, 16, 16), (2048, 8, 8)]
    groups = [m.body.layer1, m.body.layer2, m.body.layer3, m.body.layer4]
    assert [len(g) for g in groups] == [3, 4, 6, 3] and all(isinstance(b, Bottleneck) for g in groups for b in g)
    assert [g[0].conv2.out_channels for g in groups] == [128, 256, 512, 1024]  # 2 × ResNet-50's 64, 128, 256, 512
    assert [g[0].conv3.out_channels for g in groups] == [256, 512, 1024, 2048]  # bottleneck outputs as ResNet-50's
    convs = [mod for n, mod in m.named_modules() if isinstance(mod, nn.Conv2d) and "downsample" not in n]
    assert len(convs) + 1 == 50  # 49 convolutions and the classifier
    assert any(isinstance(mod, nn.BatchNorm2d) for mod in m.modules())  # BatchNorm kept for Tiny-ImageNet
    w = m.body.layer3[2].conv2.weight  # Xavier-uniform: U(±sqrt(6 / (fan_in + fan_out)))
    bound = math.sqrt(6 / (w.shape[1] * 9 + w.shape[0] * 9))
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.95 * bound
    with pytest.raises(ValueError, match="stem"):
        build_model("wrn50_2", stem="cifar")
