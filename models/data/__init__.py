"""Data sets of the reference models: synthetic clips with exact ground truth, loaders for real data sets
stored as frame folders, evaluation splits and the face geometry they share.

Modules (a further data set is one new module built from the shared ones):

- ``geometry``: iBUG-68 layout, ``inter_ocular_distance``, pixel grid, resizing of points and flow.
- ``face``, ``motion``: the rendered neutral face and the class motions of the synthetic data sets.
- ``synthetic``: ``SyntheticMicroExpressions`` (MOL) and ``render_clip``, which any synthetic set reuses.
- ``frames``: frame folders, label CSVs, label maps and image loading shared by the real-data loaders.
- ``frame_folder``: ``FrameFolderDataset`` (MOL: CASME II / SAMM / SMIC style).
- ``mfed``: ``SyntheticMFED`` and ``MFEDFolderDataset`` (MTSTWN: MFED, RGB clips with an experienced and a
  required expression; their item format is in the module's docstring).
- ``dfer``: ``SyntheticDFER``, ``DFEWDataset``, ``AFEWDataset`` and ``segment_indices`` (STT: dynamic facial
  expression recognition, 16 RGB frames ``(16, 3, S, S)`` per item; the item format is in the module's
  docstring).
- ``splits``: ``loso_folds``, ``split_indices``.

The MOL data sets return items as dicts that torch's default collate stacks into batches:

- ``"video"``: float32 ``(1, t, S, S)``, grey values in [0, 1].
- ``"flow"``: float32 ``(2, S, S, t-1)``; ``flow[:, y, x, k] = (dx, dy)`` in pixels is the forward flow from
  frame k to frame k+1: the content at pixel (x, y) of frame k is at (x + dx, y + dy) in frame k+1.
  Channel 0 is horizontal (x), channel 1 vertical (y).
- ``"landmarks"``: float32 ``(136, t)``: the 68 iBUG points of frame k in column k, interleaved
  ``(x0, y0, x1, y1, ...)``.
- ``"label"``, ``"subject"``: int64 scalar tensors.
- ``"has_flow"``, ``"has_landmarks"``: bool scalar tensors; when False the matching tensor is all zeros.

Pixel coordinates: the centre of pixel (column x, row y) is at (x, y) (see ``geometry``).
"""

from .dfer import DFER_CLASSES, SyntheticDFER, segment_indices
from .dfer_folder import AFEWDataset, DFEWDataset
from .frame_folder import FrameFolderDataset
from .geometry import NUM_LANDMARKS, inter_ocular_distance
from .mfed import MFED_CLASSES, MFEDFolderDataset, SyntheticMFED
from .motion import MAX_AMPLITUDE, PRIMITIVES
from .splits import loso_folds, split_indices
from .synthetic import SyntheticMicroExpressions

__all__ = [
    "SyntheticMicroExpressions",
    "FrameFolderDataset",
    "loso_folds",
    "split_indices",
    "inter_ocular_distance",
    "NUM_LANDMARKS",
    "PRIMITIVES",
    "MAX_AMPLITUDE",
    "SyntheticMFED",
    "MFEDFolderDataset",
    "MFED_CLASSES",
    "SyntheticDFER",
    "DFEWDataset",
    "AFEWDataset",
    "DFER_CLASSES",
    "segment_indices",
]
