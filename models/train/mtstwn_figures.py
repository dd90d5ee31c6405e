"""`--save-figures` for MTSTWN: the ASAM mask of a few held-out clips over their apex frame (the paper's
Figure 9), from the trained model."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F


@torch.no_grad()
def asam_masks(
    model, ds, idx: list[int], device, prepare=None
) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """-> (apex frames (N, 3, S, S), masks upsampled to (N, S, S), items' labels), eval mode; `prepare` maps
    the clips to the model's input (the task's input normalisation)."""
    items = [ds[i] for i in idx]
    video = torch.stack([it["video"] for it in items]).to(device)
    was = model.training
    model.eval()
    mask = model(video if prepare is None else prepare(video))["mask"]  # (N, 1, S/4, S/4)
    model.train(was)
    apex = torch.stack([it["video"][:, int(it["apex"])] for it in items])
    up = F.interpolate(mask.float().cpu(), size=apex.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    meta = [{k: int(it[k]) for k in ("experienced", "required", "subject")} for it in items]
    return apex, up, meta


def asam_figure(model, ds, idx: list[int], path: Path, device, prepare=None) -> Path:
    """Apex frame (top), ASAM mask (middle) and the mask over the frame (bottom) per clip; each mask is
    shown on its own min..max range (with mask_act="none" it is an unbounded linear map)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    apex, mask, meta = asam_masks(model, ds, idx, device, prepare)
    names = getattr(ds, "classes", None)
    n = len(idx)
    fig, axes = plt.subplots(3, n, figsize=(2.4 * n, 7.4), squeeze=False)
    for j in range(n):
        img = apex[j].permute(1, 2, 0).clamp(0, 1).numpy()
        m = mask[j]
        m = ((m - m.min()) / (m.max() - m.min()).clamp_min(1e-12)).numpy()
        ex, re = meta[j]["experienced"], meta[j]["required"]
        title = f"ex {names[ex]}\nre {names[re]}" if names else f"ex {ex}, re {re}"
        axes[0, j].imshow(img)
        axes[0, j].set_title(title, fontsize=8)
        axes[1, j].imshow(m, cmap="jet", vmin=0, vmax=1)
        axes[2, j].imshow(img)
        axes[2, j].imshow(m, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        for i in range(3):
            axes[i, j].axis("off")
    axes[0, 0].text(
        -0.1, 0.5, "apex frame", rotation=90, va="center", ha="right", transform=axes[0, 0].transAxes
    )
    axes[1, 0].text(
        -0.1, 0.5, "ASAM mask", rotation=90, va="center", ha="right", transform=axes[1, 0].transAxes
    )
    axes[2, 0].text(
        -0.1, 0.5, "overlay", rotation=90, va="center", ha="right", transform=axes[2, 0].transAxes
    )
    fig.suptitle("MTSTWN: ASAM masks of held-out clips (each scaled to its own range)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
