"""Ratio detection/removal, no-enhance removal and ratio -> size helpers."""

from __future__ import annotations

import pytest

from image_gateway.prompt.ratio import (
    RATIOS,
    RatioMatch,
    nearest_ratio,
    parse_ratio,
    ratio_to_size,
    strip_no_enhance,
)
from image_gateway.providers.zimage import ZIMAGE_SIZES


def test_ratios_are_the_ten() -> None:
    assert set(RATIOS) == {"1:1", "1:2", "2:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9", "21:9"}
    assert len(RATIOS) == 10


@pytest.mark.parametrize(
    ("text", "ratio", "prompt"),
    [
        # the seed's examples (protocols.md §4.2 step 5), with the README's strict trigger rule
        ("一只猫，比例 16:9", "16:9", "一只猫"),
        ("比例9：16 狗", "9:16", "狗"),
        ("A cat. ratio 16:9 reading", "16:9", "A cat. reading"),
        ("一只猫，比例 16:9，在看书", "16:9", "一只猫，在看书"),
        # other triggers
        ("a cat --ar 21:9", "21:9", "a cat"),
        ("a cat --ar 16:9 --v 6", "16:9", "a cat --v 6"),
        ("a cat --aspect 2:3", "2:3", "a cat"),
        ("aspect ratio 4:3, a dog", "4:3", "a dog"),
        ("Aspect Ratio: 1:2 a tall tower", "1:2", "a tall tower"),
        ("a lake, aspect=2:1", "2:1", "a lake"),
        ("cat aspect_ratio=3:2", "3:2", "cat"),
        ("RATIO：3:4 portrait", "3:4", "portrait"),
        ("比例：1：1 头像", "1:1", "头像"),
        ("画面比例为3:2的风景", "3:2", "风景"),
        ("一只猫ratio 16:9在看书", "16:9", "一只猫在看书"),
        # separators and punctuation around the phrase
        ("a cat, ratio 16:9, reading", "16:9", "a cat, reading"),
        ("a cat, ratio 16:9 reading", "16:9", "a cat, reading"),
        ("a cat, ratio 16:9.", "16:9", "a cat."),
        ("a dog. Ratio 16:9.", "16:9", "a dog."),
        ("a cat (ratio 16:9) reading", "16:9", "a cat reading"),
        ("cat （比例 16:9）， 狗", "16:9", "cat，狗"),
        ("ratio 16 : 9 x", "16:9", "x"),
        ("ratio 16:09 x", "16:9", "x"),
        # first recognised ratio wins, all recognised phrases are removed
        ("ratio 16:9 then --ar 1:1 end", "16:9", "then end"),
        ("ratio 5:7 and ratio 4:3 cat", "4:3", "ratio 5:7 and cat"),
    ],
)
def test_parse_ratio_with_trigger(text: str, ratio: str, prompt: str) -> None:
    assert parse_ratio(text) == RatioMatch(ratio, prompt)


@pytest.mark.parametrize(
    ("text", "ratio", "prompt"),
    [
        # edges of the scanner that replaced the one backtracking regex: same results as it gave
        ("a cat (ratio 16:9 reading", "16:9", "a cat ( reading"),  # an opening bracket without its closing one
        ("a，（ratio 16:9", "16:9", "a，（"),
        ("【比例 4:3】海报", "4:3", "海报"),
        ("ratio 5:7, ratio 16:9 x", "16:9", "ratio 5:7, x"),  # a refused phrase is skipped whole
        ("ratio" + " " * 300 + "16:9 x", "16:9", "x"),
        ("--aspect ratio 16:9 x", "16:9", "--aspect x"),
        ("比例１６:９ 猫", "16:9", "猫"),  # full-width digits are digits
        ("a cat,   ，  ratio 16:9  ,  reading", "16:9", "a cat, reading"),
        ("a \u3000ratio\u300016:9\u3000b", "16:9", "a b"),
        ("ratio 16:9ratio 1:1 x", "16:9", "ratio 1:1 x"),  # "9ratio": no trigger inside a word
    ],
)
def test_parse_ratio_edges(text: str, ratio: str, prompt: str) -> None:
    assert parse_ratio(text) == RatioMatch(ratio, prompt)


@pytest.mark.parametrize(
    "text",
    [
        "一只猫，16:9",  # no trigger word
        "cat 3:2",
        "下午16:30的洛杉矶",
        "time 13:45",
        "a 11:2 b",
        "16:9:1",
        "ratio 16:9:1",  # not a ratio, a triple
        "ratio 16:9.5",
        "ratio 5:7 cat",  # unknown ratio: untouched
        "比例 4:5 的画",
        "proportion 16:9",  # "ratio" inside another word is no trigger
        "  spaces   kept  when nothing matched ",
    ],
)
def test_parse_ratio_no_match_leaves_text_untouched(text: str) -> None:
    assert parse_ratio(text) == RatioMatch(None, text)


