"""models/widths.py: the width set, channel counts and the scale → width policy."""

from __future__ import annotations

import pytest

from models.widths import (
    SCALE_GROUP_BOUNDS,
    SCALE_GROUP_GRIDS,
    WIDTHS,
    channels_at,
    check_width,
    scale_group,
    width_for_scale,
)


def test_widths_are_the_papers_four_narrowest_first() -> None:
    assert WIDTHS == (0.5, 0.7, 0.9, 1.0)


@pytest.mark.parametrize(
    ("full", "width", "expected"),
    [
        # EDSR-baseline's 64 channels: the 32/44/57/64 of the method notes.
        (64, 0.5, 32),
        (64, 0.7, 44),
        (64, 0.9, 57),
        (64, 1.0, 64),
        # The slim decoder's 256 hidden units.
        (256, 0.5, 128),
        (256, 0.7, 179),
        (256, 0.9, 230),
        (256, 1.0, 256),
        # TINY_SPEC's 16 channels.
        (16, 0.5, 8),
        (16, 0.7, 11),
        (16, 0.9, 14),
        # Never zero channels.
        (3, 0.1, 1),
    ],
)
def test_channels_at(full: int, width: float, expected: int) -> None:
    assert channels_at(full, width) == expected


def test_channels_at_survives_float_products_that_land_just_below_an_integer() -> None:
    # 90 * 0.7 == 62.99999999999999 in binary floats; a plain floor would give 62.
    assert 90 * 0.7 < 63
    assert channels_at(90, 0.7) == 63


@pytest.mark.parametrize(
    ("scale_h", "scale_w", "expected"),
    [
        (1.0, None, 0.5),
        (1.1, None, 0.5),
        (1.7, None, 0.5),
        (1.75, None, 0.5),
        (1.7501, None, 0.7),
        (1.8, None, 0.7),
        (2.5, None, 0.7),
        (2.55, None, 0.7),
        (2.5501, None, 0.9),
        (3.2, None, 0.9),
        (3.25, None, 0.9),
        (3.2501, None, 1.0),
        (4.0, None, 1.0),
        (4.01, None, 1.0),
        (8.0, None, 1.0),
        # Non-square scales are decided by the larger side.
        (1.3, 2.7, 0.9),
        (2.7, 1.3, 0.9),
        (1.2, 1.75, 0.5),
        (1.76, 1.0, 0.7),
        (5.0, 1.1, 1.0),
    ],
)
def test_width_for_scale(scale_h: float, scale_w: float | None, expected: float) -> None:
    assert width_for_scale(scale_h, scale_w) == expected


def test_every_training_grid_scale_maps_to_its_groups_width() -> None:
    assert [len(grid) for grid in SCALE_GROUP_GRIDS] == [7, 8, 7, 8]  # the paper's 30 scales 1.1 ... 4.0
    assert SCALE_GROUP_GRIDS[0][0] == 1.1 and SCALE_GROUP_GRIDS[-1][-1] == 4.0
    for group, grid in enumerate(SCALE_GROUP_GRIDS):
        for scale in grid:
            assert scale_group(scale) == group
            assert width_for_scale(scale) == WIDTHS[group]


def test_group_bounds_sit_halfway_between_grid_points() -> None:
    for bound, lower, upper in zip(SCALE_GROUP_BOUNDS, SCALE_GROUP_GRIDS[:-1], SCALE_GROUP_GRIDS[1:], strict=True):
        assert bound == pytest.approx((lower[-1] + upper[0]) / 2)


def test_check_width_accepts_listed_widths_up_to_float_noise() -> None:
    for width in WIDTHS:
        assert check_width(width) == width
    assert 0.1 * 7 != 0.7
    assert check_width(0.1 * 7) == 0.7  # arithmetic noise is forgiven


@pytest.mark.parametrize("width", [0.0, 0.6, 0.75, 1.1, -0.5])
def test_check_width_rejects_others_naming_value_and_allowed_set(width: float) -> None:
    with pytest.raises(ValueError, match=r"width must be one of \(0\.5, 0\.7, 0\.9, 1\.0\)") as error:
        check_width(width)
    assert str(width) in str(error.value)
