"""Real loaders on fixture trees in each documented layout, identity pools and `data inspect`."""

import json
import sys
import types

import numpy as np
import pytest

import dataset_fixtures as fx
import mielib
from mielib import au, datasets
from mielib.clip import ClipSet, FrameError


def _by_id(clipset):
    return {c.clip_id: c for c in clipset}


def _skip_reasons(clipset):
    return {s.item: s.reason for s in clipset.skipped}


def _value(clip, position):
    """The pixel value of a frame (the fixtures encode the frame number in it)."""
    return int(round(float(np.asarray(clip.frames[position]).mean())))


# ---------------------------------------------------------------------------------------------
# CASME II

def test_casme2_raw_counts_positions_and_quirks(tmp_path):
    cs = datasets.load("casme2", "real", fx.casme2(tmp_path))
    assert cs.source == "real" and cs.name == "casme2"
    assert len(cs) == 5 and cs.subjects == ["sub01", "sub02", "sub03"] and cs.skipped == []
    clips = _by_id(cs)
    ep = clips["EP02_01f"]  # sheet: onset 46, apex 49, offset 52; subject stored as the integer 1
    assert (ep.subject, ep.onset, ep.apex, ep.offset, ep.n_frames) == ("sub01", 0, 3, 6, 7)
    assert ep.meta["first_frame"] == 46 and ep.meta["apex_frame"] == 49
    assert ep.frames.paths[ep.apex].name == "img49.jpg" and abs(_value(ep, ep.apex) - 49) <= 2
    assert (ep.label, ep.label3, ep.aus, ep.fps) == ("happiness", "positive", "12", 200.0)
    # img8..img12: sorted numerically (img10 after img9); apex `/` -> the middle frame
    slash = clips["EP09f"]
    assert [p.name for p in slash.frames.paths] == ["img8.jpg", "img9.jpg", "img10.jpg", "img11.jpg", "img12.jpg"]
    assert slash.apex == 2 and slash.meta["apex_annotated"] is False and slash.meta["apex_frame"] == 10
    assert ep.meta["apex_annotated"] is True
    zero = clips["EP01_2"]  # OffsetFrame 0 -> the folder's last frame (25)
    assert zero.offset == 5 and zero.meta["offset_frame"] == 25 and zero.meta["offset_annotated"] is False
    assert clips["EP03_02"].label3 is None and clips["EP03_02"].aus == "14"  # CASME II sadness is dropped
    assert clips["EP04_01"].label3 is None and clips["EP04_01"].aus is None


def test_casme2_cropped_variant_ignores_stray_files(tmp_path):
    root = fx.casme2(tmp_path, variant="cropped")
    assert (root / "Cropped" / "sub01" / "Desktop - Shortcut.lnk").exists()
    (root / "Cropped" / "sub02" / "EP09f" / "Thumbs.db").write_bytes(b"\0")
    cs = datasets.load_casme2(root)
    assert len(cs) == 5 and cs.skipped == []
    clip = _by_id(cs)["EP09f"]
    assert clip.frames.paths[0].name == "reg_img8.jpg" and clip.meta["variant"] == "cropped"
    with pytest.raises(FileNotFoundError, match=r"looked for CASME2_RAW_selected/\); found: CASME2-coding"):
        datasets.load_casme2(root, variant="raw")


