"""The documentation is run: README's Python examples and the package docstrings."""

import doctest
import re
from pathlib import Path

import mqdb

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_mqdb_docstring_examples():
    failures, tried = doctest.testmod(mqdb)
    assert tried and not failures


def test_readme_links_the_format_documents():
    text = (ROOT / "README.md").read_text()
    assert "mqdb/FORMAT.md" in text
    assert text.startswith("```sh\nmake demo")
