"""The GoT chain format: parsing real and malformed chains, formatting round trips, captions, IoU."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gotr1.chain import (
    BEGIN_OF_IMAGE,
    Box,
    Chain,
    ChainFormatError,
    ChainObject,
    box_iou,
    format_chain,
    iou,
    parse_chain,
    strip_boxes,
)

# A chain written by GoT-R1 (its public inference samples).
REAL_CHAIN = (
    "A <|obj_start|>vibrant still life painting<|obj_end|> <|box_start|>(0,60),(997,983)<|box_end|> showcases a "
    "<|obj_start|>bouquet of red tulips<|obj_end|> <|box_start|>(0,60),(698,780)<|box_end|> in a "
    "<|obj_start|>yellow vase<|obj_end|> <|box_start|>(65,488),(582,982)<|box_end|>, adorned with a floral pattern."
)


def test_parses_a_real_gotr1_chain():
    chain = parse_chain(REAL_CHAIN, strict=True)
    assert chain.errors == []
    assert chain.names == ["vibrant still life painting", "bouquet of red tulips", "yellow vase"]
    assert [o.box for o in chain.objects] == [Box(0, 60, 997, 983), Box(0, 60, 698, 780), Box(65, 488, 582, 982)]
    np.testing.assert_array_equal(chain.boxes, [[0, 60, 997, 983], [0, 60, 698, 780], [65, 488, 582, 982]])


def test_chain_ends_at_begin_of_image():
    chain = parse_chain(REAL_CHAIN + BEGIN_OF_IMAGE + "<|obj_start|>ghost<|obj_end|>")
    assert chain.text == REAL_CHAIN
    assert len(chain.objects) == 3 and chain.errors == []


def test_tolerates_spacing_untagged_mentions_and_trailing_text():
    text = (
        "a cat near a dog: <| obj_start |>  black   cat <|obj_end|>\n <|box_start|>( 10 , 20 ) , ( 300,400 )<|box_end|>"
        " and a plain dog mentioned without tags, then more words"
    )
    chain = parse_chain(text, strict=True)
    assert chain.objects == [ChainObject("black cat", Box(10, 20, 300, 400))]


@pytest.mark.parametrize(
    "span, message",
    [
        ("<|obj_start|>cup<|obj_end|> <|box_start|>(1,2),(3)<|box_end|>", "box needs 4 coordinates, found 3"),
        ("<|obj_start|>cup<|obj_end|> <|box_start|>(1,2),(3,4),(5,6)<|box_end|>", "box needs 4 coordinates, found 6"),
        ("<|obj_start|>cup<|obj_end|> <|box_start|>(1.5,2),(3,4)<|box_end|>", "non-integer coordinate in box"),
        ("<|obj_start|>cup<|obj_end|> <|box_start|>(a,b),(c,d)<|box_end|>", "box needs 4 coordinates, found 0"),
        ("<|obj_start|>cup<|obj_end|> <|box_start|>(1,2),(3,4)", "unclosed <|box_start|>"),
        ("<|obj_start|>cup and more", "unclosed <|obj_start|>"),
        ("<|obj_start|>cup<|obj_end|> then text", "object has no box"),
        ("<|obj_start|> <|obj_end|> <|box_start|>(1,2),(3,4)<|box_end|>", "empty object name"),
        ("<|box_start|>(1,2),(3,4)<|box_end|>", "box without an object"),
        ("words <|obj_end|>", "stray <|obj_end|>"),
    ],
)
def test_malformed_spans_are_recorded_and_skipped(span, message):
    prefix = "<|obj_start|>table<|obj_end|> <|box_start|>(0,0),(10,10)<|box_end|> "
    chain = parse_chain(prefix + span)
    assert chain.objects == [ChainObject("table", Box(0, 0, 10, 10))]
    assert [e.message for e in chain.errors] == [message]
    assert chain.errors[0].offset == len(prefix) + span.find("<|")
    with pytest.raises(ChainFormatError, match=f"offset {chain.errors[0].offset}"):
        parse_chain(prefix + span, strict=True)


def test_out_of_range_coordinates_are_clamped_and_swapped_corners_ordered():
    chain = parse_chain("<|obj_start|>kite<|obj_end|> <|box_start|>(900,-5),(30,1200)<|box_end|>")
    assert chain.objects == [ChainObject("kite", Box(30, 0, 900, 1000))]
    assert [e.message for e in chain.errors] == ["coordinates clamped to [0, 1000]", "swapped box corners ordered"]
    with pytest.raises(ChainFormatError, match="clamped"):
        parse_chain(chain.text, strict=True)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_lenient_parsing_never_raises(text):
    chain = parse_chain(text)
    assert isinstance(chain, Chain)
    for obj in chain.objects:
        assert 0 <= obj.box.x1 <= obj.box.x2 <= 1000 and 0 <= obj.box.y1 <= obj.box.y2 <= 1000


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["<|obj_start|>", "<|obj_end|>", "<|box_start|>", "<|box_end|>", "(1,2)", ",", "x", "(3,4)", " "]), max_size=30))
def test_lenient_parsing_of_tag_soup_never_raises(pieces):
    chain = parse_chain("".join(pieces))
    assert all(0 <= e.offset <= len(chain.text) for e in chain.errors)


def test_non_string_input_is_an_error_only_in_strict_mode():
    assert parse_chain(None).errors[0].message == "not a string: NoneType"
    with pytest.raises(TypeError, match="text: str"):
        parse_chain(None, strict=True)


_coord = st.integers(0, 1000)
_box = st.tuples(_coord, _coord, _coord, _coord).map(
    lambda c: Box(min(c[0], c[2]), min(c[1], c[3]), max(c[0], c[2]), max(c[1], c[3]))
)
_name = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="<|>"), min_size=1, max_size=12)
_names = st.lists(_name, min_size=1, max_size=3).map(" ".join)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.builds(ChainObject, _names, _box), max_size=6))
def test_format_then_parse_round_trips(objects):
    assert parse_chain(format_chain(objects), strict=True).objects == objects


def test_format_chain_tags_names_inside_a_caption():
    objects = [ChainObject("red apple", Box(1, 2, 3, 4)), ChainObject("cup", Box(5, 6, 7, 8)), ChainObject("owl", Box(0, 0, 9, 9))]
    text = format_chain(objects, "a red apple left of a blue cup")
    assert text.startswith("a <|obj_start|>red apple<|obj_end|> <|box_start|>(1,2),(3,4)<|box_end|> left of a blue ")
    assert parse_chain(text, strict=True).objects == objects
    assert strip_boxes(text) == "a red apple left of a blue cup owl"


@pytest.mark.parametrize("name", ["", "  cup", "a  b", "x<|obj_end|>", "cup<begin_of_image>"])
def test_format_chain_rejects_bad_names(name):
    with pytest.raises(ValueError, match="object name"):
        format_chain([ChainObject(name, Box(0, 0, 1, 1))])


def test_strip_boxes_gives_a_plain_caption():
    assert strip_boxes(REAL_CHAIN) == (
        "A vibrant still life painting showcases a bouquet of red tulips in a yellow vase, adorned with a floral pattern."
    )
    assert strip_boxes("a <|obj_start|>dog<|obj_end|> <|box_start|>(1,2),(3") == "a dog"
    assert strip_boxes("x " + BEGIN_OF_IMAGE + " y") == "x"


@pytest.mark.parametrize("field, value", [("x1", -1), ("y2", 1001)])
def test_box_rejects_out_of_range_fields(field, value):
    coords = dict(x1=0, y1=0, x2=10, y2=10)
    coords[field] = value
    with pytest.raises(ValueError, match=f"Box.{field}={value}"):
        Box(**coords)


def test_box_rejects_unordered_corners_and_non_integers():
    with pytest.raises(ValueError, match="not ordered"):
        Box(10, 0, 5, 10)
    with pytest.raises(TypeError, match="Box.x1"):
        Box(1.5, 0, 5, 10)


def test_pixel_conversion_round_trips_and_rounds_half_up():
    box = Box(125, 0, 875, 1000)
    assert box.to_pixels(384, 384) == (48, 0, 336, 384)
    assert box.to_pixels(8, 4) == (1, 0, 7, 4)
    assert Box.from_pixels(48, 0, 336, 384, 384, 384) == box
    assert Box.from_pixels(336, 400, 48, -3, 384, 384) == Box(125, 0, 875, 1000)
    with pytest.raises(ValueError, match="non-finite"):
        Box.from_pixels(float("nan"), 0, 1, 1, 10, 10)
    with pytest.raises(ValueError, match="width=0"):
        box.to_pixels(0, 10)


def test_iou_against_hand_computed_values():
    assert iou(Box(0, 0, 10, 10), Box(5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou(Box(0, 0, 10, 10), Box(20, 20, 30, 30)) == 0.0
    assert iou(Box(3, 3, 3, 9), Box(3, 3, 3, 9)) == 0.0
    assert iou(Box(1, 2, 30, 40), Box(1, 2, 30, 40)) == 1.0


def test_batched_iou_broadcasts_and_matches_scalar_iou():
    rng = np.random.default_rng(0)
    corners = rng.integers(0, 1001, size=(2, 7, 4))
    a = np.concatenate([np.minimum(corners[0, :, :2], corners[0, :, 2:]), np.maximum(corners[0, :, :2], corners[0, :, 2:])], 1)
    b = np.concatenate([np.minimum(corners[1, :, :2], corners[1, :, 2:]), np.maximum(corners[1, :, :2], corners[1, :, 2:])], 1)
    pairwise = box_iou(a[:, None], b[None, :])
    assert pairwise.shape == (7, 7)
    for i in range(7):
        for j in range(7):
            assert pairwise[i, j] == pytest.approx(iou(Box(*map(int, a[i])), Box(*map(int, b[j]))))
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        box_iou(np.zeros((3, 3)), np.zeros((3, 4)))
