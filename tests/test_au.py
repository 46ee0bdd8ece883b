"""The AU vocabulary, validation, expert tables and label mappings."""

import numpy as np
import pytest

from mielib import au


def test_vocabulary_matches_openface_order():
    assert au.CODES == (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)
    assert au.OPENFACE_COLUMNS[0] == "AU01_r" and au.OPENFACE_COLUMNS[-1] == "AU45_r"
    assert set(au.NAMES) == set(au.CODES)
    assert au.NAMES[12] == "Lip corner puller"


@pytest.mark.parametrize("name", [12, "12", "AU12", "au12", "AU12_r", " AU12 "])
def test_index_accepts_spellings(name):
    assert au.index(name) == au.CODES.index(12)


def test_index_rejects_unknown_au():
    with pytest.raises(ValueError, match="unknown AU 'AU11'"):
        au.index("AU11")


def test_validate_names_the_bad_entry():
    z = np.zeros(17)
    z[au.index(12)] = 1.4
    with pytest.raises(ValueError, match=r"AU12 = 1.4 .*\[0.0, 1.0\]"):
        au.validate(z, where="sample 3")
    z[au.index(12)] = np.nan
    with pytest.raises(ValueError, match="sample 3: AU12 = nan"):
        au.validate(z, where="sample 3")
    with pytest.raises(ValueError, match="17 entries"):
        au.validate(np.zeros(16))
    with pytest.raises(ValueError, match="OpenFace's 0..5 scale"):
        au.validate(np.full(17, 3.0))


def test_validate_stack_reports_row():
    zs = np.zeros((4, 17))
    zs[2, 0] = -0.1
    with pytest.raises(ValueError, match=r"row \(2,\) AU01"):
        au.validate(zs)
    assert au.validate(np.zeros((4, 17))).dtype == np.float32


def test_vector_and_openface_scale():
    z = au.vector({"AU12": 0.3}, AU06=0.2)
    assert z[au.index(12)] == pytest.approx(0.3) and z[au.index(6)] == pytest.approx(0.2)
    assert z.sum() == pytest.approx(0.5)
    assert au.from_openface(np.full(17, 2.5))[0] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        au.from_openface(np.full(17, 6.0))


def test_miex_map_matches_datasets_md():
    table = au.expert_table("miex")
    assert table["happiness"][au.index(12)] == 1.0
    assert table["happiness"][au.index(6)] == 0.5
    assert table["disgust"][au.index(17)] == 1.0
    assert table["contempt"][au.index(14)] == 1.0
    assert set(au.expert_emotions("negative")) == {"sadness", "fear", "anger", "disgust", "contempt"}
    assert au.expert_emotions("positive") == ("happiness",)
    assert set(au.expert_emotions("negative", "du2014")) == {"sadness", "fear", "anger", "disgust"}


def test_expert_apex_scales_probabilities():
    z = au.expert_apex("happy", 0.2)
    assert z[au.index(12)] == pytest.approx(0.2)
    assert z[au.index(6)] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="has no 'tense'"):
        au.expert_apex("tense", 0.2)


@pytest.mark.parametrize("dataset,label,expected", [
    ("casme2", "repression", "negative"),
    ("casme2", "disgust", "negative"),
    ("casme2", "fear", None),          # CASME II: fear and sadness dropped
    ("casme2", "sadness", None),
    ("casme2", "others", None),
    ("casme2", "happiness", "positive"),
    ("samm", "Anger", "negative"),
    ("samm", "Contempt", "negative"),
    ("samm", "Sadness", "negative"),
    ("samm", "Other", None),
    ("smic", "ne", "negative"),
    ("smic", "sur", "surprise"),
    ("ckplus", "sadness", "negative"),  # semantic mapping, not the MiE-X code's bug
    ("ckplus", "neutral", None),
    ("casme", "amusement", "positive"),
])
def test_megc3_rules(dataset, label, expected):
    assert au.to_megc3(dataset, label) == expected


def test_unknown_label_is_an_error():
    with pytest.raises(ValueError, match="unknown emotion label 'joy'"):
        au.to_megc3("casme2", "joy")
    with pytest.raises(ValueError, match="not a smic class"):
        au.to_megc3("smic", "anger")
