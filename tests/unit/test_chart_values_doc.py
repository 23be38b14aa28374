"""Every key of values.yaml is documented, and docs/install.md carries the current generated values reference."""
import pytest
import yaml

from tests.support import helm, values_doc

pytestmark = pytest.mark.unit


def _keys(values, prefix=()):
    for name, value in values.items():
        yield prefix + (name,)
        if isinstance(value, dict):
            yield from _keys(value, prefix + (name,))


def test_every_key_of_values_yaml_has_a_comment():
    text = (helm.CHART / "values.yaml").read_text()
    entries = values_doc.parse(text)
    documented = {path for path, doc in entries if doc}
    missing = [".".join(p) for p in _keys(yaml.safe_load(text)) if p not in documented]
    assert missing == [], f"keys without a `# --` comment: {missing}"
    assert len({p for p, _ in entries}) == len(entries)


def test_the_parser_reads_nesting_and_comments():
    text = "# header\n\n# -- top\na:\n  # -- first\n  # continued\n  b: 1\n  c: [x]\n# -- d\nd: {}\n"
    assert values_doc.parse(text) == [(("a",), "top"), (("a", "b"), "first continued"), (("a", "c"), None),
                                      (("d",), "d")]


def test_docs_install_md_reference_is_current():
    doc = values_doc.DOC.read_text()
    assert values_doc.updated_doc(doc, values_doc.reference()) == doc, (
        "docs/install.md is out of date: run .venv/bin/python tests/support/values_doc.py --write")
