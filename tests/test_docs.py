"""docs/python.md, the notebook walk-through, cannot go stale: its code blocks run in order in one fresh
Python process, and what they print is exactly the page's output blocks."""
import os
import re
import subprocess
import sys

import pytest

from conftest import subprocess_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "python.md")


def blocks(language: str) -> list[str]:
  text = open(PAGE, encoding="utf-8").read()
  return re.findall(rf"^```{language}\n(.*?)^```$", text, re.M | re.S)


def test_the_python_page_runs_and_prints_what_it_shows(tmp_path):
  pytest.importorskip("onnxruntime", reason="the onnx extra (in the test extra) is not installed")
  code, shown = blocks("python"), blocks("text")
  assert len(code) == 4 and len(shown) == 4
  script = tmp_path / "walkthrough.py"
  script.write_text("\n".join(code))
  r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=subprocess_env(), capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-4000:]
  assert r.stdout.splitlines() == "".join(shown).splitlines(), r.stdout
  assert sorted(os.listdir(tmp_path)) == ["bands.onnx", "bands.onnx.json", "bands.stablehlo", "bands.stablehlo.json",
                                          "walkthrough.py"]
