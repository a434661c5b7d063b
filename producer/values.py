"""Reading cell values the way spreadsheets write them. Pure functions, no I/O."""

from __future__ import annotations

from typing import Any

TRUE_WORDS = frozenset({"true", "yes", "y", "1", "on"})
FALSE_WORDS = frozenset({"false", "no", "n", "0", "off"})
AUTO_WORDS = frozenset({"auto", "-1"})


def to_bool(value: Any) -> Any:
    """true/false/yes/no/1/0/on/off in any case; other values pass through for pydantic."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    return value


def to_int(value: Any) -> Any:
    """Whole numbers written as text ("8", " 8 ", "8.0", "1,000")."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip().replace(",", "").replace("_", "")
        try:
            return int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                return value
            return int(number) if number.is_integer() else value
    return value


def to_duration(value: Any) -> Any:
    """Seconds as a number or text, or ``auto`` for the model's choice (-1)."""
    if isinstance(value, str) and value.strip().lower() in AUTO_WORDS:
        return -1
    if isinstance(value, str) and value.strip().lower().endswith("s"):
        value = value.strip()[:-1]
    return to_int(value)


def to_text(value: Any) -> Any:
    """Numbers and dates that YAML or a spreadsheet typed are kept as their text."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return str(value)
    return value.strip() if isinstance(value, str) else value