def test_casme2_reports_every_bad_sample_by_name(tmp_path):
    rows = fx.CASME2_ROWS + [
        ("04", "EP05_01", 12, 10, 14, None, "happiness", range(10, 15)),  # onset after apex: repaired
        ("04", "EP06_01", 3, 4, 6, None, "joyful", range(3, 7)),  # unknown label
        ("05", "EP07_01", 3, 4, 6, None, "disgust", range(3, 7)),  # frame 5 deleted below
        ("05", "EP08_01", 3, 4, 6, None, "disgust", range(3, 7)),  # frame 4 corrupted below
        ("06", "EP10_01", None, 4, 6, None, "disgust", range(3, 7)),  # blank onset
        ("06", "EP11_01", 3, 8, 6, None, "disgust", range(3, 7)),  # apex after offset: repaired
        ("06", "EP13_01", 6, 6, 4, None, "disgust", range(3, 7)),  # onset after offset, both on disk
        ("07", "EP12_01", 1, 2, 3, None, "disgust", range(0)),  # no folder on disk
        (1, "EP02_01f", 46, 49, 52, "12", "happiness", range(46, 53)),  # row 2 again
    ]
    root = fx.casme2(tmp_path, rows=rows)
    frames = root / "CASME2_RAW_selected"
    (frames / "sub05" / "EP07_01" / "img5.jpg").unlink()
    fx.corrupt(frames / "sub05" / "EP08_01" / "img4.jpg")
    fx.frames(frames / "sub01" / "EP99_01", lambda n: f"img{n}.jpg", range(1, 3))  # not in the sheet

    cs = datasets.load_casme2(root)
    reasons = _skip_reasons(cs)
    assert "onset 6 is after offset 4 and both frames are on disk" in reasons["sub06/EP13_01"]
    assert "CASME2-coding-20140508.xlsx row 8" in reasons["sub04/EP06_01"]
    assert "unknown emotion label 'joyful'" in reasons["sub04/EP06_01"]
    assert reasons["sub05/EP07_01"].endswith("sub05/EP07_01/img5.jpg")
    assert "OnsetFrame is blank" in reasons["sub06/EP10_01"]
    # Errata are kept with a documented repair (the middle frame), flagged in meta.
    clips = _by_id(cs)
    assert clips["EP05_01"].meta["apex_frame"] == 13 and clips["EP05_01"].meta["annotation_repaired"]
    assert "onset 12 is after apex 10" in clips["EP05_01"].meta["repairs"][0]
    assert clips["EP11_01"].meta["apex_frame"] == 4
    assert clips["EP11_01"].meta["repairs"] == ["apex 8 is after offset 6: the middle frame 4 used"]
    assert "no subject folder sub07 or sub7" in reasons["sub07/EP12_01"]
    assert "has no row in CASME2-coding-20140508.xlsx" in reasons["sub01/EP99_01"]
    assert "row 15 repeats CASME2-coding-20140508.xlsx row 2" in reasons["sub01/EP02_01f"]
    # Without verify the corrupt frame only exists; reading it names the file.
    corrupt = _by_id(cs)["EP08_01"]
    with pytest.raises(FrameError, match=r"EP08_01/img4\.jpg: not a readable image"):
        corrupt.frames[1]
    assert len(cs) == 8 and len(cs.skipped) == 7

    checked = datasets.load_casme2(root, verify=True)
    assert "EP08_01" not in _by_id(checked)
    assert "EP08_01/img4.jpg: corrupt or unreadable image" in _skip_reasons(checked)["sub05/EP08_01"]


def test_casme2_structural_errors_name_file_and_column(tmp_path):
    with pytest.raises(FileNotFoundError, match="casme2 root .*nowhere does not exist"):
        datasets.load_casme2(tmp_path / "nowhere")
    root = fx.casme2(tmp_path / "a")
    with pytest.raises(ValueError, match=r"no sheet 'Codes'; its sheets are Sheet1"):
        datasets.load_casme2(root, sheet_name="Codes")
    header = [h if h != "OffsetFrame" else "End" for h in fx.CASME2_HEADER]
    fx.workbook(root / "CASME2-coding-20140508.xlsx", [header, [1, "EP02_01f", None, 46, 49, 52, None, 12, "happiness"]])
    with pytest.raises(ValueError, match=r"CASME2-coding-20140508\.xlsx \(sheet 'Sheet1'\): missing column 'OffsetFrame'; "
                                         r"found columns: 'Subject', 'Filename', 'Unnamed: 2'"):
        datasets.load_casme2(root)
    (root / "CASME2-coding-20140508.xlsx").unlink()
    with pytest.raises(FileNotFoundError, match=r"no CASME II coding sheet .*found: CASME2_RAW_selected/, readme.pdf"):
        datasets.load_casme2(root)


