"""mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) on the host, on whole training batches.

`mix_batch(batch, rng, ...)` pairs each valid row of a padded batch with the next valid row (the
batch rolled by one, as torchvision's `transforms.v2.MixUp` / `CutMix` pair them) and draws one `lam ~
Beta(alpha, alpha)` per batch:

- mixup: `x = lam * x_i + (1 - lam) * x_j`;
- CutMix: a box of area fraction `1 - lam` (side `sqrt(1 - lam)` of each spatial size, its centre
  uniform, clipped at the border) of `x_i` is replaced by `x_j`'s, and `lam` becomes the area it
  actually kept.

The targets are mixed the same way: `batch["soft_label"] = lam * onehot(y_i) + (1 - lam) * onehot(y_j)`
(rows summing to 1; the classification loss reads them); `batch["label"]` keeps each row's own class
(train error counts against it). With both alphas set, each batch takes CutMix with probability
`switch_prob`, else mixup (timm's `Mixup`). Padding rows (`mask` False) are left as they are. The
generator is grain's, derived from the run's seed and the batch's position in the stream: new draws
every batch, the same after a resume (`pipeline.train_iterator(batch_augment=...)`).
"""
from __future__ import annotations

import functools

import numpy as np


def mix_batch(batch: dict, rng: np.random.Generator, *, num_classes: int, mixup_alpha: float = 0.0,
              cutmix_alpha: float = 0.0, switch_prob: float = 0.5) -> dict:
  """The batch mixed as the module docstring says; `x` `[rows, *spatial, channels]` (1-3 spatial axes)."""
  out = dict(batch)
  labels = np.asarray(batch["label"])
  onehot = np.eye(num_classes, dtype=np.float32)[labels]
  valid = np.flatnonzero(np.asarray(batch["mask"], bool))
  out["soft_label"] = onehot
  if len(valid) < 2 or (mixup_alpha <= 0 and cutmix_alpha <= 0):
    return out
  cut = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < switch_prob)
  alpha = cutmix_alpha if cut else mixup_alpha
  lam = float(rng.beta(alpha, alpha))
  partner = np.roll(valid, 1)
  x = np.array(batch["x"], copy=True)
  if cut:
    spatial = x.shape[1:-1]
    lo, hi = [], []
    for n in spatial:
      side = n * np.sqrt(1.0 - lam)
      centre = rng.uniform(0, n)
      lo.append(int(np.clip(round(centre - side / 2), 0, n)))
      hi.append(int(np.clip(round(centre + side / 2), 0, n)))
    box = (slice(None), *(slice(a, b) for a, b in zip(lo, hi)), slice(None))
    region = x[valid]
    region[box] = np.asarray(batch["x"])[partner][box]
    x[valid] = region
    lam = 1.0 - float(np.prod([b - a for a, b in zip(lo, hi)])) / float(np.prod(spatial))
  else:
    xs = np.asarray(batch["x"], np.float32)
    x[valid] = (lam * xs[valid] + (1.0 - lam) * xs[partner]).astype(x.dtype)
  soft = onehot.copy()
  soft[valid] = lam * onehot[valid] + (1.0 - lam) * onehot[partner]
  out["x"], out["soft_label"] = x, soft
  return out


def mixer(config, num_classes: int):
  """`(batch, rng) -> batch` for the config's `train.mixup_alpha` / `train.cutmix_alpha`, or None."""
  mixup, cutmix = float(config.train.get("mixup_alpha", 0.0)), float(config.train.get("cutmix_alpha", 0.0))
  if mixup <= 0 and cutmix <= 0:
    return None
  return functools.partial(mix_batch, num_classes=num_classes, mixup_alpha=mixup, cutmix_alpha=cutmix,
                           switch_prob=float(config.train.get("mix_switch_prob", 0.5)))
