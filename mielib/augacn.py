"""AU-GACN (Xie et al., ACM MM 2020, seed 002) and its MER-GCN baseline: FACS-code parsing, the AU
relation graph of a training fold, the STPNet backbone, dense GCN and SAGPool layers, the AU-ME loss
and the `AUStack` view they train on.

Used by notebook 10 (AU-GACN / AU-ICGAN). What the paper leaves open, and our choices:
- AU graph (§3.2 says only that edges are "gathered from the training set"): ML-GCN's rule (the
  paper's ref. [4]) on the training fold's FACS codes, symmetrised; see `au_graph`.
- Node features (§3.1, Table 7): STPNet's last layer gives one score per AU node ([A, 1]); by
  default that scalar is the node's feature (`node_dim=1`, the paper's layout). `node_dim=k`
  gives each node k features, the first of which is its AU score.
- "After concatenating three sequential GCN layers" (§3.2) is read as Lee et al.'s global
  SAGPool architecture: the three layers' outputs are concatenated per node, then pooled.
- P3D bottlenecks: channels width -> width/4 -> width (P3D's expansion 4), spatial stride in
  the first 1x1x1 convolution of Bottleneck-B and -C (Table 7 halves H and W there).
- Eq. 4's "learnable" weight w: per-AU, positive and of mean 1 (`AUGACN.au_weight`); see
  `au_me_loss`.
- The readout [mean || max] feeds a two-layer classifier (Lee et al.'s MLP head, shortened).
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, Dataset, Subset

from mielib.clip import Clip
from mielib.views import FlowStack, Stack

#: ML-GCN's threshold on the conditional probability P(AU_j | AU_i) (Chen et al. 2019: 0.4).
TAU = 0.4

# ---------------------------------------------------------------------------------------------
# FACS codes

# One AU: optional "AU", optional side/position prefix (L left, R right, A asymmetric,
# T top, B bottom), the AU number, optional intensity letter A-E.
_AU_TOKEN = re.compile(r"^(?:AU)?\s*([LRATB])?\s*(\d{1,2})([A-E])?$", re.IGNORECASE)


def parse_aus(code: str | None, *, where: str) -> tuple[int, ...]:
    """The AU numbers in a FACS code as annotated, sorted and without repeats.

    Reads CASME II's "4+L10", "1+R2", SAMM's "R12B+25", "A14C", "T23", "(R6 or R12)+R15",
    "ref(7B)+43" and "AU4": prefixes L/R/A/T/B and intensity letters A-E are dropped, "AU" is
    allowed, "X or Y" (the coder's alternatives) keeps both AUs, "ref(...)" keeps what it holds.
    None or a blank code gives (). A token that is none of these raises ValueError naming
    `where` (e.g. "clip casme2/sub01/EP02") and the token.
    """
    if code is None or not str(code).strip():
        return ()
    text = re.sub(r"ref\s*\(([^)]*)\)", r"\1", str(code), flags=re.IGNORECASE)
    text = text.replace("(", " ").replace(")", " ")
    out = set()
    for token in re.split(r"\+|\bor\b", text, flags=re.IGNORECASE):
        token = token.strip()
        m = _AU_TOKEN.match(token)
        if m is None or int(m.group(2)) == 0:
            raise ValueError(f"{where}: AU code {token!r} (in {code!r}) is not a FACS code")
        out.add(int(m.group(2)))
    return tuple(sorted(out))


def _clip_aus(clip: Clip) -> tuple[int, ...]:
    return parse_aus(clip.aus, where=f"clip {clip.key}")


def au_nodes(clips: Iterable[Clip]) -> tuple[int, ...]:
    """The sorted AUs annotated in `clips`: a dataset's AU vocabulary, the AU graph's nodes."""
    return tuple(sorted({a for c in clips for a in _clip_aus(c)}))


def _node_rows(clips: Sequence[Clip], nodes: Sequence[int]) -> list[list[int]]:
    """Each clip's AUs as node positions; an AU outside `nodes` raises, naming the clip."""
    position = {int(a): i for i, a in enumerate(nodes)}
    rows = []
    for c in clips:
        aus = _clip_aus(c)
        missing = [a for a in aus if a not in position]
        if missing:
            raise ValueError(f"clip {c.key}: AU {', '.join(map(str, missing))} (in {c.aus!r}) not among the AU "
                             f"nodes {list(nodes)}; build the nodes with au_nodes over every clip")
        rows.append([position[a] for a in aus])
    return rows


def au_targets(clips: Sequence[Clip], nodes: Sequence[int]) -> np.ndarray:
    """N x A multi-hot float32: 1 where clip n is annotated with AU nodes[a]. A clip without an
    AU annotation gives a row of zeros (`AUStack` marks such clips as unknown)."""
    out = np.zeros((len(clips), len(nodes)), dtype=np.float32)
    for n, row in enumerate(_node_rows(clips, nodes)):
        out[n, row] = 1.0
    return out


def au_graph(clips: Sequence[Clip], nodes: Sequence[int], *, tau: float = TAU) -> np.ndarray:
    """A x A float32 adjacency of the AU relation graph from the FACS codes of `clips` (the
    training fold's: no test clip may be passed).

    The paper (§3.2) says only that edges are gathered from the training set; we take ML-GCN's
    rule (Chen et al. 2019, the paper's ref. [4]): with n_i the clips showing AU i and n_ij
    those showing both, P(j | i) = n_ij / n_i, and AUs i and j are linked (1) when
    P(j | i) >= tau or P(i | j) >= tau. Symmetrised because Kipf's D^-1/2 (A + I) D^-1/2
    assumes an undirected graph; binary, without ML-GCN's re-weighting. The diagonal is 0
    (GCNLayer adds the self-loops); an AU absent from `clips` has no edges.
    """
    if not 0.0 < tau <= 1.0:
        raise ValueError(f"au_graph: tau must be in (0, 1], got {tau}")
    hot = au_targets(clips, nodes).astype(np.float64)
    both = hot.T @ hot  # n_ij; its diagonal is n_i
    count = np.diag(both)
    cond = np.divide(both, count[:, None], out=np.zeros_like(both), where=count[:, None] > 0)  # P(j | i)
    adj = ((cond >= tau) | (cond.T >= tau)).astype(np.float32)
    np.fill_diagonal(adj, 0.0)
    return adj


def _views(dataset: Dataset) -> list[Dataset]:
    """The views under torch Subsets and ConcatDatasets."""
    if isinstance(dataset, Subset):
        return _views(dataset.dataset)
    if isinstance(dataset, ConcatDataset):
        return [v for d in dataset.datasets for v in _views(d)]
    return [dataset]


def dataset_clips(dataset: Dataset) -> list[Clip]:
    """The clips behind a view (its `clips`), following torch Subsets and ConcatDatasets."""
    if isinstance(dataset, Subset):
        base = dataset_clips(dataset.dataset)
        return [base[int(i)] for i in dataset.indices]
    if isinstance(dataset, ConcatDataset):
        return [c for d in dataset.datasets for c in dataset_clips(d)]
    clips = getattr(dataset, "clips", None)
    if clips is None:
        raise TypeError(f"{type(dataset).__name__} has no `clips`: train AU-GACN on an AUStack view")
    return list(clips)


# ---------------------------------------------------------------------------------------------
# STPNet: P3D bottlenecks (Qiu et al. 2017) in Table 7's layout

def _conv_bn(c_in: int, c_out: int, kernel, stride=1, padding=0) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
                         nn.BatchNorm3d(c_out))