def test_casme2_attaches_readouts_in_frame_order(tmp_path):
    root = fx.casme2(tmp_path)
    # EP09f: frames img8..img12; OpenFace -fdir saw them in name order img10, img11, img12, img8, img9.
    names = sorted(f"img{n}.jpg" for n in range(8, 13))
    a = np.zeros((5, 17))
    a[:, au.index(12)] = [int(n[3:-4]) / 5 for n in names]
    fx.openface_csv(root / "CASME2_RAW_selected" / "sub02" / "EP09f.csv", a, success=[1, 1, 0, 1, 1])
    # EP02_01f: found under root/openface/<relative path>.csv, with one row too few.
    fx.openface_csv(root / "openface" / "CASME2_RAW_selected" / "sub01" / "EP02_01f.csv", np.zeros((6, 17)))
    cs = datasets.load_casme2(root)
    clip = _by_id(cs)["EP09f"]
    np.testing.assert_allclose(clip.readout[:, au.index(12)] * 25, [8, 9, 10, 11, 12], atol=1e-4)
    assert clip.meta["readout_failed_frames"] == [4]  # img12 (row 3 in name order) failed
    assert "EP02_01f.csv: 6 rows but the clip has 7 frames" in _skip_reasons(cs)["sub01/EP02_01f"]
    assert _by_id(datasets.load_casme2(root, readouts=False))["EP02_01f"].readout is None
    with pytest.raises(ValueError, match="readout_order 'time'"):
        datasets.load_casme2(root, readout_order="time")


# ---------------------------------------------------------------------------------------------
# SAMM, SMIC, CK+, MMEW, CASME, Oulu-CASIA

def test_samm_preamble_padding_and_grayscale(tmp_path):
    cs = datasets.load("samm", "real", fx.samm(tmp_path))
    assert len(cs) == 3 and cs.subjects == ["006", "007"] and cs.skipped == []
    clips = _by_id(cs)
    first = clips["006_1_2"]
    assert first.meta["sheet_row"] == 15  # header on spreadsheet row 14, data from row 15
    assert (first.onset, first.apex, first.offset, first.meta["first_frame"]) == (0, 2, 4, 5562)
    assert first.frames.paths[0].name == "006_05562.jpg" and first.label3 == "negative"
    padded4 = clips["007_3_1"]  # subject stored as the integer 7; 4-digit names cross 999 -> 1000
    assert [p.name for p in padded4.frames.paths] == ["007_0998.jpg", "007_0999.jpg", "007_1000.jpg", "007_1001.jpg", "007_1002.jpg"]
    assert padded4.apex == 2 and padded4.meta["inducement"] == "3" and padded4.aus == "(R6 or R12)+R15"
    assert clips["006_5_1"].label == "others" and clips["006_5_1"].label3 is None
    assert padded4.frames[0].shape == (8, 8, 3)  # grayscale replicated to RGB


def test_samm_header_found_without_preamble_and_missing_column_named(tmp_path):
    root = fx.samm(tmp_path)
    header = [h for h in fx.SAMM_HEADER if h != "Apex Frame"]
    fx.workbook(root / "SAMM_Micro_FACS_Codes_v2.xlsx", [["preamble"], header])
    with pytest.raises(ValueError, match=r"missing column 'ApexFrame'; found columns: 'Subject', 'Filename', 'Inducement Code'"):
        datasets.load_samm(root)


def test_smic_folder_labels_unpadded_subjects_and_releases(tmp_path):
    cs = datasets.load_smic(fx.smic(tmp_path))
    assert len(cs) == 4 and cs.subjects == ["s1", "s11", "s2"] and cs.skipped == []
    assert [c.subject for c in cs] == ["s1", "s1", "s2", "s11"]  # natural order on disk
    clips = _by_id(cs)
    ne = clips["s1_ne_01"]
    assert (ne.onset, ne.apex, ne.offset, ne.fps) == (0, 2, 4, 100.0)
    assert ne.meta["apex_annotated"] is False and ne.label == "negative" and ne.label3 == "negative"
    assert clips["s2_sur_01"].frames.paths[0].name == "reg_00001.bmp"
    assert clips["s11_ne_02"].meta["first_frame"] == 3 and clips["s1_po_01"].label3 == "positive"


def test_smic_mixed_raw_and_cropped_frames_need_a_variant(tmp_path):
    root = fx.smic(tmp_path)
    folder = root / "HS" / "s1" / "micro" / "negative" / "s1_ne_01"
    for n in range(1, 6):
        fx.image(folder / f"reg_image{n:06d}.bmp", value=200)
    reasons = _skip_reasons(datasets.load_smic(root))
    assert "mixes raw and cropped (reg_) frames" in reasons["s1/s1_ne_01"]
    clip = _by_id(datasets.load_smic(root, variant="cropped"))["s1_ne_01"]
    assert clip.frames.paths[0].name == "reg_image000001.bmp"


