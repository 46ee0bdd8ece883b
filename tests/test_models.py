"""Recognition models: torchvision key names, ImageNet loading, shapes, registry, heads."""

import pytest
import torch

from mielib import models


def torchvision_resnet18_shapes(n_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """torchvision's resnet18 state dict keys and shapes, written out from the architecture:
    conv1/bn1 stem, layer1..4 of two BasicBlocks (64-128-256-512), a 1x1 conv + BN
    downsample in the first block of layers 2-4, fc 512 -> classes."""
    def bn(prefix, c):
        return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
                f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}

    shapes = {"conv1.weight": (64, 3, 7, 7), **bn("bn1", 64)}
    c_in = 64
    for layer, width in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"layer{layer}.{block}"
            shapes[f"{p}.conv1.weight"] = (width, c_in if block == 0 else width, 3, 3)
            shapes.update(bn(f"{p}.bn1", width))
            shapes[f"{p}.conv2.weight"] = (width, width, 3, 3)
            shapes.update(bn(f"{p}.bn2", width))
            if block == 0 and layer > 1:
                shapes[f"{p}.downsample.0.weight"] = (width, c_in, 1, 1)
                shapes.update(bn(f"{p}.downsample.1", width))
        c_in = width
    shapes["fc.weight"] = (n_classes, 512)
    shapes["fc.bias"] = (n_classes,)
    return shapes


