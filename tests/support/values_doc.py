"""The values reference of docs/install.md, generated from the chart's values.yaml (`# --` comments) and
values.schema.json (types).

    .venv/bin/python tests/support/values_doc.py           # print the reference
    .venv/bin/python tests/support/values_doc.py --write   # rewrite it in docs/install.md between the markers

A `# --` comment starts the description of the key right below it (more `#` lines continue it); a blank line drops
a pending description. tests/unit/test_chart_values_doc.py checks that every key has one and that the docs are
current.
"""
import json
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "foundry-inference"
DOC = REPO / "docs" / "install.md"
START, END = "<!-- values-reference:start -->", "<!-- values-reference:end -->"
_KEY = re.compile(r"^(\s*)([A-Za-z0-9_.\-/]+):(?:\s|$)")
_COMMENT = re.compile(r"^(\s*)#\s?(.*)$")


def parse(text):
    """[(path tuple, description or None)] for every key of a values.yaml text, in file order."""
    entries, stack, doc, doc_indent = [], [], None, None
    for line in text.splitlines():
        if not line.strip():
            doc = None
            continue
        comment = _COMMENT.match(line)
        if comment:
            indent, body = len(comment.group(1)), comment.group(2)
            if body.startswith("-- "):
                doc, doc_indent = [body[3:].strip()], indent
            elif doc is not None and indent == doc_indent:
                doc.append(body.strip())
            continue
        match = _KEY.match(line)
        if not match:          # a list item or a continuation: not a key
            doc = None
            continue
        indent, name = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = tuple(k for _, k in stack) + (name,)
        entries.append((path, " ".join(doc) if doc is not None and doc_indent == indent else None))
        stack.append((indent, name))
        doc = None
    return entries


def _schema_at(schema, path):
    node = schema
    for part in path:
        props = node.get("properties") or {}
        if part in props:
            node = props[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return {}
    return node


def _type(node):
    kind = node.get("type", "")
    kinds = kind if isinstance(kind, list) else [kind]
    if node.get("enum"):
        return " \\| ".join(f"`{v}`" for v in node["enum"] if v != "") or "string"
    if "array" in kinds:
        return "list"
    if "object" in kinds:
        return "map" if not node.get("properties") else "object"
    return " or ".join(k for k in kinds if k) or "any"


def _value_at(values, path):
    for part in path:
        values = values[part]
    return values


def _display(path):
    parts = [f'"{p}"' if "." in p or "/" in p else p for p in path]
    return ".".join(parts)


def reference(chart=CHART):
    text = (chart / "values.yaml").read_text()
    values = yaml.safe_load(text)
    schema = json.loads((chart / "values.schema.json").read_text())
    rows = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for path, doc in parse(text):
        default = _value_at(values, path)
        node = _schema_at(schema, path)
        has_children = isinstance(default, dict) and node.get("properties")
        shown = "" if has_children else f"`{json.dumps(default)}`"
        desc = (doc or "").replace("|", "\\|")
        rows.append(f"| `{_display(path)}` | {_type(node)} | {shown} | {desc} |")
    return "\n".join(rows) + "\n"


def updated_doc(doc_text, table):
    if START not in doc_text or END not in doc_text:
        raise ValueError(f"{DOC}: markers {START} / {END} are missing")
    head, rest = doc_text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}{END}{tail}"


def main(argv):
    table = reference()
    if "--write" in argv:
        DOC.write_text(updated_doc(DOC.read_text(), table))
        print(f"updated {DOC}")
    else:
        sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
