"""The documentation holds to the code: the settings page is the table
`mimicry/settings.py` declares, the package reads no `MIMICRY_*` variable that
is not a setting (test-only variables are not settings), and the MkDocs site
builds with no broken link, anchor or page left out of the navigation."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from mimicry.settings import Settings, markdown_table

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "settings.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"
VARIABLE = re.compile(r"MIMICRY_[A-Z_]+")
TEST_ONLY = {"MIMICRY_UPDATE_GOLDEN", "MIMICRY_CHROMIUM", "MIMICRY_CHROMEDRIVER",
             "MIMICRY_ALLOW_NO_BROWSER"}


def settings_variables() -> set[str]:
    return {f.metadata["env"] for f in fields(Settings)}


def test_settings_page_is_the_declared_table():
    text = PAGE.read_text()
    assert text.count(START) == 1 and text.count(END) == 1, f"{PAGE.name} lost its table markers"
    table = text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"
    assert table == markdown_table(), (
        "docs/settings.md differs from mimicry/settings.py: run `python scripts/gen_settings_doc.py`")


def test_every_variable_the_package_names_is_a_setting():
    declared = settings_variables()
    named: dict[str, set[str]] = {}
    for path in sorted((ROOT / "mimicry").rglob("*.py")):
        for name in VARIABLE.findall(path.read_text()):
            named.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert len(named) >= 10, "the scan found almost no variables: is mimicry/ where it should be?"
    undeclared = {name: sorted(where) for name, where in named.items() if name not in declared}
    assert not undeclared, (f"variables named in mimicry/ but not declared in Settings "
                            f"(declare them in mimicry/settings.py, or keep test-only ones in tests/): "
                            f"{undeclared}")


DIRECT_READ = re.compile(r"""(?:environ(?:\.get)?\s*[\[(]|getenv\s*\()\s*f?["']MIMICRY_""")


def test_only_settings_reads_the_environment():
    assert DIRECT_READ.search('os.environ.get("MIMICRY_X", "1")') and DIRECT_READ.search("os.environ['MIMICRY_X']")
    readers = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "mimicry").rglob("*.py"))
               if path.name != "settings.py" and DIRECT_READ.search(path.read_text())]
    assert not readers, f"modules reading MIMICRY_* variables themselves instead of get_settings(): {readers}"


def test_test_only_variables_are_not_settings():
    assert not TEST_ONLY & settings_variables()


def test_settings_table_lists_every_setting():
    table = markdown_table()
    for variable in settings_variables():
        assert f"| `{variable}` |" in table


@pytest.mark.slow  # runs `mkdocs build` as a process
def test_docs_site_builds_strictly(tmp_path):
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                          "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout}\n{run.stderr}"
    assert (tmp_path / "site" / "settings" / "index.html").is_file()
    assert "MIMICRY_INFLIGHT" in (tmp_path / "site" / "settings" / "index.html").read_text()


def test_readme_links_every_page_and_only_pages_that_exist():
    readme = (ROOT / "README.md").read_text()
    linked = set(re.findall(r"\]\((docs/[^)#\s]+)", readme))
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages - linked == set(), f"docs pages the README does not link: {sorted(pages - linked)}"
    assert not [link for link in linked if not (ROOT / link).is_file()], "README links a missing file"
    assert readme.count("\n") <= 300, "README.md over 300 lines: move the detail into docs/"
