"""bench/accelerator.py works before an accelerator is ever lent: its --smoke run on CPU, its budget, and
the message on a host without a GPU/TPU plugin."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT, subprocess_env

SCRIPT = os.path.join(ROOT, "bench", "accelerator.py")


def _run(*args, timeout=600):
  env = subprocess_env()  # the host's own devices
  return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, env=env, cwd=ROOT,
                        timeout=timeout)


def test_smoke_run_measures_a_family_and_writes_the_table(tmp_path):
  """The default suite: the text pipeline's family and the scaling row (11 s on 2 cores; the image
  families with their MFU, the U-Net's training + inference and Mask R-CNN, i.e. `python
  bench/accelerator.py --smoke` itself: the slow test below, about 110 s)."""
  out = tmp_path / "acc.md"
  r = _run("--smoke", "--only=char_cnn,scaling", f"--out={out}")
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  rows = {ln.split("|")[1].strip(): ln for ln in out.read_text().splitlines() if ln.startswith("| ")}
  assert "skipped" not in rows["char_cnn"] and "**" in rows["char_cnn"], rows["char_cnn"]
  assert "one device only" in rows["scaling"]


@pytest.mark.slow
def test_smoke_run_measures_every_family_and_writes_the_table(tmp_path):
  out = tmp_path / "acc.md"
  r = _run("--smoke", f"--out={out}")
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  text = out.read_text()
  assert "jax 0." in text and "jaxlib 0." in text and "python bench/accelerator.py --smoke" in text
  rows = {ln.split("|")[1].strip(): ln for ln in text.splitlines() if ln.startswith("| ") and "---" not in ln}
  for name in ("resnet50_f32", "resnet50_bf16", "unet", "mask_rcnn_infer", "mask_rcnn_train", "char_cnn"):
    assert name in rows and "skipped" not in rows[name], rows.get(name)
  assert "one device only" in rows["scaling"]  # one CPU device: nothing to scale
  assert "MFU **n/a %**" in rows["resnet50_bf16"]  # a CPU has no entry in the peak table
  assert "inference" in rows["unet"] and "images/s" in rows["mask_rcnn_infer"]
  assert r.stdout.count("| resnet50_bf16 |") == 2  # the table is printed as it is written


def test_a_budget_that_is_spent_skips_and_says_so(tmp_path):
  out = tmp_path / "acc.md"
  r = _run("--smoke", "--budget_s=5", "--only=resnet50_f32,char_cnn", f"--out={out}")
  assert r.returncode == 0, r.stderr[-3000:]
  text = out.read_text()
  assert text.count("skipped: no longer fits") == 2 and "about 25 s needed" in text


def test_without_an_accelerator_it_names_the_package_instead_of_measuring_the_cpu():
  r = _run("--only=char_cnn", timeout=120)
  assert r.returncode == 1 and 'jax[cuda12]' in r.stderr and "--smoke" in r.stderr
  r = _run("--smoke", "--only=resnet5", timeout=120)
  assert r.returncode == 1 and "unknown family ['resnet5']" in r.stderr