def fake_imagenet(path, n_classes=1000, seed=0):
    """A stand-in for torchvision's resnet18 .pth: random tensors with its exact keys."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in torchvision_resnet18_shapes(n_classes).items():
        state[k] = torch.tensor(7) if k.endswith("num_batches_tracked") else torch.randn(shape, generator=g)
    torch.save(state, path)
    return state


def test_resnet18_has_torchvision_names_and_shapes():
    expected = torchvision_resnet18_shapes()
    assert len(expected) == 122  # 62 parameters + 60 BN buffers, torchvision's count
    own = models.ResNet18(1000).state_dict()
    assert set(own) == set(expected)
    for k, shape in expected.items():
        assert tuple(own[k].shape) == shape, k
    assert sum(k.endswith("num_batches_tracked") for k in own) == 20
    backbone = models.ResNet18(None).state_dict()
    assert set(backbone) == set(expected) - {"fc.weight", "fc.bias"}


def test_load_imagenet_into_branches_and_bare_resnet(tmp_path):
    path = tmp_path / "resnet18.pth"
    state = fake_imagenet(path)
    net = models.ResNet18(1000)
    report = models.load_imagenet(net, path)
    assert report["loaded"] == 122 and report["ignored"] == []
    assert torch.equal(net.layer3[0].downsample[0].weight, state["layer3.0.downsample.0.weight"])
    assert torch.equal(net.fc.weight, state["fc.weight"])
    assert int(net.bn1.num_batches_tracked) == 7

    m = models.build("branches", 3, seed=0)
    report = models.load_imagenet(m, path)
    assert report["backbones"] == ["onset", "apex"]
    assert set(report["ignored"]) == {"fc.weight", "fc.bias"}
    for branch in (m.onset, m.apex):
        assert torch.equal(branch.conv1.weight, state["conv1.weight"])
        assert torch.equal(branch.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])
    a = models.build("apexme", 3, seed=0)
    head_before = a.head[-1].weight.clone()
    models.load_imagenet(a, path)
    assert torch.equal(a.backbone.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    assert torch.equal(a.head[-1].weight, head_before)  # the head is untouched


def test_load_imagenet_with_other_head_and_module_prefix(tmp_path):
    path = tmp_path / "r.pth"
    state = fake_imagenet(path, n_classes=10)
    net = models.ResNet18(3)
    report = models.load_imagenet(net, path)
    assert set(report["ignored"]) == {"fc.weight", "fc.bias"}
    assert torch.equal(net.conv1.weight, state["conv1.weight"]) and net.fc.weight.shape == (3, 512)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    net = models.ResNet18(10)
    models.load_imagenet(net, path)
    assert torch.equal(net.fc.weight, state["fc.weight"])


def test_load_imagenet_errors_name_the_keys(tmp_path):
    path = tmp_path / "r.pth"
    state = fake_imagenet(path)
    del state["layer2.0.downsample.1.running_mean"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        models.load_imagenet(models.ResNet18(None), path)
    msg = str(err.value)
    assert "missing keys (1): layer2.0.downsample.1.running_mean" in msg
    assert "unexpected keys (1): extra.weight" in msg
    state = fake_imagenet(path)
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"shape mismatches: conv1.weight \(64, 1, 7, 7\)"):
        models.load_imagenet(models.ResNet18(None), path)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        models.load_imagenet(models.ResNet18(None), tmp_path / "absent.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth: cannot be read"):
        models.load_imagenet(models.ResNet18(None), tmp_path / "bad.pth")
    # A pickled object (not plain tensors) is refused by weights_only loading.
    torch.save({"conv1.weight": object()}, path)
    with pytest.raises(ValueError, match="weights-only"):
        models.load_imagenet(models.ResNet18(None), path)


@pytest.mark.parametrize("name,size", [("apexme", 32), ("branches", 48)])
def test_image_models_shapes_and_inputs(name, size):
    m = models.build(name, 3, seed=1).eval()
    assert m.inputs == models.INPUTS[name] and m.n_classes == 3 and m.name == name
    onset, apex = torch.rand(2, 3, size, size + 8), torch.rand(2, 3, size, size + 8)
    with torch.no_grad():
        out = m(onset, apex)
        assert out.shape == (2, 3)
        assert m.embed(onset, apex).shape == (2, 1024 if name == "branches" else 512)
        if name == "apexme":
            assert torch.allclose(m(apex), out)  # the apex is what counts
            assert not torch.allclose(m(apex.flip(-1)), out)
        else:
            # The two branches do not share weights, so swapping frames changes the output.
            assert not torch.allclose(m(apex, onset), out)
    with pytest.raises(ValueError, match="at least 32x32"):
        m(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))


def test_branches_architecture():
    m = models.build("branches", 5)
    linears = [l for l in m.head if isinstance(l, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(1024, 128), (128, 32), (32, 5)]
    assert any(isinstance(l, torch.nn.Dropout) for l in m.head)
    assert m.onset.conv1.weight.data_ptr() != m.apex.conv1.weight.data_ptr()
    assert not torch.equal(m.onset.conv1.weight, m.apex.conv1.weight)


def test_build_is_seeded_without_touching_global_rng():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = models.build("apexme", 3, seed=7)
    after = torch.rand(1)
    assert torch.equal(before, after)  # the caller's RNG stream is unchanged
    b = models.build("apexme", 3, seed=7)
    c = models.build("apexme", 3, seed=8)
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.backbone.conv1.weight, c.backbone.conv1.weight)


def test_new_head_keeps_hidden_layers():
    m = models.build("branches", 3, seed=0)
    hidden = m.head[0].weight.clone()
    backbone = m.apex.layer1[0].conv1.weight.clone()
    models.new_head(m, 6, seed=1)
    assert m.n_classes == 6 and m.head[-1].out_features == 6
    assert torch.equal(m.head[0].weight, hidden) and torch.equal(m.apex.layer1[0].conv1.weight, backbone)
    with torch.no_grad():
        assert m.eval()(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)).shape == (1, 6)
    d = models.build("dtscnn", 3, scales=(4, 8), widths=(4, 8), frame_size=None)
    models.new_head(d, 5)
    assert d.head[-1].out_features == 5
    with pytest.raises(TypeError, match="no `head`"):
        models.new_head(models.ResNet18(3), 4)


@pytest.mark.parametrize("mode,channels", [("rgb", 3), ("gray", 3), ("diff", 3), ("flow", 2)])
def test_dtscnn_runs_on_small_stacks(mode, channels):
    m = models.build("dtscnn", 3, seed=0, scales=(4, 8), input_mode=mode, widths=(8, 16, 16), frame_size=None).eval()
    assert m.inputs == "stack" and len(m.streams) == 2
    x = torch.rand(2, channels, 8, 32, 32)
    with torch.no_grad():
        out = m(x)
        assert out.shape == (2, 3) and torch.isfinite(out).all()
        assert m.embed(x).shape == (2, 32)
    with pytest.raises(ValueError, match="channels"):
        m(torch.rand(2, channels + 1, 8, 32, 32))


def test_dtscnn_streams_see_two_temporal_scales():
    m = models.build("dtscnn", 2, seed=0, scales=(4, 16), widths=(4,), frame_size=16).eval()
    seen = []
    for stream in m.streams:
        stream.register_forward_hook(lambda mod, inp, out: seen.append(tuple(inp[0].shape)))
    with torch.no_grad():
        m(torch.rand(1, 3, 8, 40, 40))
    assert seen == [(1, 3, 4, 16, 16), (1, 3, 16, 16, 16)]
    with pytest.raises(ValueError, match="unknown input_mode"):
        models.build("dtscnn", 2, input_mode="depth")


def test_registry_errors_and_training_step():
    with pytest.raises(ValueError, match="unknown model 'resnet50'; known models: apexme, branches, dtscnn"):
        models.build("resnet50", 3)
    with pytest.raises(ValueError, match="n_classes"):
        models.build("apexme", 1)
    # A few optimisation steps lower the loss on a fixed batch: gradients reach the weights.
    m = models.build("dtscnn", 2, seed=0, scales=(4, 4), widths=(8,), frame_size=None, dropout=0.0)
    x, y = torch.rand(4, 3, 4, 32, 32), torch.tensor([0, 1, 0, 1])
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# The CUDA run of every model under autocast is tests/test_cuda.py::test_models_run_on_cuda_with_autocast.
