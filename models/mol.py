"""MOL (micro-action-aware joint learning: MER + optical flow + landmarks), built on fxkernels layers.

Paper: Shao et al., "MOL: Joint Estimation of Micro-Expression, Optical Flow, and Landmark via
Transformer-Graph-Style Convolution" (section 3); published code: https://github.com/CYF-cuber/MOL.
User guide: docs/models/mol.md.

`MOL(num_classes, semantics="official")` reproduces the published code's layout and parameter names, so
an official checkpoint loads with `load_state_dict(..., strict=True)`:

    conv_stack.conv_stack   Conv2d(1,8,4,s2) -> Conv2d(8,32,3,s2) -> Conv2d(32,64,2,s2,p1) -> Conv2d(64,128,1)
    FCC_1, FCC_2            ParCFCC (first / second frame of each pair)
    CCC_1, CCC_2            spatial-graph CCC, `conv1`/`conv2` = Conv1d(1, 256, 256), k = 4
    mer_3dcnn               conv3d -> MaxPool3d(2) -> Dropout -> fc1 -> ReLU -> Dropout -> fc2
    ldm_predictor           convldm -> ReLU -> fc1 -> ReLU -> fc2 (136 = 68 (x, y) pairs)
    flownet                 FlowNetC with BatchNorm, correlation = `fxkernels.spatial_correlation`

`semantics="paper"` swaps FCC_i/CCC_i for the paper's F5C blocks (`F5C_1`, `F5C_2`: the paper's FCC block
with its residual, then the channel-graph CCC with its 1x1 conv; fxkernels/ops/fcc/README.md and
fxkernels/ops/ccc/README.md give the math of both semantics).

Efficient by construction: the conv stack and FlowNet's three encoder convs run once per frame (not twice
per pair), and all t-1 pairs go through the F5C blocks, FlowNet and the landmark head as one batch of
B*(t-1), with no Python loop over pairs. In eval mode the outputs equal the published pair-by-pair
computation (`published_forward`, tested). In training mode BatchNorm normalises over the batched frames /
pairs instead of one pair's B samples at a time, so batch statistics (and the running averages) differ
slightly from the published loop; this is the only behavioural difference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import fxkernels
from fxkernels.ops.ccc.reference import edge_conv_loop
from fxkernels.ops.corr.reference import spatial_correlation_loop

from .data.geometry import NUM_LANDMARKS, inter_ocular_distance

SIZE = 128  # input frames are SIZE x SIZE: the heads' Linear sizes assume 16x16 feature maps
FEAT = 128  # channels of the per-frame feature maps
SEMANTICS = ("official", "paper")


# --------------------------------------------------------------------------------------------- blocks
class ConvStack(nn.Module):
    """Per-frame feature extractor, no activations: (N, 1, 128, 128) -> (N, 128, 16, 16)."""

    def __init__(self):
        super().__init__()
        self.conv_stack = nn.Sequential(
            nn.Conv2d(1, 8, 4, stride=2),
            nn.Conv2d(8, 32, 3, stride=2),
            nn.Conv2d(32, 64, 2, stride=2, padding=1),
            nn.Conv2d(64, 128, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_stack(x)


class MER3DCNN(nn.Module):
    """Expression classifier on the time-stacked pair features: (B, 128, 16, 16, 2(t-1)) -> (B, classes)."""

    def __init__(self, num_classes: int, t: int = 8):
        super().__init__()
        if t < 4:
            raise ValueError(f"MOL: t must be >= 4 (the 3-D conv spans 5 of the 2(t-1) steps), got {t}")
        self.conv3d = nn.Conv3d(FEAT, 32, kernel_size=(2, 2, 5), stride=(2, 2, 1))
        self.maxpooling3d = nn.MaxPool3d(2)
        self.dropout = nn.Dropout()
        # (32, 8, 8, 2t-6) after the conv, (32, 4, 4, t-3) after the pool: 2560 for t = 8
        self.fc1 = nn.Linear(32 * 4 * 4 * (t - 3), 256)
        self.fc2 = nn.Linear(256, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.dropout(self.maxpooling3d(self.conv3d(x)))
        x = self.dropout(F.relu(self.fc1(x.flatten(1))))
        return self.fc2(x)


class LDMPredictor(nn.Module):
    """Landmark head on the second frame's features: (N, 128, 16, 16) -> (N, 136), (x0, y0, x1, y1, ...)."""

    def __init__(self):
        super().__init__()
        self.convldm = nn.Conv2d(FEAT, 32, 3)
        self.fc1 = nn.Linear(32 * 14 * 14, 512)
        self.fc2 = nn.Linear(512, 2 * NUM_LANDMARKS)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.convldm(x)).flatten(1)
        return self.fc2(F.relu(self.fc1(x)))


