"""OpenFace CSV readouts: header spacing, scaling, validation, failed frames, row order, locating."""

import numpy as np
import pytest

from dataset_fixtures import openface_csv
from mielib import au, openface


def _aus(t: int) -> np.ndarray:
    """T x 17 on OpenFace's 0..5 scale: AU12 = row index, AU04 = 5 - row index."""
    a = np.zeros((t, 17))
    a[:, au.index(12)] = np.arange(t)
    a[:, au.index(4)] = 5 - np.arange(t)
    return a


@pytest.mark.parametrize("spaced", [True, False])
def test_reads_both_separators_and_scales_to_unit_interval(tmp_path, spaced):
    path = openface_csv(tmp_path / "clip.csv", _aus(4), success=[1, 0, 1, 1], spaced=spaced)
    if spaced:
        assert path.read_text().splitlines()[0].split(",")[5] == " pose_Tx"  # the old header style
    r = openface.read(path)
    assert r.flavour == "sequence" and len(r) == 4
    assert r.aus.shape == (4, 17) and r.aus.dtype == np.float32
    np.testing.assert_allclose(r.aus[:, au.index(12)], [0, 0.2, 0.4, 0.6], atol=1e-6)
    np.testing.assert_allclose(r.aus[:, au.index(4)], [1.0, 0.8, 0.6, 0.4], atol=1e-6)
    assert r.failed == [1]
    assert r.success.tolist() == [True, False, True, True]
    assert r.frame.tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(r.confidence, 0.98)


def test_selects_au_columns_by_name_not_position(tmp_path):
    path = openface_csv(tmp_path / "clip.csv", _aus(2))
    # Move the AU block to the front: the values read must not change.
    lines = [line.split(", ") for line in path.read_text().splitlines()]
    start = lines[0].index("AU01_r")
    shuffled = [row[start:start + 17][::-1] + row[:start] + row[start + 17:] for row in lines]
    path.write_text("\n".join(", ".join(row) for row in shuffled) + "\n")
    np.testing.assert_allclose(openface.read(path).aus[:, au.index(12)], [0, 0.2], atol=1e-6)


def test_tiny_overshoot_is_clipped_but_larger_values_fail_naming_line_and_column(tmp_path):
    a = _aus(3).astype(object)
    a[1, au.index(12)] = 5.02  # within TOLERANCE: round-off
    a[2, au.index(1)] = -0.01
    r = openface.read(openface_csv(tmp_path / "ok.csv", a))
    assert r.aus[1, au.index(12)] == 1.0 and r.aus[2, au.index(1)] == 0.0

    a[1, au.index(12)] = 5.3
    path = openface_csv(tmp_path / "over.csv", a)
    with pytest.raises(ValueError, match=r"over\.csv: line 3, column AU12_r = 5\.3"):
        openface.read(path)


def test_nan_and_text_cells_fail_naming_line_and_column(tmp_path):
    a = _aus(3).astype(object)
    a[2, au.index(25)] = ""
    with pytest.raises(ValueError, match=r"nan\.csv: line 4, column AU25_r"):
        openface.read(openface_csv(tmp_path / "nan.csv", a))
    a[2, au.index(25)] = "abc"
    with pytest.raises(ValueError, match=r"text\.csv: line 4, column AU25_r = 'abc' is not a number"):
        openface.read(openface_csv(tmp_path / "text.csv", a))


def test_missing_au_columns_are_named(tmp_path):
    path = openface_csv(tmp_path / "clip.csv", _aus(2))
    text = path.read_text().replace("AU45_r", "AU45_x")
    path.write_text(text)
    with pytest.raises(ValueError, match=r"clip\.csv: missing AU intensity columns AU45_r"):
        openface.read(path)


def test_image_flavour_and_landmarks(tmp_path):
    marks = np.stack([np.stack([np.arange(68.0), np.arange(68.0) + k], 1) for k in range(2)])
    r = openface.read(openface_csv(tmp_path / "a.csv", _aus(2), flavour="image", landmarks=marks))
    assert r.flavour == "image" and r.frame is None
    assert r.success.all() and r.failed == []
    assert r.landmarks.shape == (2, 68, 2)
    np.testing.assert_allclose(r.landmarks[1, :, 1], np.arange(68.0) + 1)


def test_for_frames_reorders_openface_name_order_to_frame_order(tmp_path):
    names = ["img8.jpg", "img9.jpg", "img10.jpg", "img11.jpg"]  # numeric order
    by_name = sorted(names)  # what FeatureExtraction -fdir processed: img10, img11, img8, img9
    a = np.zeros((4, 17))
    a[:, au.index(12)] = [int(n[3:-4]) / 5 for n in by_name]  # each row tagged by its frame number
    path = openface_csv(tmp_path / "clip.csv", a)
    r = openface.for_frames(path, names)
    np.testing.assert_allclose(r.aus[:, au.index(12)] * 25, [8, 9, 10, 11], atol=1e-4)
    assert openface.for_frames(path, names, order="frame").aus[0, au.index(12)] == pytest.approx(0.4)
    with pytest.raises(ValueError, match=r"clip\.csv: 4 rows but the clip has 3 frames"):
        openface.for_frames(path, names[:3])
    with pytest.raises(ValueError, match="readout order"):
        openface.for_frames(path, names, order="time")


def test_locate_follows_the_documented_rule(tmp_path):
    root = tmp_path / "data"
    clip = root / "Cropped" / "sub01" / "EP02_01f"
    clip.mkdir(parents=True)
    img = root / "faces" / "a.jpg"
    img.parent.mkdir(parents=True)
    img.write_bytes(b"")
    assert openface.locate(clip, root) is None
    under_root = openface_csv(root / "openface" / "Cropped" / "sub01" / "EP02_01f.csv", _aus(1))
    assert openface.locate(clip, root) == under_root
    assert openface.locate(clip) is None  # without a root only the beside rule applies
    beside = openface_csv(root / "Cropped" / "sub01" / "EP02_01f.csv", _aus(1))
    assert openface.locate(clip, root) == beside  # beside wins
    assert openface.locate(img, root) is None
    img_csv = openface_csv(root / "openface" / "faces" / "a.csv", _aus(1), flavour="image")
    assert openface.locate(img, root) == img_csv
    assert openface.locate(img) is None
    beside_img = openface_csv(root / "faces" / "a.csv", _aus(1), flavour="image")
    assert openface.locate(img, root) == beside_img


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        openface.read(tmp_path / "nope.csv")


@pytest.mark.parametrize("spaced", [True, False])
def test_duplicated_column_and_header_only_csv_are_errors_naming_the_file(tmp_path, spaced):
    path = openface_csv(tmp_path / "clip.csv", np.ones((3, 17)), spaced=spaced)
    lines = path.read_text().splitlines()
    sep = ", " if spaced else ","
    # A second AU12_r column (e.g. two exports joined): pandas would call it AU12_r.1 and read the first.
    path.write_text("\n".join(line + sep + ("AU12_r" if i == 0 else "4.5") for i, line in enumerate(lines)) + "\n")
    with pytest.raises(ValueError, match=r"clip\.csv: column\(s\) AU12_r appear more than once"):
        openface.read(path)
    path.write_text(lines[0] + "\n")
    with pytest.raises(ValueError, match=r"clip\.csv: a header and no rows"):
        openface.read(path)
