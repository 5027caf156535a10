import pytest

from scaling.errors import ClipscaleError
from scaling.units import format_count, parse_count


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (3, 3),
        (3e9, 3_000_000_000),
        ("3B", 3_000_000_000),
        ("12.8B", 12_800_000_000),
        ("4k", 4000),
        ("131M", 131_000_000),
        ("1e9", 1_000_000_000),
        ("2.5e3", 2500),
        ("407332084", 407_332_084),
        (" 64K ", 64_000),
    ],
)
def test_parse_count_accepts_plain_scientific_and_suffixed(text: object, expected: int) -> None:
    assert parse_count(text, "n") == expected


@pytest.mark.parametrize(
    "bad", [0, -5, "-3B", "0k", "abc", "3X", True, None, [3], float("nan"), float("inf")]
)
def test_parse_count_rejects_non_positive_and_garbage(bad: object) -> None:
    with pytest.raises(ClipscaleError, match="samples_seen"):
        parse_count(bad, "samples_seen")


def test_format_count_is_short() -> None:
    assert format_count(12_800_000_000) == "12.8B"
    assert format_count(64_000) == "64k"
    assert format_count(131_072_000) == "131M"
    assert format_count(512) == "512"
