"""The explorer widget and its pure helpers, driven from Python (test_browser.py drives it in a browser)."""

import numpy as np
import pytest

from mielib import au, face, sources, widgets

SIZE = 48  # small faces keep these tests fast
SPECS = ["emotionet:0", "celeba:1"]


def _pixels(png: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.fixture(scope="module")
def ex():
    return widgets.explorer(size=SIZE, identities=SPECS, seed=3)


def test_default_identities_mix_both_pools_and_end_with_the_astronaut():
    specs = widgets.default_identities(6)
    assert len(specs) == 6 and specs[-1] == "astronaut"
    assert {s.split(":")[0] for s in specs[:-1]} == set(face.POOLS)
    assert widgets.default_identities(1) == ["astronaut"]
    with pytest.raises(ValueError, match="at least one"):
        widgets.default_identities(0)


def test_identity_specs_load_faces_and_bad_ones_are_named():
    f = widgets.load_identity("celeba:2")
    assert f.pool == "celeba" and f.index == 2
    assert widgets.identity_label("celeba:2") == "celeba #2"
    assert widgets.identity_label("astronaut") == "astronaut (photo)"
    for bad in ("flickr:1", "emotionet", "emotionet:x"):
        with pytest.raises(ValueError, match=repr(bad)):
            widgets.load_identity(bad)


def test_difference_amplifies_the_largest_channel_change():
    onset = np.zeros((4, 5, 3), np.uint8)
    apex = onset.copy()
    apex[1, 2] = (3, 10, 0)  # a change of 10 grey levels in one channel
    diff = widgets.difference(onset, apex, gain=5)
    lut = widgets._diff_lut()
    assert diff.shape == (4, 5, 3) and diff.dtype == np.uint8
    assert np.array_equal(diff[1, 2], lut[50])  # max(|3|, |10|, 0) * 5
    assert (diff[0, 0] == lut[0]).all()
    assert np.array_equal(widgets.difference(onset, apex, gain=100)[1, 2], lut[255])  # clipped
    with pytest.raises(ValueError, match="gain"):
        widgets.difference(onset, apex, gain=0)
    with pytest.raises(ValueError, match="one size"):
        widgets.difference(onset, apex[:3])


def test_draw_micro_is_seeded_and_draws_like_z_exp():
    a = [widgets.draw_micro(np.random.default_rng(7)) for _ in range(2)]
    assert a[0][0] == a[1][0] and np.array_equal(a[0][1], a[1][1])
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        emotion, z = widgets.draw_micro(rng)
        seen.add(emotion)
        on = z > 0
        assert (au.expert_table("miex")[emotion][on] > 0).all(), f"{emotion}: an AU outside the table is on"
        assert ((z[on] >= sources.MU) & (z[on] <= sources.NU)).all()
    assert seen == set(au.expert_table("miex"))


def test_explorer_has_a_labelled_slider_and_a_dom_hook_per_au(ex):
    assert list(ex.sliders) == list(au.LABELS)
    s = ex.sliders["AU12"]
    assert s.description == "AU12 Lip corner puller" and (s.min, s.max) == (0.0, 1.0)
    assert "mielib-au-AU12" in s._dom_classes
    assert "mielib-apex" in ex.apex_image._dom_classes and "mielib-explorer" in ex._dom_classes


def test_moving_an_au_slider_rerenders_the_apex_only(ex, monkeypatch):
    ex.reset()
    onset0, apex0 = ex.onset_image.value, ex.apex_image.value
    assert np.array_equal(_pixels(apex0), _pixels(onset0))
    ex.sliders["AU12"].value = 1.0
    assert ex.onset_image.value == onset0
    assert ex.apex_image.value != apex0
    assert "AU12=1.00" in ex.description.value
    np.testing.assert_array_equal(_pixels(ex.apex_image.value), face.render(face.identity(0), ex.z, SIZE))

    calls = []
    real = face.render
    monkeypatch.setattr(face, "render", lambda *a, **k: calls.append(1) or real(*a, **k))
    ex.set_z(au.vector(AU01=0.3, AU04=0.5, AU15=0.2))  # three sliders move, one render
    assert len(calls) == 1


def test_emotion_presets_follow_the_expert_table(ex):
    z = ex.apply_emotion("surprise", widgets.MACRO)
    np.testing.assert_allclose(z, au.expert_apex("surprise", widgets.MACRO), atol=0.005)
    ex.intensity.value = widgets.MICRO
    happy = next(b for b in ex.emotion_buttons.children if "mielib-emotion-happiness" in b._dom_classes)
    happy.click()
    np.testing.assert_allclose(ex.z, au.expert_apex("happiness", widgets.MICRO), atol=0.005)
    assert "happiness" in ex.description.value
    ex.table.value = "du2014"  # its emotions replace the buttons (du2014 has no contempt)
    names = [b.description for b in ex.emotion_buttons.children]
    assert names == list(au.expert_table("du2014"))
    ex.table.value = "miex"


def test_random_button_reproduces_with_the_seed_and_reset_returns_to_neutral(ex):
    other = widgets.explorer(size=SIZE, identities=SPECS, seed=3)
    ex.rng = np.random.default_rng(3)  # the module fixture's generator has moved on
    ex.random_button.click()
    emotion, z = other.random_micro()
    assert emotion in ex.description.value
    np.testing.assert_array_equal(ex.z, z)
    ex.reset_button.click()
    assert not ex.z.any() and "neutral" in ex.description.value


def test_gain_changes_only_the_difference_and_identity_changes_the_onset(ex):
    ex.set_z(au.vector(AU12=0.2))
    apex, diff = ex.apex_image.value, ex.diff_image.value
    ex.gain.value = 15.0
    assert ex.apex_image.value == apex and ex.diff_image.value != diff
    onset = ex.onset_image.value
    ex.identity.value = "celeba:1"
    assert ex.onset_image.value != onset
    np.testing.assert_array_equal(ex.frames()[0], face.render(face.identity(1, pool="celeba"), None, SIZE))
    ex.identity.value = "emotionet:0"


def test_static_fallback_shows_onset_apex_and_difference(ex):
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    import base64

    strip = _pixels(base64.b64decode(bundle["image/png"]))
    assert strip.shape == (SIZE, 3 * SIZE, 3)


def test_explorer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown identity"):
        widgets.explorer(size=SIZE, identities=["mars:1"])
    with pytest.raises(ValueError, match="expert table"):
        widgets.explorer(size=SIZE, identities=SPECS, table="nope")
    with pytest.raises(ValueError, match="AU vector"):
        widgets.explorer(size=SIZE, identities=SPECS).set_z([0.5] * 16)


def test_grid_frames_and_figure_shapes():
    zs = np.stack([au.expert_apex(e, widgets.MICRO) for e in ("happiness", "surprise")])
    onset, apex, diff = widgets.grid_frames(SPECS, zs, size=SIZE)
    assert onset.shape == (2, SIZE, SIZE, 3) and apex.shape == diff.shape == (2, 2, SIZE, SIZE, 3)
    np.testing.assert_array_equal(apex[1, 0], face.render(face.identity(1, pool="celeba"), zs[0], SIZE))
    assert (apex != onset[:, None]).any(axis=(2, 3, 4)).all(), "every micro apex differs from its onset"
    fig = widgets.grid_figure(SPECS, emotions=("happiness", "surprise"), size=SIZE)
    assert len(fig.axes) == 2 * (1 + 2 * 2)
    assert "happiness (positive)" in fig.axes[1].get_title()