@pytest.mark.parametrize("nested", [True, False])
def test_ckplus_labels_facs_landmarks_and_unlabelled(tmp_path, nested):
    cs = datasets.load("ckplus", "real", fx.ckplus(tmp_path, nested=nested))
    assert len(cs) == 2 and cs.skipped == []
    clips = _by_id(cs)
    coded = clips["S005_001"]
    assert (coded.label, coded.label3, coded.meta["labelled"]) == ("disgust", "negative", True)
    assert (coded.onset, coded.apex, coded.offset) == (0, 4, 4)
    assert coded.aus == "9+17" and coded.meta["facs"] == {9: 0.0, 17: 2.0}
    peak = datasets.read_landmarks(coded.meta["landmark_files"][coded.apex])
    assert peak.shape == (68, 2) and peak[0, 0] == pytest.approx(5.0)  # fixture: x = index + frame
    free = clips["S010_002"]  # no emotion file: kept, unlabelled, dropped from 3 classes
    assert (free.label, free.label3, free.meta["labelled"]) == (None, None, False)
    assert free.apex == free.n_frames - 1
    summary = datasets.summarize(cs)
    assert summary["unlabelled"] == 1 and summary["classes"] == {"disgust": 1}
    assert summary["classes_3"] == {"negative": 1, "(dropped)": 1}
    labelled = datasets.load_ckplus(tmp_path, selection="labelled")
    assert labelled.name == "ckplus-labelled" and [c.clip_id for c in labelled] == ["S005_001"]
    assert labelled.skipped[0].item == "ckplus/S010/S010_002" and "no emotion file" in labelled.skipped[0].reason


def test_ckplus_bad_emotion_code_and_missing_emotion_folder(tmp_path):
    root = fx.ckplus(tmp_path)
    (root / "Emotion_labels/Emotion/S005/001/S005_001_00000005_emotion.txt").write_text("   9.0000000e+00\n")
    assert "unknown emotion code 9" in _skip_reasons(datasets.load_ckplus(root))["S005/001"]
    import shutil
    shutil.rmtree(root / "Emotion_labels")
    with pytest.raises(FileNotFoundError, match=r"no CK\+ Emotion folder .*found: FACS/, Landmarks/, cohn-kanade-images/"):
        datasets.load_ckplus(root)


def test_mmew_micro_from_sheet_and_macro_from_folders(tmp_path):
    root = fx.mmew(tmp_path)
    micro = datasets.load("mmew", "real", root)
    assert micro.name == "mmew-micro" and len(micro) == 3 and micro.subjects == ["S03", "S05"] and micro.skipped == []
    clip = _by_id(micro)["S03-01-002"]
    assert clip.frames.paths[9].name == "10.jpg"  # numeric sort
    assert (clip.onset, clip.apex, clip.offset) == (1, 8, 10) and abs(_value(clip, clip.apex) - 9) <= 2
    assert _by_id(micro)["S05-03-004"].label3 is None
    miex = datasets.load("mmew", "real", root, selection="miex")
    assert miex.name == "mmew-micro-miex" and len(miex) == 2
    assert [s.item for s in miex.skipped] == ["mmew/S05/S05-03-004"] and "'others' is not one of the six" in miex.skipped[0].reason
    macro = datasets.load("mmew", "real", root, part="macro")
    assert macro.name == "mmew-macro"
    assert sorted(c.clip_id for c in macro) == ["S03-05-010", "S07-01-001"]
    assert all(c.meta["apex_annotated"] is False and c.meta["part"] == "macro" for c in macro)
    assert _by_id(macro)["S07-01-001"].label3 == "negative"
    (root / "MMEW_Micro_Exp.xlsx").unlink()
    with pytest.raises(FileNotFoundError, match="no MMEW_Micro_Exp.xlsx"):
        datasets.load_mmew(root)
    assert len(datasets.load_mmew(root, sheet=False)) == 3
    with pytest.raises(ValueError, match="part must be 'micro' or 'macro'"):
        datasets.load_mmew(root, part="both")


