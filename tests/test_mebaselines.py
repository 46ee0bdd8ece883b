"""AU-GACN's deep baselines (notebook 10): optical strain on hand-made flows, squash, dynamic routing
and the margin loss on hand-computed values, the ELRCN view's channels, output shapes at the
small and a larger input size, and each model learning two well-separated classes."""

import math

import numpy as np
import pytest
import torch

from mielib import mebaselines as mb
from mielib import train, views
from mielib.clip import ArrayFrames, Clip, ClipSet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = ("a", "b")


def _clips(n=8, frames=10, size=32, seed=0):
    """Clips in memory: from onset (0) to apex (5) the left half of the face brightens for class
    "a", the right half for class "b", and fades back by the offset."""
    rng = np.random.default_rng(seed)
    ramp = np.array([0, 16, 32, 48, 64, 80, 60, 40, 20, 0][:frames], dtype=np.int64)
    out = []
    for k in range(n):
        label = CLASSES[k % 2]
        arr = np.repeat(rng.integers(70, 110, (1, size, size, 3)), frames, axis=0)
        half = slice(0, size // 2) if label == "a" else slice(size // 2, size)
        arr[:, :, half] += ramp[:, None, None, None]
        arr = np.clip(arr + rng.integers(0, 4, arr.shape), 0, 255).astype(np.uint8)
        out.append(Clip("casme2", f"s{k // 2}", f"c{k}", ArrayFrames(arr), 200.0, 0, 5, frames - 1, label, None))
    return ClipSet("casme2", out, [], "sim")


def _sample(name, size, frames, batch=2):
    kind = mb.BASELINES[name][1]
    if kind == "apex":
        return torch.rand(batch, 3, size, size)
    return torch.rand(batch, 6 if kind == "frame_flow_stack" else 3, frames, size, size)


def _model(name, n_classes, size, frames, **kw):
    cls, kind, _ = mb.BASELINES[name]
    shape = dict(size=size) if kind == "apex" else dict(size=size, frames=frames)
    return cls(n_classes, **shape, **kw)


# ---------------------------------------------------------------------------------------------
# Optical strain and the ELRCN view

def test_optical_strain_of_linear_flows_matches_the_hand_computed_strain():
    spacing = 2.0
    rows, cols = torch.meshgrid(torch.arange(5.0), torch.arange(6.0), indexing="ij")
    x, y = cols * spacing, rows * spacing
    # u = 0.1 x + 0.2 y, v = 0.4 x - 0.3 y: exx 0.1, eyy -0.3, exy (0.2 + 0.4)/2 = 0.3,
    # strain sqrt(0.01 + 0.09 + 2 * 0.09) = sqrt(0.28), on the border too.
    flow = torch.stack([0.1 * x + 0.2 * y, 0.4 * x - 0.3 * y, torch.zeros_like(x)])  # a magnitude channel, ignored
    strain = mb.optical_strain(flow, spacing)
    assert strain.shape == (5, 6)
    assert torch.allclose(strain, torch.full((5, 6), math.sqrt(0.28)), atol=1e-6)
    # A rigid rotation (u = -0.2 y, v = 0.2 x) and a translation do not strain the face.
    rotation = torch.stack([-0.2 * y, 0.2 * x])
    translation = torch.stack([torch.full_like(x, 3.0), torch.full_like(x, -1.0)])
    assert torch.allclose(mb.optical_strain(torch.stack([rotation, translation])), torch.zeros(2, 5, 6), atol=1e-6)
    with pytest.raises(ValueError, match="C >= 2"):
        mb.optical_strain(torch.zeros(1, 5, 6))


def test_frame_flow_stack_stacks_frames_flows_and_their_strain():
    clips = _clips(n=2)
    kw = dict(size=16, labels=CLASSES, label_attr="label", n_frames=4)
    x, label = mb.FrameFlowStack(clips, **kw)[1]
    assert x.shape == (6, 4, 16, 16) and x.dtype == torch.float32 and label == 1
    frames, _ = views.Stack(clips, **kw)[1]
    flows, _ = views.FlowStack(clips, **kw)[1]
    assert torch.equal(x[:3], frames) and torch.equal(x[3:5], flows)
    # Flows are in pixels of a 128-px face: at 16 px the grid step is 8 of them.
    assert torch.allclose(x[5], mb.optical_strain(flows.transpose(0, 1), 128 / 16))
    assert float(flows[:, 1:3].abs().max()) > 0  # brightening between onset and offset: real flow, not zeros


# ---------------------------------------------------------------------------------------------
# Capsules

def test_squash_keeps_the_direction_and_maps_norm_3_to_0_9():
    v = mb.squash(torch.tensor([[1.0, 2.0, 2.0], [0.0, 0.0, 0.0]]))
    assert torch.allclose(v[0], torch.tensor([0.3, 0.6, 0.6]), atol=1e-6)  # 9/10 of the unit vector (1, 2, 2)/3
    assert torch.equal(v[1], torch.zeros(3))


def test_dynamic_routing_on_a_hand_computed_example():
    # Two input capsules predicting two 2-D output capsules.
    u_hat = torch.tensor([[[[4.0, 0.0], [0.0, 0.0]],
                           [[2.0, 0.0], [0.0, 8.0]]]])  # [input i][output j]
    # One iteration: uniform coupling, s_0 = (3, 0) -> |v_0| = 9/10; s_1 = (0, 4) -> |v_1| = 16/17.
    assert torch.allclose(mb.route(u_hat, 1), torch.tensor([[[0.9, 0.0], [0.0, 16 / 17]]]), atol=1e-6)
    # Two: logits b_ij = u_hat_ij . v_j = 3.6, 0 (input 0) and 1.8, 128/17 (input 1).
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731  (a two-way softmax)
    s0 = 4 * sig(3.6) + 2 * sig(1.8 - 128 / 17)
    s1 = 8 * sig(128 / 17 - 1.8)
    expected = torch.tensor([[[s0 ** 2 / (1 + s0 ** 2), 0.0], [0.0, s1 ** 2 / (1 + s1 ** 2)]]])
    assert torch.allclose(mb.route(u_hat, 2), expected, atol=1e-6)


def test_margin_loss_on_a_hand_computed_example():
    lengths = torch.tensor([[0.95, 0.3, 0.05], [0.5, 0.2, 0.6]])
    y = torch.tensor([0, 2])
    # Sample 1: 0 + 0.5 * (0.2^2 + 0) = 0.02. Sample 2: 0.3^2 + 0.5 * (0.4^2 + 0.1^2) = 0.175.
    assert float(mb.margin_loss(lengths, y)) == pytest.approx((0.02 + 0.175) / 2)
    model = mb.CapsuleNet(3, seed=0)
    assert float(model.criterion(lengths.log(), y)) == pytest.approx(0.0975, rel=1e-6)


def test_capsule_routing_stays_in_float32_under_mixed_precision():
    model = mb.CapsuleNet(3, width=4, seed=0).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        caps = model.capsules(torch.rand(2, 3, 32, 32))
    assert caps.dtype == torch.float32 and bool(torch.isfinite(caps).all())


def test_capsulenet_scores_are_log_capsule_lengths():
    model = mb.CapsuleNet(3, seed=0).eval()
    apex = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        scores, caps = model(apex), model.capsules(apex)
    assert caps.shape == (2, 3, 16)
    assert torch.allclose(scores.exp(), caps.norm(dim=-1), atol=1e-6) and bool((scores < 0).all())


# ---------------------------------------------------------------------------------------------
# Models: shapes, the factory contract, the views

@pytest.mark.parametrize("name", list(mb.BASELINES))
@pytest.mark.parametrize("size, frames", [(32, 8), (64, 16)])
def test_output_shapes(name, size, frames):
    model = _model(name, 5, size, frames, seed=0).eval()
    with torch.no_grad():
        assert model(_sample(name, size, frames)).shape == (2, 5)
    assert model.n_classes == 5 and model.inputs == mb.BASELINES[name][1]
    with pytest.raises(ValueError, match="built for"):
        model(_sample(name, size + 8, frames))


@pytest.mark.parametrize("name", list(mb.BASELINES))
def test_a_seed_fixes_the_weights_without_touching_the_global_rng(name):
    state = torch.random.get_rng_state()
    a, b = (_model(name, 3, 32, 8, width=4, seed=7) for _ in range(2))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_view_gives_each_baseline_its_input():
    clips = _clips(n=2)
    for name, (cls, kind, description) in mb.BASELINES.items():
        ds = mb.view(name, clips, size=32, labels=CLASSES, n_frames=8, label_attr="label")
        x, label = ds[0]
        assert x.shape == _sample(name, 32, 8, batch=1).shape[1:] and label == 0
        assert cls.inputs == kind and "et al." in description
    assert type(mb.view("ELRCN", clips, size=32, labels=CLASSES, n_frames=8, label_attr="label")) is mb.FrameFlowStack
    with pytest.raises(ValueError, match="unknown baseline 'MER-GCN'"):
        mb.view("MER-GCN", clips, size=32, labels=CLASSES, n_frames=8)


@pytest.mark.parametrize("name", list(mb.BASELINES))
def test_each_baseline_learns_two_well_separated_classes(name):
    ds = mb.view(name, _clips(), size=32, labels=CLASSES, n_frames=8, label_attr="label", cache=True)
    model = _model(name, 2, 32, 8, seed=0)
    history = train.fit(model, ds, epochs=20, seed=0, test=ds, batch_size=8, lr=3e-3, device="cpu", progress=False)
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.test_pred[-1].tolist() == [0, 1] * 4
