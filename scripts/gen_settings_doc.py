"""Rewrite the settings table of the documentation from mimicry/settings.py.

Run: .venv/bin/python scripts/gen_settings_doc.py

``docs/settings.md`` keeps its own introduction; only the part between the
markers ``<!-- settings:start -->`` and ``<!-- settings:end -->`` is replaced
by :func:`mimicry.settings.markdown_table`. ``tests/test_docs.py`` fails when
the two differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mimicry.settings import markdown_table  # noqa: E402

PAGE = ROOT / "docs" / "settings.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def table_in(text: str) -> str:
    """The text between the markers, without the newlines next to them."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise SystemExit(f"{PAGE}: needs one {START} followed by one {END}")
    inner = text.split(START, 1)[1].split(END, 1)[0]
    return inner.strip("\n") + "\n"


def with_table(text: str, table: str) -> str:
    """``text`` with the part between the markers replaced by ``table``."""
    table_in(text)  # checks the markers
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}{END}{tail}"


def main() -> int:
    text = PAGE.read_text()
    new = with_table(text, markdown_table())
    if new == text:
        print(f"{PAGE.relative_to(ROOT)}: up to date")
    else:
        PAGE.write_text(new)
        print(f"{PAGE.relative_to(ROOT)}: table rewritten")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