def test_mmew_official_layout_subject_folders(tmp_path):
    root = fx.mmew(tmp_path, macro=False)
    micro = root / "Micro_Expression"
    for emotion in list(micro.iterdir()):
        for clip in list(emotion.iterdir()):  # S03-01-002 -> S03/happiness/S03-01-002
            target = root / clip.name.split("-")[0] / emotion.name / clip.name
            target.parent.mkdir(parents=True, exist_ok=True)
            clip.rename(target)
    import shutil
    shutil.rmtree(micro)
    cs = datasets.load_mmew(root)
    assert len(cs) == 3 and cs.skipped == [] and _by_id(cs)["S03-01-002"].meta["emotion_folder"] == "happiness"
    with pytest.raises(FileNotFoundError, match="no MMEW macro folder"):
        datasets.load_mmew(root, part="macro")


def test_casme_headerless_columns_and_apex(tmp_path):
    cs = datasets.load("casme", "real", fx.casme(tmp_path))
    assert len(cs) == 2 and cs.skipped == []
    clips = _by_id(cs)
    assert clips["EP01_5"].frames.paths[clips["EP01_5"].apex].name == "reg_EP01_5-12.jpg"
    assert (clips["EP01_5"].label3, clips["EP01_5"].fps) == ("positive", 60.0)
    tense = clips["EP07_1"]
    assert tense.subject == "sub04" and tense.label3 is None and tense.meta["apex_annotated"] is False


def test_oulu_modality_illumination_and_labels(tmp_path):
    root = fx.oulu(tmp_path)
    cs = datasets.load("oulu", "real", root)
    assert len(cs) == 3 and cs.subjects == ["P001", "P002"]
    anger = _by_id(cs)["P001_Anger"]
    assert (anger.onset, anger.apex, anger.offset, anger.meta["first_frame"]) == (0, 4, 4, 0)
    assert anger.frames.paths[0].name == "000.jpeg" and anger.label3 == "negative"
    nir = datasets.load_oulu(root, modality="NI")
    assert all(c.meta["modality"] == "NI" for c in nir) and len(nir) == 3
    with pytest.raises(FileNotFoundError, match="OriginalImg/VL/Weak/"):
        datasets.load_oulu(root, illumination="Weak")
    with pytest.raises(ValueError, match="modality must be"):
        datasets.load_oulu(root, modality="IR")


# ---------------------------------------------------------------------------------------------
# The composite

def test_composite_merges_sources_by_the_official_list(tmp_path):
    root = fx.composite(tmp_path)
    cs = datasets.load("composite", "real", root)
    assert cs.name == "composite" and len(cs) == 8
    assert {c.dataset for c in cs} == {"casme2", "samm", "smic"}
    keys = {c.key: c for c in cs}
    assert keys["smic/s1/s1_ne_01"].meta["composite_line"] == 7  # csv s01 matched disk s1
    assert keys["samm/006/006_1_2"].label3 == "negative"  # csv subject 6 matched folder 006
    assert "casme2/sub03/EP04_01" not in keys  # on disk but not in the list
    assert [s.item for s in cs.skipped] == ["casme2/sub04/EP12_01f"]  # the blank `,,,` line is no sample
    assert "combined_3class_gt.csv line 10: no such clip" in cs.skipped[0].reason
    summary = datasets.summarize(cs)
    assert summary["classes_3"] == {"negative": 4, "positive": 3, "surprise": 1}


def test_composite_label_comes_from_the_csv_and_source_skips_carry_over(tmp_path):
    root = fx.composite(tmp_path)
    (root / "combined_3class_gt.csv").write_text(
        "casme2,sub01,EP02_01f,0\nsmic,s02,s02_sur_01,7\nsmic,s01,s01_ne_01,0\nsmic,s1,s1_ne_01,0\nabc,1,x,0\n"
    )
    (root / "samm" / "SAMM" / "006" / "006_1_2" / "006_05563.jpg").unlink()
    (root / "combined_3class_gt.csv").open("a").write("samm,006,006_1_2,0\n")
    cs = datasets.load_composite(root)
    clip = _by_id(cs)["EP02_01f"]
    assert clip.label3 == "negative" and clip.meta["label3_rule"] == "positive"
    reasons = _skip_reasons(cs)
    assert "unknown label '7'" in reasons["smic/s02/s02_sur_01"]
    assert "line 4 repeats line 3" in reasons["smic/s1/s1_ne_01"]
    assert "unknown database 'abc'" in reasons["abc/1/x"]
    assert "the samm loader skipped it: SAMM_Micro_FACS_Codes_v2.xlsx row 15: frame 5563 is missing" in reasons["samm/006/006_1_2"]
    (root / "combined_3class_gt.csv").unlink()
    with pytest.raises(FileNotFoundError, match="combined_3class_gt.csv: the MEGC 2019 ground-truth list is missing"):
        datasets.load_composite(root)


