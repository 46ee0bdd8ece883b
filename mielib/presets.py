"""Presets: one name (`smoke`, `small`, `paper`) that sets every size in every notebook.

Notebooks take `preset` as a papermill parameter and call `presets.resolve(preset)`, so no
notebook contains an `if smoke:` branch. Each module reads only its own keys.
"""

from __future__ import annotations

from types import MappingProxyType

# One row per knob; columns are the presets. Keep the comment: it is what a user reads.
_TABLE = {
    # knob:                 (smoke, small, paper)   # meaning
    "image_size":           (48, 64, 128),          # pixels per side of rendered/loaded frames
    "explorer_identities":  (4, 6, 6),              # rows of the explorer's static identity x AU grid
    "miex_identities":      (6, 400, 5000),         # identities in MiE-X (paper: 5,000)
    "identity_pool":        (200, 5000, 5000),      # size of the simulated EmotioNet-like pool
    "epochs_real":          (1, 12, 80),            # epochs on real (or stand-in) data; paper: 80
    "epochs_miex":          (1, 4, 30),             # epochs on MiE-X; paper: 30
    "repeats":              (1, 3, 3),              # repeats of each cross-validation; paper: 3
    "batch_size":           (32, 32, 32),           # paper: 32
    "gan_iterations":       (10, 4500, 60000),      # GANimation critic iterations, warm-up included (generator steps: 1 in 5)
    "gan_au_warmup":        (4, 1500, 0),           # first critic iterations that only learn to read AUs (not in the paper; 0 = paper)
    "gan_lr":               (1e-4, 2e-4, 1e-4),     # GANimation Adam learning rate; paper: 1e-4
    "gan_size":             (32, 48, 128),          # GANimation image side in px; paper: 128
    "gan_width":            (8, 16, 64),            # GANimation base channels (generator and critic); paper: 64
    "gan_images":           (64, 3000, 9500),       # GANimation training faces from the identity pool
    "gan_check_faces":      (16, 200, 500),         # held-out faces for notebook 03's AU-regression check
    "aureader_renders":     (400, 4000, 8000),      # face-model renders that fit the image AU reader (mielib.aureader)
    "clips_per_dataset":    (24, None, None),       # cap on clips per stand-in when training (None: all)
    "train_size":           (32, 32, 128),          # frame side (px) the classifiers of notebooks 04-05 train on; paper: 128
    "input":                ("flow", "flow", "frames"),  # classifier input: "frames" (paper) or onset->apex optical "flow"
    "flow_size":            (48, 128, 128),         # px at which frames are read and optical flow computed (then resized)
    "table2_miex_identities": (3, 40, 5000),        # MiE-X identities pre-trained on per fold in notebook 05; paper: 5,000
    "table2_epochs":        (1, 8, 80),             # notebook 05's training / fine-tuning epochs on MMEW and SAMM; paper: 80
    "table2_repeats":       (1, 2, 3),              # notebook 05's repeats of each 5-fold cross-validation; paper: 3
    "dtscnn_scales":        ((2, 4), (4, 8), (32, 64)),  # DTSCNN's two temporal lengths (frames per stream)
    "dtscnn_frames":        (4, 6, 10),             # frames per DTSCNN stack, onset to apex (MiE-X's video variant: 10)
    "table1_epochs_real":   (1, 6, 80),             # notebook 04: epochs on real data (training, fine-tuning, real pre-training sets); paper: 80
    "table1_epochs_miex":   (1, 3, 30),             # notebook 04: epochs of (pre-)training on MiE-X; paper: 30
    "table1_miex_identities": (6, 150, 5000),       # notebook 04: MiE-X identities (x 9 samples each); paper: 5,000
    "table1_repeats":       (1, 2, 3),              # notebook 04: repeats of the 3-fold cross-validation; paper: 3
    # Notebooks 06-09 (MiE-X Section 5.3 and supplement): Branches trained on MiE-X builds with
    # table1_miex_identities, table1_epochs_miex and table1_epochs_real; sizes scaled from the
    # paper's by the same factor (small: 150 / 5,000 = 0.03).
    "analyses_repeats":     (1, 3, 3),              # repeats of the 3-fold cross-validation; paper: 3
    "fig6a_samples":        (36, 900, 30000),       # Fig. 6a: samples (z_MaE + z_exp); paper: 30,000
    "fig6a_identities":     (6, 150, 5000),         # Fig. 6a: identities; paper: 5,000
    "fig6a_triplets":       ((6, 12, 18, 36), (120, 180, 300, 900), (4000, 6000, 10000, 30000)),  # Fig. 6a: distinct AU triplets
    "fig6b_samples":        (36, 900, 30000),       # Fig. 6b: samples = AU triplets; paper: 30,000
    "fig6b_identities":     ((3, 4, 5, 6), (21, 30, 51, 150), (700, 1000, 1700, 5000)),  # Fig. 6b: identities
    "fig6c_triplets":       (9, 270, 9000),         # Fig. 6c: AU triplets (all three sources); paper: 9,000
    "fig6c_identities":     (3, 30, 1000),          # Fig. 6c: identities; paper: 1,000
    "fig6c_samples":        ((9, 18, 27, 36), (270, 540, 1080, 1620), (9000, 18000, 36000, 54000)),  # Fig. 6c: samples
    "eidnet_epochs_1":      (1, 3, 30),             # notebook 11: EIDNet Phase I epochs (MicroNet per fold, MacroNet once); paper: 30
    "eidnet_epochs_2":      (1, 2, 30),             # notebook 11: EIDNet Phase II epochs per fold; paper: 30
    "eidnet_lr_scale_2":    (1.0, 15.0, 1.0),       # notebook 11: factor on Phase II's learning rates (5e-6/1e-5/5e-6); small: 30 / 2 epochs, the paper's total step size; paper: 1
    "eidnet_table1_folds":  (2, None, None),        # notebook 11: Table 1 folds on CASME II and SMIC; None: LOSO (the paper), k: subjects grouped into k folds
    "eidnet_table2_folds":  (2, 6, None),           # notebook 11: Table 2 folds on the composite's 68 subjects; None: LOSO (the paper), k: k subject-wise folds
    "eidnet_tsne_samples":  (20, 200, 200),         # notebook 11: Fig. 4 samples per emotion and domain (micro, macro); paper: 200
    # Notebook 10 (AU-GACN and AU-ICGAN, seed 002). The paper states no epochs, learning rate or
    # sequence length; its backbone (Table 7) takes 256 px and halves time four times (L >= 16).
    "augacn_size":          (16, 32, 256),          # notebook 10: frame side (px) of every method's input; paper: 256
    "augacn_frames":        (4, 8, 16),             # notebook 10: frames per sequence, onset to offset (paper: L, not stated)
    "augacn_width":         (4, 16, 64),            # notebook 10: base channels of STPNet and the baselines; paper: 64
    "augacn_node_dim":      (2, 8, 1),              # notebook 10: features per AU node out of STPNet; paper (Table 7): 1
    "augacn_epochs":        (1, 15, 50),            # notebook 10: training epochs per fold (paper: not stated)
    "augacn_batch":         (16, 16, 32),           # notebook 10: batch size (paper: not stated)
    "augacn_lr":            (1e-3, 1e-3, 1e-4),     # notebook 10: Adam learning rate (paper: not stated)
    "augacn_loso_groups":   (2, 5, None),           # notebook 10: None: LOSO (the paper); k: subjects dealt into k folds
    "augacn_lovo_videos":   (2, 4, None),           # notebook 10: None: LOVO on every clip (the paper); n: a class-stratified subset of n test clips
    "augacn_clips":         (30, None, None),       # notebook 10: cap on clips per dataset (None: all)
    "auicgan_iterations":   (2, 120, 20000),        # notebook 10: AU-ICGAN critic iterations per fold (paper: not stated)
    "auicgan_width":        (4, 8, 64),             # notebook 10: AU-ICGAN base channels
    "auicgan_scale":        (0.02, 0.05, 1.0),      # notebook 10: synthetic sequences per class = the paper's 300-400 x this
    "auicgan_epochs":       (1, 4, 30),             # notebook 10: pre-training epochs on the AU-ICGAN set (paper: not stated)
}

PRESETS = ("smoke", "small", "paper")


def resolve(name: str) -> MappingProxyType:
    """All sizes of a preset, as a read-only mapping with attribute-free keys.

    >>> resolve("smoke")["image_size"]
    48
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    col = PRESETS.index(name)
    return MappingProxyType({"name": name, **{k: v[col] for k, v in _TABLE.items()}})