class P3DBlock(nn.Module):
    """A P3D bottleneck: 1x1x1 down to `width // expansion` channels, a (1,3,3) spatial conv S and
    a (3,1,1) temporal conv T combined as `kind` "A" (T(S(x)), series), "B" (S(x) + T(x),
    parallel) or "C" (S(x) + T(S(x)), series with a shortcut from S), 1x1x1 up to `out_channels`,
    plus the residual (a strided 1x1x1 conv where the shape changes). `stride` halves H and W
    (in the first 1x1x1 conv), never T."""

    def __init__(self, kind: str, in_channels: int, out_channels: int, *, stride: int = 1, expansion: int = 4):
        super().__init__()
        if kind not in ("A", "B", "C"):
            raise ValueError(f"P3DBlock: kind must be 'A', 'B' or 'C', got {kind!r}")
        mid = max(1, out_channels // expansion)
        self.kind = kind
        self.reduce = _conv_bn(in_channels, mid, 1, stride=(1, stride, stride))
        self.spatial = _conv_bn(mid, mid, (1, 3, 3), padding=(0, 1, 1))
        self.temporal = _conv_bn(mid, mid, (3, 1, 1), padding=(1, 0, 0))
        self.expand = _conv_bn(mid, out_channels, 1)
        self.shortcut = (nn.Identity() if stride == 1 and in_channels == out_channels
                         else _conv_bn(in_channels, out_channels, 1, stride=(1, stride, stride)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.reduce(x))
        if self.kind == "A":
            h = F.relu(self.temporal(F.relu(self.spatial(h))))
        elif self.kind == "B":
            h = F.relu(self.spatial(h)) + F.relu(self.temporal(h))
        else:
            s = F.relu(self.spatial(h))
            h = s + F.relu(self.temporal(s))
        return F.relu(self.expand(h) + self.shortcut(x))


def _max_pool(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int],
              padding: tuple[int, int, int] = (0, 0, 0)) -> torch.Tensor:
    """Table 7's max pooling, clamped so short or small inputs run: an axis shorter than its
    kernel is not pooled (a 1-frame clip keeps its one frame instead of failing)."""
    size = x.shape[-3:]
    k, s, p = zip(*[(kk, ss, pp) if n >= kk else (1, 1, 0) for n, kk, ss, pp in zip(size, kernel, stride, padding)])
    return F.max_pool3d(x, k, s, p) if k != (1, 1, 1) else x


class STPNet(nn.Module):
    """The AU-GACN backbone (Table 7) for a B x C x T x H x W clip: Conv3d (1,7,7)/2 (H, W only)
    - BN - ReLU - MaxPool (2,3,3)/2 - Bottleneck-A - MaxPool (2,1,1)/(2,1,1) - Bottleneck-B (H, W /2)
    - MaxPool - Bottleneck-C (H, W /2) - MaxPool - global average pool - a 1x1 conv (a linear
    layer on the pooled vector) to `nodes * node_dim` values. Returns B x nodes x node_dim;
    [..., 0] is each AU node's score (a logit).

    Table 7's channels are 64 throughout (`width=64`); a smaller `width` scales every layer.
    Table 7's shapes: 3 x L x 256 x 256 -> L x 128^2 -> L/2 x 64^2 -> L/4 x 32^2 -> L/8 x 16^2 ->
    L/16 x 16^2 -> 1. Poolings are clamped (`_max_pool`): 8 frames go 8 -> 4 -> 2 -> 1 -> 1.
    """

    def __init__(self, in_channels: int = 3, nodes: int = 19, width: int = 64, node_dim: int = 1):
        super().__init__()
        if nodes < 1 or node_dim < 1 or width < 4:
            raise ValueError(f"STPNet: need nodes >= 1, node_dim >= 1 and width >= 4, got {nodes}, {node_dim}, {width}")
        self.nodes, self.node_dim, self.width = nodes, node_dim, width
        self.stem = nn.Sequential(nn.Conv3d(in_channels, width, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
                                  nn.BatchNorm3d(width), nn.ReLU(inplace=True))
        self.block_a = P3DBlock("A", width, width)
        self.block_b = P3DBlock("B", width, width, stride=2)
        self.block_c = P3DBlock("C", width, width, stride=2)
        self.score = nn.Linear(width, nodes * node_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled clip feature, B x width (before the AU-node layer)."""
        if x.dim() != 5:
            raise ValueError(f"STPNet: expected a clip B x C x T x H x W, got shape {tuple(x.shape)}")
        x = _max_pool(self.stem(x), (2, 3, 3), (2, 2, 2), (0, 1, 1))
        x = _max_pool(self.block_a(x), (2, 1, 1), (2, 1, 1))
        x = _max_pool(self.block_b(x), (2, 1, 1), (2, 1, 1))
        x = _max_pool(self.block_c(x), (2, 1, 1), (2, 1, 1))
        return torch.flatten(F.adaptive_avg_pool3d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(self.features(x)).view(x.shape[0], self.nodes, self.node_dim)


# ---------------------------------------------------------------------------------------------
# Graph layers. Written densely instead of with PyTorch Geometric (not a dependency): AU graphs
# have about 20 nodes and are nearly dense and batched, where a B x N x N product is simpler
# and faster than scatter-based message passing over edge lists.

def normalized_adjacency(adj: torch.Tensor) -> torch.Tensor:
    """Kipf & Welling's D^-1/2 (A + I) D^-1/2 of an N x N or B x N x N adjacency, in float32."""
    adj = adj.float()
    a = adj + torch.eye(adj.shape[-1], dtype=adj.dtype, device=adj.device)
    d = a.sum(-1).clamp_min(1e-12).rsqrt()
    return d.unsqueeze(-1) * a * d.unsqueeze(-2)


class GCNLayer(nn.Module):
    """One graph convolution (Kipf & Welling 2017; the paper's Eq. 1 before its activation):
    out = Â X W + b, Â = D^-1/2 (A + I) D^-1/2, for node features X (B x N x in_dim) and an
    adjacency A without self-loops, shared (N x N) or per sample (B x N x N)."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim, bias=False)
        # Glorot, as Kipf & Welling (and PyG's GCNConv). nn.Linear's default init shrinks the
        # signal about 2.5x per layer here; after three layers and SAGPool's tanh gate the
        # readout barely varied between clips and AU-GACN answered the majority class.
        nn.init.xavier_uniform_(self.linear.weight)
        self.bias = nn.Parameter(torch.zeros(out_dim)) if bias else None

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        out = normalized_adjacency(adj).to(x.dtype) @ self.linear(x)
        return out + self.bias if self.bias is not None else out


def sag_select(x: torch.Tensor, adj: torch.Tensor, score: torch.Tensor,
               ratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pooling step of SAGPool given attention scores (B x N): keep the ceil(ratio * N)
    best-scoring nodes of each sample, in decreasing score order (the paper's Eq. 2), gate
    their features by tanh(score) and keep their induced adjacency (Eq. 3).

    Returns (x' B x k x d, adj' B x k x k, idx B x k)."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"SAGPool: ratio must be in (0, 1], got {ratio}")
    b, n = score.shape
    k = max(1, math.ceil(round(ratio * n, 9)))  # 0.28 * 25 is 7.000000000000001: keep 7, not 8
    idx = score.topk(k, dim=1).indices
    kept = x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    gate = torch.tanh(score.gather(1, idx)).unsqueeze(-1)
    adj = adj.expand(b, n, n) if adj.dim() == 2 else adj
    rows = adj.gather(1, idx.unsqueeze(-1).expand(-1, -1, n))
    return kept * gate.to(kept.dtype), rows.gather(2, idx.unsqueeze(1).expand(-1, k, -1)), idx


class SAGPool(nn.Module):
    """Self-attention graph pooling (Lee et al. 2019): attention scores Z = GCN(X, A), one per
    node, then `sag_select` (top ceil(ratio * N) nodes, X' = X_idx * tanh(Z_idx), A' = A_idx,idx).
    The paper's Eq. 3 writes X_idx ⊙ Z_mask; we gate with tanh(Z) as Lee et al. do.

    forward(x B x N x dim, adj) -> (x' B x k x dim, adj' B x k x k, idx B x k, scores B x N)."""

    def __init__(self, dim: int, ratio: float = 0.5):
        super().__init__()
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"SAGPool: ratio must be in (0, 1], got {ratio}")
        self.ratio = ratio
        self.attention = GCNLayer(dim, 1)

    def forward(self, x: torch.Tensor, adj: torch.Tensor):
        score = self.attention(x, adj).squeeze(-1)
        pooled, sub, idx = sag_select(x, adj, score, self.ratio)
        return pooled, sub, idx, score


# ---------------------------------------------------------------------------------------------
# The AU-ME loss

def au_me_loss(logits: torch.Tensor, au_logits: torch.Tensor, y: torch.Tensor, au_target: torch.Tensor,
               weight: torch.Tensor | float = 1.0, lam: float = 1.0, known: torch.Tensor | None = None) -> torch.Tensor:
    """The AU-ME supervised loss (Eqs. 4-5): L_AU + lam * L_ME.

    L_AU (Eq. 4) = -w [y log σ(x) + (1 - y) log(1 - σ(x))] on the AU node scores x (B x A) and
    the clips' multi-hot AU labels y, averaged over clips and AUs; `weight` w is a scalar or one
    weight per AU node. Eq. 4 is PyTorch's weighted BCE formula, whose w is a fixed rescaling;
    the paper calls it learnable. A free learnable w would shrink without bound (the loss is
    linear in w) and switch the AU task off, so AUGACN learns w per AU, positive and of mean 1
    (`AUGACN.au_weight`): training can shift emphasis between AUs but not drop them.
    L_ME is the cross-entropy of the emotion logits. `known` (B, bool) leaves clips without an
    AU annotation out of L_AU (all unknown: L_AU = 0).
    """
    x, t = au_logits.float(), au_target.float()
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    if torch.is_tensor(weight):
        weight = weight.to(bce)
    bce = bce * weight
    if known is None:
        l_au = bce.mean()
    else:
        mask = known.to(bce.device, torch.bool)
        l_au = bce[mask].mean() if bool(mask.any()) else bce.sum() * 0.0
    return l_au + lam * F.cross_entropy(logits.float(), y)


# ---------------------------------------------------------------------------------------------
# Models

_INPUTS = {"frames": (3, "stack"), "flow": (2, "flow_stack")}


def _input_kind(input: str, who: str) -> tuple[int, str]:
    if input not in _INPUTS:
        raise ValueError(f"{who}: unknown input {input!r}; use 'frames' (RGB stacks) or 'flow' (flow stacks)")
    return _INPUTS[input]


class _AUGraphModel(nn.Module):
    """Shared by AU-GACN and MER-GCN: the AU nodes and the relation graph of the training fold."""

    def __init__(self, n_classes: int, nodes: Sequence[int], tau: float):
        super().__init__()
        self.n_classes = int(n_classes)
        self.nodes = tuple(int(a) for a in nodes)
        if not self.nodes or len(set(self.nodes)) != len(self.nodes):
            raise ValueError(f"{type(self).__name__}: nodes must be distinct AU numbers, got {list(nodes)}")
        self.tau = float(tau)
        # Identity until prepare(): normalised, Â = I, each node sees only itself.
        self.register_buffer("adjacency", torch.eye(len(self.nodes)))
        self.graph_clips: tuple[str, ...] = ()

    def prepare(self, train: Dataset) -> None:
        """Build the AU graph from the FACS codes of the training set's clips (`au_graph`), and
        record their keys in `graph_clips`. Raises when no training clip has AU codes, or when
        the view's AU nodes (AUStack's `nodes`) are not the model's: its AU labels would not
        line up with the model's AU scores."""
        for view in _views(train):
            nodes = getattr(view, "nodes", None)
            if nodes is not None and tuple(nodes) != self.nodes:
                raise ValueError(f"{type(self).__name__}.prepare: the training view's AU nodes {list(nodes)} are "
                                 f"not the model's {list(self.nodes)}")
        clips = dataset_clips(train)
        annotated = [c for c in clips if _clip_aus(c)]
        if not annotated:
            raise ValueError(f"{type(self).__name__}.prepare: none of the {len(clips)} training clips has AU codes; "
                             "the AU graph needs AU-annotated training clips (SMIC has none: test only)")
        adj = au_graph(clips, self.nodes, tau=self.tau)
        self.adjacency.copy_(torch.from_numpy(adj))
        self.graph_clips = tuple(c.key for c in clips)


class AUGACN(_AUGraphModel):
    """AU-assisted Graph Attention Convolutional Network (§3, Fig. 1).

    STPNet -> A AU nodes (features B x A x node_dim, [..., 0] the AU scores) -> three GCN layers
    with ReLU on the AU graph -> their outputs concatenated per node -> SAGPool (ratio) ->
    readout [mean || max] over the kept nodes -> BatchNorm (ours) -Linear-ReLU-Dropout-Linear
    to the classes.

    Training mode returns (emotion logits, AU logits); evaluation mode the emotion logits.
    `criterion` is the AU-ME loss; call `prepare(train_set)` before training (the graph).
    `input="flow"` reads 2-channel flow stacks (FlowStack) instead of RGB frame stacks.
    """

    def __init__(self, n_classes: int, nodes: Sequence[int], width: int = 64, gcn_dims: Sequence[int] = (32, 32, 32),
                 ratio: float = 0.5, lam: float = 1.0, node_dim: int = 1, dropout: float = 0.5, tau: float = TAU,
                 input: str = "frames", learn_au_weight: bool = True):
        super().__init__(n_classes, nodes, tau)
        channels, self.inputs = _input_kind(input, "AUGACN")
        self.lam = float(lam)
        self.backbone = STPNet(channels, len(self.nodes), width, node_dim)
        dims = [node_dim, *map(int, gcn_dims)]
        self.gcn = nn.ModuleList(GCNLayer(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.pool = SAGPool(sum(dims[1:]), ratio)
        hidden = dims[-1]
        # The BatchNorm on the readout is ours (the paper: readout, then the classifier). The
        # ReLU GCN stack and SAGPool's tanh gate leave the readout ~100x smaller than the node
        # features and nearly constant between clips; without it AU-GACN answered the majority
        # class for 98% of the lab's clips at the small preset's 15 epochs.
        self.head = nn.Sequential(nn.BatchNorm1d(2 * sum(dims[1:])), nn.Linear(2 * sum(dims[1:]), hidden),
                                  nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, self.n_classes))
        # Eq. 4's w: one per AU node, w = A * softmax(ω) (positive, mean 1; 1 at the start).
        self.au_weight_logits = nn.Parameter(torch.zeros(len(self.nodes)), requires_grad=learn_au_weight)

    def au_weight(self) -> torch.Tensor:
        """Eq. 4's per-AU weights w (positive, mean 1)."""
        return len(self.nodes) * torch.softmax(self.au_weight_logits, 0)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone(x)
        au_logits = h[..., 0]
        outs = []
        for layer in self.gcn:
            h = F.relu(layer(h, self.adjacency))
            outs.append(h)
        pooled, _, _, _ = self.pool(torch.cat(outs, -1), self.adjacency)
        readout = torch.cat([pooled.mean(1), pooled.amax(1)], -1)
        return self.head(readout), au_logits

    def forward(self, x: torch.Tensor):
        logits, au_logits = self._forward(x)
        return (logits, au_logits) if self.training else logits

    def au_scores(self, x: torch.Tensor) -> torch.Tensor:
        """B x A sigmoid scores of the AU nodes, in `nodes` order (the paper's Fig. 4); call it in
        evaluation mode, as for predictions."""
        return torch.sigmoid(self.backbone(x)[..., 0])

    def criterion(self, outputs, y: torch.Tensor, aus: torch.Tensor, aus_known: torch.Tensor | None = None) -> torch.Tensor:
        logits, au_logits = outputs
        return au_me_loss(logits, au_logits, y, aus, self.au_weight(), self.lam, known=aus_known)


class MERGCN(_AUGraphModel):
    """MER-GCN (Lo et al., MIPR 2020, arXiv:2004.08915), faithful in spirit; the AU-GACN paper's
    baseline. Only the abstract could be read: "3D ConvNets to extract AU features and GCN
    layers to discover the dependency between AU nodes for ME categorization". Built as ML-GCN
    (Chen et al. 2019), which AU-GACN's critique fits ("AU node features are not learned from
    the input image"; "the mapping of AUs to emotions is through a simple linear layer"):

    - clip feature f (B x width): STPNet's trunk (the 3D CNN MER-GCN used is unknown to us);
    - two GCN layers (LeakyReLU 0.2 between, as ML-GCN) on the same AU graph (`prepare`) map
      node inputs to one classifier per AU (A x width). ML-GCN feeds GloVe word embeddings of
      the label names; we feed one-hot node inputs (no downloads), so the first layer learns
      the embeddings;
    - AU scores s = f W^T (B x A), then a linear layer to the emotion classes.

    Trained on the emotion labels alone (cross-entropy; AU-GACN claims to be the first to add an
    AU loss); `criterion` ignores the AU targets an AUStack batch carries. Undetermined: the 3D
    CNN, the GCN widths (ours: `hidden`), the node inputs, the graph's threshold.
    """

    def __init__(self, n_classes: int, nodes: Sequence[int], width: int = 64, hidden: int = 32,
                 tau: float = TAU, input: str = "frames"):
        super().__init__(n_classes, nodes, tau)
        channels, self.inputs = _input_kind(input, "MERGCN")
        self.backbone = STPNet(channels, len(self.nodes), width)
        self.backbone.score = nn.Identity()  # the trunk only: f is the pooled feature
        self.register_buffer("node_inputs", torch.eye(len(self.nodes)))
        self.gcn = nn.ModuleList([GCNLayer(len(self.nodes), hidden), GCNLayer(hidden, width)])
        self.head = nn.Sequential(nn.Linear(len(self.nodes), self.n_classes))

    def au_classifiers(self) -> torch.Tensor:
        """A x width: one classifier per AU node, from the GCN over the AU graph."""
        h = F.leaky_relu(self.gcn[0](self.node_inputs, self.adjacency), 0.2)
        return self.gcn[1](h, self.adjacency)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.backbone.features(x) @ self.au_classifiers().t()
        return self.head(scores)

    def criterion(self, outputs: torch.Tensor, y: torch.Tensor, **_au_targets) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), y)


# ---------------------------------------------------------------------------------------------
# The view

class AUStack(FlowStack):
    """A frame stack (`input="frames"`, as views.Stack: C x T x H x W sampled onset -> `until`)
    or flow stack (`input="flow"`, as views.FlowStack) with the clip's AU labels, as dicts
    {"inputs": x, "label": class index, "aus": float multi-hot over `nodes`, "aus_known": bool}.

    A clip without AU codes (SMIC; unannotated rows) gets "aus" zeros and "aus_known" False:
    the AU-ME loss leaves it out of L_AU, so it may sit in a training set and, as the paper
    uses SMIC, in a test set. An AU outside `nodes` raises, naming the clip. `clips` is what
    AUGACN.prepare reads.
    """

    def __init__(self, clips, nodes: Sequence[int], *, input: str = "frames", **kwargs):
        _input_kind(input, "AUStack")
        super().__init__(clips, **kwargs)
        self.input = input
        self.nodes = tuple(int(a) for a in nodes)
        self.aus = torch.from_numpy(au_targets(self.clips, self.nodes))
        self.aus_known = torch.tensor([bool(_clip_aus(c)) for c in self.clips])

    def __getitem__(self, i: int) -> dict:
        read = FlowStack.__getitem__ if self.input == "flow" else Stack.__getitem__
        x, y = read(self, i)
        return {"inputs": x, "label": y, "aus": self.aus[i], "aus_known": self.aus_known[i]}