def test_samm_errata_are_kept_repaired_and_listed(tmp_path, capsys):
    root = fx.samm(tmp_path, rows=fx.SAMM_ROWS + fx.SAMM_ERRATA)
    cs = datasets.load_samm(root)
    assert len(cs) == 5 and cs.skipped == []
    late, early = _by_id(cs)["028_4_1"], _by_id(cs)["032_3_1"]
    # 028_4_1: apex 1143 after offset 1134 -> the middle of 1120..1134
    assert (late.meta["onset_frame"], late.meta["apex_frame"], late.meta["offset_frame"]) == (1120, 1127, 1134)
    assert late.meta["repairs"] == ["apex 1143 is after offset 1134: the middle frame 1127 used"]
    # 032_3_1: onset 4896 after apex 1930; the folder starts at 4896, so the apex is the error
    assert (early.meta["onset_frame"], early.meta["apex_frame"]) == (4896, 4900)
    assert early.apex == 4 and early.meta["annotation_repaired"] is True
    assert not _by_id(cs)["006_1_2"].meta["repairs"]

    assert datasets.cli(["inspect", "samm", str(root)]) == 0
    text = capsys.readouterr().out
    assert "skipped: 0" in text and "annotation repaired (kept, flagged in meta['repairs']): 2" in text
    assert "  samm/028/028_4_1 (SAMM_Micro_FACS_Codes_v2.xlsx row 18): apex 1143 is after offset 1134" in text
    assert "  samm/032/032_3_1 (SAMM_Micro_FACS_Codes_v2.xlsx row 19): onset 4896 is after apex 1930" in text


def test_casme2_offset_zero_and_indices_beyond_the_disk_are_repaired(tmp_path):
    rows = fx.CASME2_ROWS + [
        ("04", "EP05_02", 3, 5, 40, None, "happiness", range(3, 8)),  # offset beyond the last frame
        ("04", "EP05_03", 1, 5, 7, None, "happiness", range(3, 8)),  # onset before the first frame
    ]
    cs = datasets.load_casme2(fx.casme2(tmp_path, rows=rows))
    assert cs.skipped == []
    clips = _by_id(cs)
    assert clips["EP01_2"].meta["repairs"] == ["offset 0 (not annotated): the last frame 25 used"]
    assert clips["EP05_02"].meta["offset_frame"] == 7 and "offset 40 is outside the frames on disk (3..7)" in clips["EP05_02"].meta["repairs"][0]
    assert clips["EP05_03"].meta["onset_frame"] == 3 and "onset 1 is outside the frames on disk" in clips["EP05_03"].meta["repairs"][0]
    summary = datasets.summarize(cs)
    assert summary["annotation_repaired"] == 3
    assert [r["item"] for r in summary["repairs"]] == ["casme2/sub02/EP01_2", "casme2/sub04/EP05_02", "casme2/sub04/EP05_03"]


def test_full_samm_sheet_and_composite_keep_every_clip(tmp_path, capsys):
    root = fx.megc2019(tmp_path)
    assert datasets.cli(["inspect", "samm", str(root / "SAMM"), "--fast"]) == 0
    text = capsys.readouterr().out
    assert "samples: 159\nsubjects: 29\n" in text and "skipped: 0" in text
    assert "annotation repaired (kept, flagged in meta['repairs']): 2" in text
    cs = datasets.load_composite(root)
    summary = datasets.summarize(cs)
    assert (summary["samples"], summary["subjects"], summary["skipped"]) == (442, 68, [])
    assert summary["classes_3"] == {"negative": 250, "positive": 109, "surprise": 83}


# ---------------------------------------------------------------------------------------------
# The dispatcher and identity pools

