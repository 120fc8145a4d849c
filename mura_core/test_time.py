"""Test-time mirroring: a member reads each image as it is and mirrored left-right, and its outputs are averaged.

The members are trained with horizontal flips, so a radiograph and its mirror image are equally likely to
them; averaging the two readings smooths the probability and the lesion map at the cost of a second pass.
The ensemble's manifest says whether it does so (key "test_time_flip"), chosen on validation like every other
setting; `Ensemble` wraps each member in `Mirrored` then.

The mirrored reading's outputs are mirrored back before they are averaged: heatmaps along their columns, and
the box head's codes (`regions.BOX_CHANNELS`) along their columns with the horizontal offset negated, so each
cell's box is the mean of the box the two readings put there.
"""

from __future__ import annotations

import numpy as np


def mirror_images(images: np.ndarray) -> np.ndarray:
    """(n, S, S, 3) images -> the same images mirrored left-right."""
    return images[:, :, ::-1]


def unmirror_maps(maps: np.ndarray) -> np.ndarray:
    """(n, H, W) heatmaps of mirrored images -> in the original images' frame."""
    return maps[:, :, ::-1]


def unmirror_codes(codes: np.ndarray) -> np.ndarray:
    """(n, m, m, 4) box-head codes (dx, dy, log_w, log_h) of mirrored images -> in the original images' frame:
    the cells mirrored along the columns and the horizontal offset of each box's centre negated."""
    out = np.array(codes[:, :, ::-1], dtype=np.float32)
    out[..., 0] = -out[..., 0]
    return out


class Mirrored:
    """A member (`gradcam.CamExplainer` or `onnx_runtime.OnnxMember`) whose every reading is the mean of the
    image's and its mirror image's, in one batch of twice the size. Everything else is the member's own."""

    def __init__(self, member):
        self.member = member

    def __getattr__(self, name):
        return getattr(self.member, name)

    def predict(self, images: np.ndarray) -> np.ndarray:
        n = len(images)
        probs = self.member.predict(np.concatenate([images, mirror_images(images)]))
        return 0.5 * (probs[:n] + probs[n:])

    def explain(self, images: np.ndarray, method: str = "gradcam") -> tuple[np.ndarray, np.ndarray]:
        n = len(images)
        probs, maps = self.member.explain(np.concatenate([images, mirror_images(images)]), method)
        return 0.5 * (probs[:n] + probs[n:]), 0.5 * (maps[:n] + unmirror_maps(maps[n:]))

    def explain_lesions(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        n = len(images)
        probs, maps, codes = self.member.explain_lesions(np.concatenate([images, mirror_images(images)]))
        if codes is not None:
            codes = 0.5 * (codes[:n] + unmirror_codes(codes[n:]))
        return 0.5 * (probs[:n] + probs[n:]), 0.5 * (maps[:n] + unmirror_maps(maps[n:])), codes