def _conv(cin: int, cout: int, k: int = 3, s: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, s, padding=(k - 1) // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.1),
    )


def _deconv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.LeakyReLU(0.1))


def _crop_like(x: Tensor, ref: Tensor) -> Tensor:
    return x[:, :, : ref.shape[2], : ref.shape[3]]


class FlowNetC(nn.Module):
    """FlowNetC with BatchNorm as used by MOL: two frames + their pair features -> full-resolution flow.

    `encode(frames)`: the shared conv1..conv3 on (N, 1, 128, 128) frames. `forward(enc_a, enc_b, frame_a, feat)`
    takes the encodings of the first and second frame of each pair, the first raw frame (N, 1, 128, 128) and
    the pair features feat = cat(f1, f2) (N, 256, 16, 16); returns flow (N, 2, 128, 128).
    """

    def __init__(self, backend: str = "auto"):
        super().__init__()
        self.conv1 = _conv(1, 64, 6, 2)
        self.conv2 = _conv(64, 128, 4, 2)
        self.conv3 = _conv(128, 256, 2, 2)
        self.conv_redir = _conv(256, 32, 1, 1)
        self.conv3_1 = _conv(32 + 441 + 2 * FEAT, 256)
        self.conv4 = _conv(256, 512, s=2)
        self.conv4_1 = _conv(512, 512)
        self.conv5 = _conv(512, 512, s=2)
        self.conv5_1 = _conv(512, 512)
        self.conv6 = _conv(512, 1024, s=2)
        self.conv6_1 = _conv(1024, 1024)
        for i, (cin, cout) in zip(
            range(5, -1, -1), [(1024, 512), (1026, 256), (770, 128), (386, 128), (258, 64), (130, 32)]
        ):
            setattr(self, f"deconv{i}", _deconv(cin, cout))
        for i, cin in zip(range(6, -1, -1), [1024, 1026, 770, 386, 258, 130, 35]):
            setattr(self, f"predict_flow{i}", nn.Conv2d(cin, 2, 3, 1, 1, bias=False))
        for i in range(6, 0, -1):
            setattr(self, f"upsampled_flow{i}_to_{i - 1}", nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=False))
        self.corr = fxkernels.SpatialCorrelation(21, 2, normalize=True, negative_slope=0.1, backend=backend)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, 0.1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def encode(self, frames: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        c1 = self.conv1(frames)
        c2 = self.conv2(c1)
        return c1, c2, self.conv3(c2)

    def forward(self, enc_a, enc_b, frame_a: Tensor, feat: Tensor, corr=None) -> Tensor:
        c1a, c2a, c3a = enc_a
        c3b = enc_b[2]
        x = torch.cat([self.conv_redir(c3a), (corr or self.corr)(c3a, c3b), feat], 1)
        c3 = self.conv3_1(x)
        c4 = self.conv4_1(self.conv4(c3))
        c5 = self.conv5_1(self.conv5(c4))
        c6 = self.conv6_1(self.conv6(c5))
        levels = [c5, c4, c3, c2a, c1a, frame_a]  # the encoder map each decoder level concatenates
        x = c6
        flow = self.predict_flow6(c6)
        for i, enc in zip(range(5, -1, -1), levels):
            up = _crop_like(getattr(self, f"upsampled_flow{i + 1}_to_{i}")(flow), enc)
            de = _crop_like(getattr(self, f"deconv{i}")(x), enc)
            x = torch.cat([enc, de, up], 1)
            flow = getattr(self, f"predict_flow{i}")(x)
        return flow


# ----------------------------------------------------------------------------------------------- model
class MOL(nn.Module):
    """MOL: x (B, 1, t, 128, 128) grey clip -> (logits (B, classes), flow (B, 2, 128, 128, t-1),
    landmarks (B, 136, t-1)); flow[..., k] is frame k -> k+1, landmarks[..., k] belong to frame k+1.

    semantics: "official" (published code layout, loads its checkpoints) or "paper" (the paper's FCC block +
    channel-graph CCC with the 1x1 conv). backend: fxkernels backend of every fused layer
    ("reference" = plain PyTorch everywhere).
    """

    def __init__(
        self, num_classes: int = 5, semantics: str = "official", backend: str = "auto", t: int = 8, k: int = 4
    ):
        super().__init__()
        if semantics not in SEMANTICS:
            raise ValueError(f"MOL: semantics must be one of {SEMANTICS}, got {semantics!r}")
        self.num_classes, self.semantics, self.backend, self.t = num_classes, semantics, backend, t
        self.neighbor_num = k
        self.conv_stack = ConvStack()
        if semantics == "official":
            self.FCC_1 = fxkernels.ParCFCC(FEAT // 2, backend=backend)
            self.FCC_2 = fxkernels.ParCFCC(FEAT // 2, backend=backend)
            self.CCC_1 = fxkernels.CCC(16, 16, k, graph="spatial", out_conv=False, backend=backend)
            self.CCC_2 = fxkernels.CCC(16, 16, k, graph="spatial", out_conv=False, backend=backend)
        else:
            self.F5C_1 = fxkernels.F5C(FEAT, 16, 16, k, graph="channel", backend=backend)
            self.F5C_2 = fxkernels.F5C(FEAT, 16, 16, k, graph="channel", backend=backend)
        self.flownet = FlowNetC(backend)
        self.mer_3dcnn = MER3DCNN(num_classes, t)
        self.ldm_predictor = LDMPredictor()

    def pair_features(self, f: Tensor, second: bool) -> Tensor:
        """F5C of the first (second=False) or second frame of each pair: (N, 128, 16, 16) -> same."""
        if self.semantics == "paper":
            return (self.F5C_2 if second else self.F5C_1)(f)
        z = (self.FCC_2 if second else self.FCC_1)(f)
        return z + (self.CCC_2 if second else self.CCC_1)(z)

    def _check_input(self, x: Tensor):
        if x.dim() != 5 or x.shape[1] != 1 or x.shape[2] != self.t or x.shape[3:] != (SIZE, SIZE):
            raise ValueError(
                f"MOL: x must have shape (B, 1, t={self.t}, {SIZE}, {SIZE}), got {tuple(x.shape)}"
            )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        self._check_input(x)
        B, _, t = x.shape[:3]
        P = t - 1
        frames = x.transpose(1, 2).reshape(B * t, 1, SIZE, SIZE)
        feats = self.conv_stack(frames).view(B, t, FEAT, 16, 16)
        f1 = self.pair_features(feats[:, :-1].reshape(B * P, FEAT, 16, 16), second=False)
        f2 = self.pair_features(feats[:, 1:].reshape(B * P, FEAT, 16, 16), second=True)
        # time-stacked in the published order f1_0, f2_0, f1_1, f2_1, ... -> (B, 128, 16, 16, 2(t-1))
        cross = torch.stack([f1.view(B, P, FEAT, 16, 16), f2.view(B, P, FEAT, 16, 16)], 2)
        cross = cross.view(B, 2 * P, FEAT, 16, 16).permute(0, 2, 3, 4, 1)
        logits = self.mer_3dcnn(cross)
        ldm = self.ldm_predictor(f2).view(B, P, 2 * NUM_LANDMARKS).transpose(1, 2)
        # FlowNet's encoder once per frame; pair k takes frames k and k+1
        enc = [e.view(B, t, *e.shape[1:]) for e in self.flownet.encode(frames)]
        enc_a = [e[:, :-1].reshape(B * P, *e.shape[2:]) for e in enc]
        enc_b = [e[:, 1:].reshape(B * P, *e.shape[2:]) for e in enc]
        frame_a = frames.view(B, t, 1, SIZE, SIZE)[:, :-1].reshape(B * P, 1, SIZE, SIZE)
        flow = self.flownet(enc_a, enc_b, frame_a, torch.cat([f1, f2], 1))
        flow = flow.view(B, P, 2, SIZE, SIZE).permute(0, 2, 3, 4, 1)
        return logits, flow, ldm


# ------------------------------------------------------------------------------------------------ loss
def mol_loss(outputs, batch: dict, flow_weight: float = 0.1, landmark_weight: float = 68.0):
    """MOL eq. 6-9: CE(logits) + flow_weight * MSE(flow) + landmark_weight * L_m.

    L_m = 1/(m (t-1)) sum_k sum_s (|dx| + |dy|) / d_o(k+1): per-landmark L1 error normalised by the
    ground-truth inter-ocular distance of frame k+1. outputs = MOL(x); batch: "label" (B,), "flow"
    (B, 2, S, S, t-1), "landmarks" (B, 136, t) and optional bool "has_flow"/"has_landmarks" (B,) masks
    (samples without ground truth skip that term). Returns (total, {"ce", "flow", "landmarks"} detached).
    """
    logits, flow, ldm = outputs
    _check_loss_batch(logits, flow, ldm, batch)
    ce = F.cross_entropy(logits, batch["label"])
    B = logits.shape[0]
    has_flow = batch.get("has_flow", torch.ones(B, dtype=torch.bool)).to(logits.device)
    has_ldm = batch.get("has_landmarks", torch.ones(B, dtype=torch.bool)).to(logits.device)
    # masked means keep every head in the graph (DistributedDataParallel needs all parameters used)
    wf, wm = has_flow.to(flow.dtype), has_ldm.to(ldm.dtype)
    err = (flow - batch["flow"].to(flow)).pow(2).flatten(1).mean(1)  # (B,): mean over pairs and pixels
    lf = (err * wf).sum() / wf.sum().clamp_min(1)
    gt = batch["landmarks"].to(ldm)[..., 1:]  # (B, 136, t-1): frames 1..t-1
    d = inter_ocular_distance(gt.transpose(1, 2)).clamp_min(1e-6)  # (B, t-1); 0 only without ground truth
    per = (ldm - gt).abs().unflatten(1, (NUM_LANDMARKS, 2)).sum(2)  # (B, 68, t-1): |dx| + |dy|
    lm = ((per / d[:, None, :]).mean((1, 2)) * wm).sum() / wm.sum().clamp_min(1)
    total = ce + flow_weight * lf + landmark_weight * lm
    return total, {"ce": ce.detach(), "flow": lf.detach(), "landmarks": lm.detach()}


def _check_loss_batch(logits: Tensor, flow: Tensor, ldm: Tensor, batch: dict) -> None:
    # a wrong ground-truth shape would broadcast silently in the MSE / L1 terms
    B, P = logits.shape[0], flow.shape[-1]
    want = {"label": (B,), "flow": tuple(flow.shape), "landmarks": (B, 2 * NUM_LANDMARKS, P + 1)}
    want.update({k: (B,) for k in ("has_flow", "has_landmarks") if k in batch})
    for key, shape in want.items():
        if key not in batch:
            raise ValueError(f"mol_loss: batch has no {key!r} (expected a tensor of shape {shape})")
        got = tuple(batch[key].shape)
        if got != shape:
            raise ValueError(
                f"mol_loss: batch[{key!r}] must have shape {shape} to match the model outputs, got {got}"
            )


# ------------------------------------------------------------------- the published structure (re-created)
def _official_topk_graph(f: Tensor, k: int) -> Tensor:
    # the published graph step: positions as nodes, cosine over channels, torch.topk
    xn = F.normalize(f, dim=1)
    return (xn.transpose(2, 1) @ xn).topk(k=k, dim=-1)[1]


def _loop_correlation(a: Tensor, b: Tensor) -> Tensor:
    out = spatial_correlation_loop(a, b, 21, 2) / a.shape[1]
    return F.leaky_relu(out, 0.1)


def published_forward(model: MOL, x: Tensor, ccc_loop: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """The published MOL forward re-created (our own code) with `model`'s weights: a Python loop over the
    t-1 pairs, the conv stack and FlowNet's encoder run on both frames of every pair, the official topk
    graph, and (ccc_loop=True) the CCC as one Conv1d call per node and neighbour. "official" semantics only.

    Used by the tests (eval-mode equality with `MOL.forward`) and bench_models.py (what users of the
    published code pay). Same outputs and layout as `MOL.forward`.
    """
    if model.semantics != "official":
        raise ValueError("published_forward: only the official semantics has a published structure")
    model._check_input(x)
    t = x.shape[2]
    fn = model.flownet
    cross, flows, ldms = [], [], []
    for i in range(t - 1):
        a, b = x[:, :, i], x[:, :, i + 1]
        feats = []
        for fr, fcc, ccc in ((a, model.FCC_1, model.CCC_1), (b, model.FCC_2, model.CCC_2)):
            z = fcc(model.conv_stack(fr))
            B, C, H, W = z.shape
            flat = z.reshape(B, C, H * W)
            nbr = _official_topk_graph(flat, model.neighbor_num)
            if ccc_loop:
                e = edge_conv_loop(flat, nbr, ccc.conv1, ccc.conv2, graph="spatial")
            else:
                w1, w2 = ccc.conv1.weight[:, 0], ccc.conv2.weight[:, 0]
                e = fxkernels.spatial_edge_conv(
                    flat, nbr, w1, w2, ccc.conv1.bias, ccc.conv2.bias, backend="reference"
                )
            feats.append(z + e.reshape(B, C, H, W))
        cross += [feats[0], feats[1]]
        ldms.append(model.ldm_predictor(feats[1]))
        enc_a, enc_b = fn.encode(a), fn.encode(b)
        corr = _loop_correlation if ccc_loop else None
        flows.append(fn(enc_a, enc_b, a, torch.cat(feats, 1), corr=corr))
    logits = model.mer_3dcnn(torch.stack(cross, -1))
    return logits, torch.stack(flows, -1), torch.stack(ldms, -1)


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