@pytest.mark.parametrize("ratio", RATIOS)
def test_every_ratio_is_recognised(ratio: str) -> None:
    assert parse_ratio(f"a scene, ratio {ratio}") == RatioMatch(ratio, "a scene")
    assert parse_ratio(f"--ar {ratio.replace(':', '：')} a scene") == RatioMatch(ratio, "a scene")


def test_parse_ratio_collapses_whitespace_after_removal() -> None:
    assert parse_ratio("a   cat\n\nratio 16:9\treading") == RatioMatch("16:9", "a cat reading")


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("a cat no-enhance reading", "a cat reading"),
        ("No-Enhance a cat", "a cat"),
        ("a cat NO-ENHANCE", "a cat"),
        ("a cat, no-enhance", "a cat"),
        ("a cat, no-enhance, reading", "a cat, reading"),
        ("一只猫no-enhance在看书", "一只猫在看书"),
        ("一只猫 no-enhance 在看书", "一只猫在看书"),
        ("a --no-enhance b", "a b"),
        ("a cat (no-enhance)", "a cat"),
        ("no-enhance", ""),
        ("a no-enhance b no-enhance c", "a b c"),
    ],
)
def test_strip_no_enhance(text: str, cleaned: str) -> None:
    assert strip_no_enhance(text) == (False, cleaned)


@pytest.mark.parametrize("text", ["a cat reading", "no-enhancement of the cat", "no enhance", "  a  b "])
def test_strip_no_enhance_absent(text: str) -> None:
    assert strip_no_enhance(text) == (True, text)


def test_no_enhance_and_ratio_together() -> None:
    wanted, text = strip_no_enhance("一只猫 no-enhance，比例 16:9，在看书")
    assert not wanted
    assert parse_ratio(text) == RatioMatch("16:9", "一只猫，在看书")


@pytest.mark.parametrize(
    ("ratio", "long_side", "multiple", "size"),
    [
        ("1:1", 1024, 8, (1024, 1024)),
        ("16:9", 2048, 8, (2048, 1152)),
        ("9:16", 2048, 8, (1152, 2048)),
        ("21:9", 2048, 8, (2048, 880)),
        ("3:2", 1536, 64, (1536, 1024)),
        ("2:3", 1920, 8, (1280, 1920)),
        ("4:3", 1000, 16, (1000, 752)),
        ("1:2", 64, 64, (64, 64)),  # short side never below one multiple
    ],
)
def test_ratio_to_size(ratio: str, long_side: int, multiple: int, size: tuple[int, int]) -> None:
    assert ratio_to_size(ratio, long_side, multiple) == size


@pytest.mark.parametrize("bad", ["16x9", "16:0", "a:b", "1:2:3", ""])
def test_ratio_to_size_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        ratio_to_size(bad, 1024)


def test_zimage_sizes() -> None:
    assert set(ZIMAGE_SIZES) == set(RATIOS)
    # the seed's table
    assert ZIMAGE_SIZES["1:1"] == (2048, 2048)
    assert ZIMAGE_SIZES["1:2"] == (1024, 2048)
    assert ZIMAGE_SIZES["3:2"] == (1920, 1280)
    assert ZIMAGE_SIZES["3:4"] == (1536, 2048)
    assert ZIMAGE_SIZES["16:9"] == (2048, 1152)
    assert ZIMAGE_SIZES["9:16"] == (1152, 2048)
    # ours
    assert ZIMAGE_SIZES["2:1"] == (2048, 1024)
    assert ZIMAGE_SIZES["2:3"] == (1280, 1920)
    assert ZIMAGE_SIZES["4:3"] == (2048, 1536)
    assert ZIMAGE_SIZES["21:9"] == (2048, 880)
    for ratio, (w, h) in ZIMAGE_SIZES.items():
        assert w % 8 == 0 and h % 8 == 0 and 64 <= w <= 2048 and 64 <= h <= 2048
        assert nearest_ratio(w, h) == ratio


@pytest.mark.parametrize(
    ("width", "height", "ratio"),
    [
        (1024, 1024, "1:1"),
        (1792, 1024, "16:9"),
        (1024, 1792, "9:16"),
        (1536, 1024, "3:2"),
        (1024, 1536, "2:3"),
        (1920, 1080, "16:9"),
        (2560, 1080, "21:9"),
        (1000, 800, "4:3"),  # 5:4 is not offered; 4:3 is closer than 1:1
        (900, 1000, "1:1"),
        (5000, 1000, "21:9"),
        (100, 1000, "1:2"),
    ],
)
def test_nearest_ratio(width: int, height: int, ratio: str) -> None:
    assert nearest_ratio(width, height) == ratio


def test_nearest_ratio_rejects_non_positive() -> None:
    with pytest.raises(ValueError):
        nearest_ratio(0, 10)
