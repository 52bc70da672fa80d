"""models.geometry: how a flat block of output pixels maps onto the output grid."""

from models.geometry import row_segments


def test_row_segments_tile_any_range_in_flat_order() -> None:
    for length in (1, 3, 7):
        for start in range(0, 30):
            for stop in range(start + 1, 31):
                flat = []
                for row_start, row_stop, col_start, col_stop in row_segments(start, stop, length):
                    flat += [r * length + c for r in range(row_start, row_stop) for c in range(col_start, col_stop)]
                assert flat == list(range(start, stop)), (start, stop, length)
                assert len(row_segments(start, stop, length)) <= 3
