"""Metrics to `workdir/metrics.jsonl` (one JSON object per line) and TensorBoard event files
(tensorboardX, no TensorFlow) in `workdir/tensorboard`."""
from __future__ import annotations

import json
import math
import os
import sys


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported without PyTorch.

  tensorboardX imports torch when it is installed (only to accept torch tensors, which jaxcnn never
  passes): 2 s of every run's start on 2 cores where the torch reference extra is installed. Unless the
  process has imported torch itself, the import below sees none (an entry of None in `sys.modules` makes
  `import torch` raise ImportError, tensorboardX's own fallback), and torch stays importable afterwards.
  """
  if "torch" in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules["torch"] = None
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules["torch"]
  return SummaryWriter


class MetricsWriter:

  def __init__(self, workdir: str, resume_step: int | None = None):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb_dir = os.path.join(workdir, "tensorboard")
    if os.path.exists(self.path):
      # A resumed run replays the steps after its checkpoint: drop what it logged after it.
      keep = [ln for ln in self.read(self.path) if resume_step is not None and ln["step"] <= resume_step]
      tmp = self.path + ".tmp"  # replaced whole: a full disk here leaves the old file, never half of it
      with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in keep)
      os.replace(tmp, self.path)
    self._tb = _summary_writer_class()(self.tb_dir, purge_step=resume_step + 1 if resume_step else None)

  @staticmethod
  def read(path: str) -> list[dict]:
    """The records; a last line cut short (a full disk, a kill mid-write) is dropped."""
    with open(path) as f:
      lines = [line for line in f if line.strip()]
    out = []
    for i, line in enumerate(lines):
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        if i < len(lines) - 1 or line.endswith("\n"):
          raise
    return out

  def write(self, step: int, record: dict) -> None:
    record = {"step": int(step), **record}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    for k, v in record.items():
      if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
        self._tb.add_scalar(k, v, step)

  def close(self):
    self._tb.close()
