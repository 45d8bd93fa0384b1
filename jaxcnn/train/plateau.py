"""Reduce the learning rate on a plateau of the epoch training loss, as Keras 1.x's
`ReduceLROnPlateau(monitor="loss", factor, patience, min_lr)` with its defaults (`epsilon=1e-4`, an
absolute improvement threshold, and `cooldown=0`). Wang et al.'s FCN code (Keras 1, 2016) uses factor
0.5, patience 50, min_lr 1e-4. In Keras 1 the patience counter is tested before it is incremented, so
the first reduction comes on the (patience + 1)-th epoch without improvement. Host-side and tiny; its
state goes into every checkpoint."""
from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass
class Plateau:
  base_lr: float
  factor: float = 0.5
  patience: int = 50
  min_lr: float = 1e-4
  min_delta: float = 1e-4
  lr: float = math.nan
  best: float = math.inf
  wait: int = 0

  def __post_init__(self):
    if math.isnan(self.lr):
      self.lr = self.base_lr

  def update(self, epoch_loss: float) -> float:
    """Called once per epoch with its mean training loss; returns the learning rate to use next."""
    if epoch_loss < self.best - self.min_delta:
      self.best, self.wait = epoch_loss, 0
    else:
      if self.wait >= self.patience and self.lr > self.min_lr * (1 + 1e-6):
        self.lr = max(self.lr * self.factor, self.min_lr)
        self.wait = 0
      self.wait += 1
    return self.lr

  @property
  def scale(self) -> float:
    """The factor on the schedule's learning rate (1 for a base rate of 0, which never moves)."""
    return self.lr / self.base_lr if self.base_lr else 1.0

  def state_dict(self) -> dict:
    return {"lr": self.lr, "best": self.best, "wait": self.wait}

  def load_state_dict(self, d: dict) -> None:
    self.lr, self.best, self.wait = float(d["lr"]), float(d["best"]), int(d["wait"])