def _fake_lab(monkeypatch):
    calls = []

    def load(name, *, seed=0, size=128, part=None):
        calls.append((name, seed, size, part))
        return ClipSet(name, [], [], source="sim")

    fake = types.ModuleType("mielib.lab")
    fake.load = load
    monkeypatch.setitem(sys.modules, "mielib.lab", fake)
    monkeypatch.setattr(mielib, "lab", fake, raising=False)
    return calls


def test_load_dispatches_and_explains_bad_requests(tmp_path, monkeypatch):
    calls = _fake_lab(monkeypatch)
    assert datasets.load("CASME2", seed=3, size=64).source == "sim"
    assert datasets.load("mmew", part="macro") is not None
    assert calls == [("casme2", 3, 64, None), ("mmew", 0, 128, "macro")]
    with pytest.raises(ValueError, match="verify apply to real data only; the simulated lab takes seed, size, part"):
        datasets.load("mmew", verify=True)
    with pytest.raises(ValueError, match=r"unknown dataset 'casme3'; known datasets: casme2, samm, smic, composite"):
        datasets.load("casme3")
    with pytest.raises(ValueError, match="needs data_root"):
        datasets.load("samm", "real")
    with pytest.raises(ValueError, match="unknown data source 'disk'"):
        datasets.load("samm", "disk", tmp_path)
    with pytest.raises(ValueError, match=r"load_samm has no option 'part'; its options are variant, sheet"):
        datasets.load("samm", "real", tmp_path, part="macro")
    assert set(datasets.LOADERS) == set(datasets.KNOWN)


def test_one_folder_holding_all_datasets(tmp_path):
    # data_root as the notebooks pass it: one subfolder per dataset, or the dataset's own root.
    everything = tmp_path / "datasets"
    fx.samm(everything / "SAMM")
    fx.ckplus(everything / "CK+")
    assert datasets.dataset_root(everything, "samm") == everything / "SAMM"
    assert datasets.dataset_root(everything / "SAMM", "samm") == everything / "SAMM"  # not its frames folder SAMM/SAMM
    assert len(datasets.load("samm", "real", everything)) == 3
    assert len(datasets.load("samm", "real", everything / "SAMM")) == 3
    assert len(datasets.load("ckplus", "real", everything)) == 2
    with pytest.raises(FileNotFoundError, match=r"no CK\+ image folder"):
        datasets.load("ckplus", "real", everything / "SAMM")


def test_identity_pool_images_aus_and_landmarks(tmp_path):
    root = fx.identity_folder(tmp_path / "pool")
    pool = datasets.identity_pool(root)
    assert [i.meta["relative_path"] for i in pool] == ["a/000001.jpg", "a/000002.jpg", "a/000010.jpg", "b/N_0000000356_00190.png"]
    first = pool[0]
    assert first.aus.shape == (17,) and first.aus[au.index(12)] == pytest.approx(0.5)  # most confident face
    assert pool[1].aus is None and pool[1].landmarks is None
    assert pool.summary()["with_aus"] == 1

    marks = tmp_path / "marks"
    for rel in ("a/000001", "a/000002", "a/000010"):
        (marks / rel).parent.mkdir(parents=True, exist_ok=True)
        (marks / f"{rel}_landmarks.txt").write_text("".join(f"{i} {2 * i}\n" for i in range(68)))
    with_marks = datasets.identity_pool(root, marks)
    assert len(with_marks) == 3 and with_marks[2].landmarks[67, 1] == 134
    assert "no landmarks for it" in with_marks.skipped[0].reason
    assert with_marks.skipped[0].item == "b/N_0000000356_00190.png"

    npz = tmp_path / "marks.npz"
    np.savez(npz, **{"a/000001.jpg": np.ones((68, 2)), "000002": np.ones((68, 2)), "000010": np.ones((5, 2)),
                     "N_0000000356_00190": np.zeros((68, 2))})
    from_npz = datasets.identity_pool(root, npz)
    assert len(from_npz) == 3 and "expected 68 x 2 finite landmarks, got shape (5, 2)" in from_npz.skipped[0].reason
    with pytest.raises(FileNotFoundError, match="identity pool root"):
        datasets.identity_pool(tmp_path / "none")


