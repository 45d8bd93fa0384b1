"""The documentation says what the tests check: each row of the table of mistakes and faults
(docs/errors.md) names a test that exists and checks the row's message; every relative link of the
README and docs/ leads to a file that exists."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rows():
  text = open(os.path.join(ROOT, "docs", "errors.md"), encoding="utf-8").read()
  table = text.split("<!-- error-table:start -->")[1].split("<!-- error-table:end -->")[0]
  lines = [ln for ln in table.strip().splitlines()[2:] if ln.startswith("|")]
  return [[c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in lines]


def test_every_row_names_an_existing_test_that_checks_its_message():
  rows = _rows()
  assert len(rows) >= 20
  for what, _, seen, code, where in rows:
    path, _, name = where.strip("`").partition("::")
    source = open(os.path.join(ROOT, "tests", path), encoding="utf-8").read()
    assert re.search(rf"^def {name}\(", source, re.M), f"{what}: no test {where}"
    assert re.fullmatch(r"-?\d+", code), f"{what}: exit code {code!r}"
    spans = re.findall(r"`([^`]+)`", seen)
    if not spans:  # e.g. SIGKILL: nothing is printed
      continue
    # The message's longest literal piece (placeholders <...> and elisions ... removed), as the test
    # source writes it (regex escapes removed); its first 25 characters, to survive line breaks.
    pieces = [p for p in re.split(r"\.\.\.|<[^>]*>", spans[0]) if p.strip()]
    key = max(pieces, key=len).strip()[:25]
    assert key in source.replace("\\", ""), f"{what}: {where} does not check {key!r}"


def test_every_relative_link_of_the_readme_and_docs_resolves():
  import glob
  pages = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "bench", "README.md"),
           *glob.glob(os.path.join(ROOT, "docs", "*.md"))]
  broken = []
  for page in pages:
    text = open(page, encoding="utf-8").read()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
      if target.startswith(("http://", "https://", "#", "mailto:")):
        continue
      path = os.path.normpath(os.path.join(os.path.dirname(page), target.split("#")[0]))
      if not os.path.exists(path):
        broken.append(f"{os.path.relpath(page, ROOT)}: {target}")
  assert not broken, broken
