"""docs/usage.md is generated from the commands and must match them."""

from pathlib import Path

from starcli.tools.usage_doc import render_usage

ROOT = Path(__file__).resolve().parents[1]


def test_usage_doc_is_current():
    current = (ROOT / "docs" / "usage.md").read_text()
    assert current == render_usage(), "regenerate: python -m starcli.tools.usage_doc > docs/usage.md"


def test_readme_quick_start_commands_exist_in_makefile():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "make run" in readme and "make test" in readme
    assert "\nrun:" in makefile and "\ntest:" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()
