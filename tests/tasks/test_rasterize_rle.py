"""Exact rasterisation of boxes, ellipses and polygons, and the SIIM RLE, against hand-computed pixels."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.rasterize import boxes_to_mask, ellipse_to_mask, polygon_to_mask, shape_bbox, shape_to_mask
from tasks.rle import (
    ABSOLUTE,
    RELATIVE,
    RLEError,
    coco_rle,
    decode_siim_rle,
    detect_siim_encoding,
    encode_siim_rle,
    parse_rle,
)


def test_box_pixel_centre_rule():
    # x in [2.5, 5.5): centres 2.5 (c=2), 3.5, 4.5 are inside, 5.5 is not -> columns 2..4
    m = boxes_to_mask([[2.5, 1.0, 3.0, 2.0]], 6, 8)
    assert m.sum() == 3 * 2
    assert m[1:3, 2:5].all() and not m[:, 5].any() and not m[0].any()


def test_circle_inscribed_in_10x10_has_80_pixels():
    # centre (5, 5), radius 5; pixel-centre offsets are half-integers, so no centre lies on the circle.
    # Per row |dy| = 0.5, 1.5, 2.5, 3.5, 4.5 -> 10, 10, 8, 8, 4 pixels, each twice: 80.
    m = ellipse_to_mask(0, 0, 10, 10, 12, 12)
    assert m.sum() == 80
    assert list(m[:10, :10].sum(axis=1)) == [4, 8, 8, 10, 10, 10, 10, 8, 8, 4]


def test_ellipse_is_inscribed_not_the_box():
    m = ellipse_to_mask(0, 0, 20, 10, 12, 22)  # a = 10, b = 5
    box = boxes_to_mask([[0, 0, 20, 10]], 12, 22)
    assert 0 < m.sum() < box.sum() and not m[0, 0] and m[5, 10]
    assert m.sum() == sum(
        1 for r in range(10) for c in range(20) if ((c + 0.5 - 10) / 10) ** 2 + ((r + 0.5 - 5) / 5) ** 2 <= 1
    )


def test_triangle_has_45_pixels():
    # vertices (0,0), (10,0), (0,10): row r (y = r + .5) spans x in [0, 9.5 - r): 9 - r pixels, r = 0..8
    m = polygon_to_mask([(0, 0), (10, 0), (0, 10)], 12, 12)
    assert m.sum() == 45
    assert list(m.sum(axis=1)[:10]) == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]


def test_polygon_rectangle_equals_box_and_is_not_transposed():
    pts = [(2, 3), (7, 3), (7, 9), (2, 9)]  # 5 wide, 6 tall
    m = polygon_to_mask(pts, 12, 12)
    assert (m == boxes_to_mask([[2, 3, 5, 6]], 12, 12)).all()
    assert m[3:9, 2:7].all() and m.sum() == 30  # rows 3..8, columns 2..6: not the transpose


def test_concave_polygon_even_odd():
    # a "U": 0..6 wide, 0..6 tall, notch x in [2, 4), y in [0, 4) cut out: 36 - 8 = 28
    u = [(0, 0), (2, 0), (2, 4), (4, 4), (4, 0), (6, 0), (6, 6), (0, 6)]
    m = polygon_to_mask(u, 8, 8)
    assert m.sum() == 28 and not m[0:4, 2:4].any() and m[4:6, 2:4].all()


def test_transform_rasterises_at_another_size():
    # the same circle, drawn at twice the scale with an offset, is the 20x20 circle
    small = shape_to_mask("ellipse", [[0, 0], [10, 10]], 24, 24, transform=(2.0, 1.0, 1.0))
    assert (small == ellipse_to_mask(2, 2, 22, 22, 24, 24)).all()
    assert shape_bbox("polygon", [[3, 9], [7, 2], [5, 4]]) == [3.0, 2.0, 4.0, 7.0]


def test_shapes_clip_at_the_border():
    m = boxes_to_mask([[-3, -3, 5, 5]], 4, 4)
    assert m.sum() == 4 and m[:2, :2].all()
    assert polygon_to_mask([(-5, -5), (2, -5), (2, 2), (-5, 2)], 4, 4).sum() == 4


def test_siim_relative_rle_decodes_column_major():
    # H=4, W=3; run 1 starts at 1 (2 px: flat 1, 2); run 2 starts 3 after the end of run 1 (flat 6, 1 px).
    # Flat index i is (row i % H, column i // H): (1,0), (2,0), (2,1).
    m = decode_siim_rle(parse_rle("1 2 3 1"), 4, 3)
    expected = np.zeros((4, 3), np.uint8)
    expected[1, 0] = expected[2, 0] = expected[2, 1] = 1
    assert (m == expected).all()
    assert encode_siim_rle(m) == "1 2 3 1"
    # the same numbers read as absolute, 1-based starts: flat 0, 1 and 2
    assert decode_siim_rle(parse_rle("1 2 3 1"), 4, 3, ABSOLUTE)[:, 0].tolist() == [1, 1, 1, 0]


def test_siim_rle_round_trip_and_detection():
    rng = np.random.default_rng(1)
    masks = [(rng.random((16, 12)) > 0.6).astype(np.uint8) for _ in range(5)]
    pairs = [parse_rle(encode_siim_rle(m)) for m in masks]
    assert detect_siim_encoding(pairs) == RELATIVE
    for m, p in zip(masks, pairs):
        assert (decode_siim_rle(p, 16, 12) == m).all()
    absolute = [np.array([[5, 3], [20, 4], [40, 1]]), np.array([[100, 2], [200, 2]])]
    assert detect_siim_encoding(absolute) == ABSOLUTE
    assert parse_rle(" -1").shape == (0, 2) and encode_siim_rle(np.zeros((3, 3))) == "-1"


@pytest.mark.parametrize(
    "text, message",
    [("1 2 3", "odd number"), ("1 x", "not an integer"), ("4 0", "positive"), ("-2 3", "negative")],
)
def test_malformed_rle(text, message):
    with pytest.raises(RLEError, match=message):
        parse_rle(text)


def test_rle_outside_the_image():
    with pytest.raises(RLEError, match="outside|ends at pixel"):
        decode_siim_rle(parse_rle("10 5 100 3"), 8, 8)


def test_coco_rle_round_trip():
    from pycocotools import mask as mask_utils

    m = ellipse_to_mask(3, 4, 17, 12, 20, 24)
    rle = coco_rle(m)
    assert isinstance(rle["counts"], str) and rle["size"] == [20, 24]
    back = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    assert (back == m).all()
