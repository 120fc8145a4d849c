"""The one writer of CSV files meant for people: no cell can run as a spreadsheet formula.

A text cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is run as a formula by
Excel, LibreOffice and Google Sheets (CSV injection: a radiograph named `=HYPERLINK(...).jpg` becomes a
link). Following OWASP's advice, such a cell is written with a single quote in front, which the
spreadsheet shows as text. Numbers stay numbers (a negative number is a number, not text); only text
cells (and column names) are touched. JSON exports are not affected.
"""

from __future__ import annotations

import io
import os
from typing import Any

import pandas as pd

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a text cell as a formula."""


def neutralise(value: Any) -> Any:
    """`value` with a single quote in front when it is text starting with a formula character.

    Args:
        value: one cell; anything that is not a `str` is returned unchanged.

    Returns:
        The cell, safe to open in a spreadsheet.
    """
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def formula_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` whose text cells and column names are `neutralise`d; numeric columns untouched."""
    safe = frame.rename(columns=lambda c: neutralise(c) if isinstance(c, str) else c)
    for column in safe.columns[[not pd.api.types.is_numeric_dtype(t) for t in safe.dtypes]]:
        safe[column] = safe[column].map(neutralise)
    return safe


def write_csv(frame: pd.DataFrame, path: str | os.PathLike | io.TextIOBase | None = None, **to_csv) -> str | None:
    """Write `frame` as a formula-safe CSV (`formula_safe`, then `DataFrame.to_csv`, no index, CRLF rows).

    Args:
        frame: the table.
        path: a file path or an open text stream; None returns the CSV as a string.
        **to_csv: further `DataFrame.to_csv` arguments (e.g. `float_format`).

    Returns:
        The CSV text when `path` is None, else None.
    """
    to_csv.setdefault("index", False)
    to_csv.setdefault("lineterminator", "\r\n")  # RFC 4180; also makes the writer quote a cell holding a CR
    return formula_safe(frame).to_csv(path, **to_csv)
