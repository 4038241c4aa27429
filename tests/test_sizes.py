"""Fitting a requested shape to what an upstream takes (media/sizes.py), shared by the adapters."""

from __future__ import annotations

import pytest

from image_gateway.errors import InvalidRequest
from image_gateway.media.sizes import (
    fit_pixels,
    nearest_ratio_of,
    nearest_size_of,
    parse_ratio_text,
    requested_shape,
    tier_of,
)

RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "21:9")


@pytest.mark.parametrize(("w", "h", "want"), [(1792, 1024, "16:9"), (1024, 1792, "9:16"), (1000, 1000, "1:1"),
                                              (2560, 1080, "21:9"), (1024, 768, "4:3"), (512, 1024, "9:16")])
def test_nearest_ratio(w: int, h: int, want: str) -> None:
    assert nearest_ratio_of(w, h, RATIOS) == want


def test_nearest_size_prefers_shape_then_area() -> None:
    allowed = ("1024x1024", "1536x1024", "1024x1536", "512x512")
    assert nearest_size_of(1792, 1024, allowed) == "1536x1024"
    assert nearest_size_of(500, 520, allowed) == "512x512"
    assert nearest_size_of(2048, 2048, allowed) == "1024x1024"


def test_fit_pixels_keeps_the_shape_within_bounds() -> None:
    w, h = fit_pixels(4096, 2304, multiple=32, max_pixels=1024 * 1024, max_side=2048)
    assert w % 32 == 0 and h % 32 == 0 and w * h <= 1024 * 1024 and abs(w / h - 16 / 9) < 0.05
    assert fit_pixels(100, 100, multiple=64, min_side=256) == (256, 256)


def test_tiers_and_ratios() -> None:
    tiers = (("1K", 1024), ("2K", 2048), ("4K", 4096))
    assert [tier_of(s, tiers) for s in (512, 1024, 1400, 1500, 3000, 8000)] == ["1K", "1K", "1K", "2K", "4K", "4K"]
    assert parse_ratio_text("16:9") == (16, 9) and parse_ratio_text("16：9") == (16, 9)
    assert parse_ratio_text("²:1") is None and parse_ratio_text("0:1") is None
    assert parse_ratio_text("1" * 9 + ":1") is None


def test_requested_shape() -> None:
    assert requested_shape("1536x1024") == (1536, 1024)
    assert requested_shape(None, "9:16") == (576, 1024)
    assert requested_shape("auto") is None and requested_shape(None) is None
    with pytest.raises(InvalidRequest) as e:
        requested_shape(None, "wide")
    assert e.value.param == "aspect_ratio"
    with pytest.raises(InvalidRequest) as e:
        requested_shape("big")
    assert e.value.param == "size"
