"""models.data.geometry: the inter-ocular distance (MOL's landmark-loss normaliser), the pixel grid and
the mapping of points and flow fields to a resized frame."""

import math

import pytest
import torch

from models.data import SyntheticMicroExpressions, inter_ocular_distance
from models.data.geometry import pixel_grid, resize_flow, resize_points


@pytest.fixture(scope="module")
def ds():
    return SyntheticMicroExpressions(num_classes=5, num_subjects=3, clips=7, t=8, size=128, seed=0)


def test_inter_ocular_distance(ds):
    lm = torch.zeros(2, 68, 2)
    lm[:, 36:42] = torch.tensor([10.0, 20.0])  # right eye centre (10, 20)
    lm[:, 42:48] = torch.tensor([13.0, 24.0])  # left eye centre (13, 24): distance 5
    lm[1] *= 2
    assert torch.allclose(inter_ocular_distance(lm.reshape(2, 136)), torch.tensor([5.0, 10.0]))
    item = ds[0]
    iod = inter_ocular_distance(item["landmarks"].t())  # per frame, (t,)
    assert iod.shape == (ds.t,)
    assert ((iod > 28) & (iod < 38)).all()  # the synthetic eyes are 2 * (15..18) px apart at S = 128
    batch = torch.stack([item["landmarks"], ds[1]["landmarks"]]).transpose(1, 2)  # (B, t, 136)
    assert inter_ocular_distance(batch).shape == (2, ds.t)
    with pytest.raises(ValueError):
        inter_ocular_distance(torch.zeros(3, 68))
    assert math.isfinite(float(iod.mean()))


def test_inter_ocular_pupils():
    pts = torch.zeros(68, 2)
    pts[36:42] = torch.tensor([10.0, 20.0])  # left eye contour collapsed on its centre
    pts[42:48] = torch.tensor([40.0, 60.0])
    assert inter_ocular_distance(pts.flatten()).item() == pytest.approx(50.0)  # 3-4-5 triangle x 10


def test_pixel_grid_is_x_then_y():
    p = pixel_grid(5)
    assert p.shape == (5, 5, 2)
    assert p[2, 4].tolist() == [4.0, 2.0]  # row 2, column 4 -> (x, y) = (4, 2)


def test_resize_points_keeps_the_frame_edges():
    # the outer pixel edges (-0.5 and W - 0.5) map onto the resized frame's edges; pixel centres scale about them
    pts = torch.tensor([[-0.5, -0.5], [29.5, 19.5], [14.5, 9.5]])
    out = resize_points(pts, width=30, height=20, size=16)
    assert torch.allclose(out, torch.tensor([[-0.5, -0.5], [15.5, 15.5], [7.5, 7.5]]))
    assert torch.equal(resize_points(pts, 16, 16, 16), pts)


def test_resize_flow_scales_the_vectors():
    flow = torch.zeros(3, 2, 10, 15)
    flow[:, 0], flow[:, 1] = 1.5, -2.0
    out = resize_flow(flow, 30)
    assert out.shape == (3, 2, 30, 30)
    assert torch.allclose(out[:, 0], torch.full((3, 30, 30), 1.5 * 30 / 15))
    assert torch.allclose(out[:, 1], torch.full((3, 30, 30), -2.0 * 30 / 10))
