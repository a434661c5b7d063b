from __future__ import annotations

from typing import Any

import pytest

from producer.values import to_bool, to_duration, to_int, to_text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("True", True),
        ("yes", True),
        ("Yes", True),
        ("Y", True),
        ("1", True),
        (" on ", True),
        (1, True),
        (True, True),
        ("false", False),
        ("FALSE", False),
        ("no", False),
        ("NO", False),
        ("n", False),
        ("0", False),
        ("off", False),
        (0, False),
        (False, False),
        ("maybe", "maybe"),
        ("2", "2"),
        (2, 2),
    ],
)
def test_to_bool(raw: Any, expected: Any) -> None:
    assert to_bool(raw) == expected
    assert type(to_bool(raw)) is type(expected)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("8", 8),
        (" 8 ", 8),
        ("8.0", 8),
        ("1,000", 1000),
        ("-3", -3),
        (7.0, 7),
        ("8.5", "8.5"),
        ("eight", "eight"),
        (5, 5),
    ],
)
def test_to_int(raw: Any, expected: Any) -> None:
    assert to_int(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("auto", -1),
        ("AUTO", -1),
        (" Auto ", -1),
        ("-1", -1),
        ("5", 5),
        ("5s", 5),
        (10, 10),
        ("10.0", 10),
        ("soon", "soon"),
    ],
)
def test_to_duration(raw: Any, expected: Any) -> None:
    assert to_duration(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"), [(12, "12"), (1.5, "1.5"), ("  x ", "x"), (None, None), (True, True)]
)
def test_to_text(raw: Any, expected: Any) -> None:
    assert to_text(raw) == expected