# ---------------------------------------------------------------------------------------------
# python -m mielib data inspect

def test_inspect_cli_text_and_json(tmp_path, capsys):
    root = fx.casme2(tmp_path)
    (root / "CASME2_RAW_selected" / "sub02" / "EP09f" / "img11.jpg").unlink()
    assert datasets.cli(["inspect", "casme2", str(root)]) == 0
    text = capsys.readouterr().out
    assert "samples: 4\nsubjects: 3\n" in text
    assert "classes: happiness 1, repression 1, sadness 1, others 1" in text
    assert "3-class (MEGC): (dropped) 2, positive 1, negative 1" in text
    assert "skipped: 1\n  sub02/EP09f: CASME2-coding-20140508.xlsx row 3: frame 11 is missing: expected " in text

    assert datasets.cli(["inspect", "casme2", str(root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["samples"] == 4 and data["subjects"] == 3 and data["data_source"] == "real"
    assert data["classes_3"] == {"(dropped)": 2, "positive": 1, "negative": 1}
    assert data["skipped"][0]["item"] == "sub02/EP09f" and "img11.jpg" in data["skipped"][0]["reason"]


def test_inspect_cli_options_and_errors(tmp_path, capsys, monkeypatch):
    root = fx.mmew(tmp_path / "mmew")
    assert datasets.cli(["inspect", "mmew", str(root), "-o", "part=macro", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 2
    fx.corrupt(root / "Micro_Expression" / "disgust" / "S05-02-001" / "2.jpg")
    assert datasets.cli(["inspect", "mmew", str(root), "--verify"]) == 0
    assert "S05/S05-02-001: " in capsys.readouterr().out

    assert datasets.cli(["inspect", "casme2", str(tmp_path / "missing")]) == 2
    assert "error: ROOT" in capsys.readouterr().err
    assert datasets.cli(["inspect", "casme2"]) == 2
    assert "error: ROOT is required" in capsys.readouterr().err
    assert datasets.cli(["inspect", "nope", str(root)]) == 2
    assert "known datasets: casme2" in capsys.readouterr().err
    assert datasets.cli(["inspect", "mmew", str(root), "-o", "colour=blue"]) == 2
    assert "has no option 'colour'" in capsys.readouterr().err

    calls = _fake_lab(monkeypatch)
    assert datasets.cli(["inspect", "mmew", "--sim", "--seed", "4", "-o", "part=macro", "--json"]) == 0
    assert calls == [("mmew", 4, 128, "macro")]
    assert json.loads(capsys.readouterr().out)["data_source"] == "sim"


def _truncated_jpeg(path):
    """A real JPEG of noise cut in half: its header reads fine, its pixels do not decode."""
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, format="JPEG")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_inspect_verifies_frames_by_default(tmp_path, capsys):
    root = fx.casme2(tmp_path)
    frames = root / "CASME2_RAW_selected"
    _truncated_jpeg(frames / "sub01" / "EP02_01f" / "img49.jpg")  # the apex: decoded
    (frames / "sub03" / "EP03_02" / "img6.jpg").write_bytes(b"")  # zero bytes: the header check finds it
    assert datasets.cli(["inspect", "casme2", str(root)]) == 0
    text = capsys.readouterr().out
    assert "samples: 3\n" in text and "skipped: 2\n" in text
    assert "sub01/EP02_01f: CASME2-coding-20140508.xlsx row 2: " in text and "EP02_01f/img49.jpg: corrupt" in text
    assert "EP03_02/img6.jpg: corrupt or unreadable image" in text
    assert datasets.cli(["inspect", "casme2", str(root), "--fast"]) == 0  # no check: both kept
    assert "samples: 5\n" in capsys.readouterr().out


def test_inspect_into_a_closed_pipe_prints_no_traceback(tmp_path):
    import os
    import subprocess
    from pathlib import Path

    root = fx.casme2(tmp_path)
    read, write = os.pipe()
    os.close(read)  # the reader (`| head`) has already gone when inspect prints
    env = {**os.environ, "PYTHONPATH": str(Path(mielib.__file__).parent.parent)}
    done = subprocess.run([sys.executable, "-m", "mielib", "data", "inspect", "casme2", str(root), "--fast"],
                          stdout=write, stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    os.close(write)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 1
