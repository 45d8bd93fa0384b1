"""grain input pipelines: seeded per-epoch shuffling, batching, padding, per-process sharding.

Training batches follow Keras's `fit` semantics: every epoch is a fresh permutation of the training
set (`shuffle` reseeds per epoch), cut into `ceil(N / batch_size)` batches; the last one of an epoch may
be partial and is padded to `batch_size` with zero rows whose `mask` is False, so shapes stay static and
the padding changes no statistic. The iterator is a grain `DatasetIterator`: its position is saved in
every checkpoint, so a resumed run sees exactly the batches an uninterrupted run would.

Each process reads, preprocesses and augments only its contiguous slice of rows of every global batch
(`process_index`), so the global batch is the same for any number of processes and no host decodes
another host's images.

A global batch that does not divide over the devices (the FCN protocol's batch of 5 on 8 devices) is
carried in `rows` >= `batch_size` rows per step (the trainer's: the next multiple of the device count):
each step still takes exactly `batch_size` examples, the other rows are masked padding, so every device
gets the same shape and the step's numbers are those of the bare batch (the loss, the gradients and
BatchNorm's statistics are sums over valid rows).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Iterator, Mapping, Sequence

import grain
import numpy as np


def _stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
  """`np.stack`; arrays of different shapes (images of different sizes) are zero-padded at the end of
  each axis to the largest, as torchvision batches images."""
  shapes = {a.shape for a in arrays}
  if len(shapes) == 1:
    return np.stack(arrays)
  if len({len(s) for s in shapes}) > 1:
    raise ValueError(f"cannot batch arrays of different ranks: shapes {sorted(shapes)}")
  big = tuple(max(d) for d in zip(*shapes))
  out = np.zeros((len(arrays), *big), arrays[0].dtype)
  for i, a in enumerate(arrays):
    out[(i, *(slice(0, d) for d in a.shape))] = a
  return out


def pad_batch(elements: Sequence[Mapping[str, Any]], batch_size: int,
              template: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
  """Stacks examples into `[batch_size, ...]` arrays, padding with zeros; adds `mask` `[batch_size]`.
  Examples of different shapes (images padded each to its own multiple of 32) are zero-padded to the
  largest along each axis. `template` (an example) gives the shapes when `elements` is empty (a batch
  that is all padding)."""
  n = len(elements)
  out = {}
  for key in (elements[0] if n else template):
    if n:
      arr = _stack([np.asarray(e[key]) for e in elements])
    else:
      t = np.asarray(template[key])
      arr = np.zeros((0,) + t.shape, t.dtype)
    if n < batch_size:
      arr = np.concatenate([arr, np.zeros((batch_size - n,) + arr.shape[1:], arr.dtype)])
    out[key] = arr
  out["mask"] = np.arange(batch_size) < n
  return out


class _ProcessRows(grain.MapDataset):
  """The rows of one process, epoch after epoch: row `j = process_index * per_process + r` of step `b`
  is element `b * batch_size + j` of the parent's epoch, or None (padding) when `j >= batch_size` (the
  rows that round the batch up to the devices) or past the epoch's end.
  Only these elements are read, preprocessed and augmented here; the parent's indices (and so the
  shuffle and the augmentation draws) are those of the global stream, whatever the number of processes."""

  def __init__(self, parent, batch_size: int, rows: int, process_index: int, process_count: int):
    super().__init__(parent)
    self._n, self._batch = len(parent), batch_size
    self._per = rows // process_count
    self._offset = process_index * self._per
    self._len = steps_per_epoch(self._n, batch_size) * self._per

  def __len__(self):
    return self._len

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    epoch, k = divmod(index, self._len)
    b, r = divmod(k, self._per)
    j = self._offset + r
    i = b * self._batch + j
    return None if j >= self._batch or i >= self._n else self._parent[epoch * self._n + i]


def _pad_rows(elements, batch_size: int, template):
  return pad_batch([e for e in elements if e is not None], batch_size, template)


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  return math.ceil(num_examples / batch_size)


def train_iterator(source, preprocess, *, batch_size: int, seed: int, num_epochs: int,
                   process_index: int = 0, process_count: int = 1, num_threads: int = 0,
                   augment=None, rows: int | None = None, batch_augment=None):
  """A checkpointable iterator over `num_epochs` epochs of padded global batches (this process's rows).

  Each step takes `batch_size` examples in `rows` rows (default `batch_size`; more to round the batch up
  to the devices), the rest masked padding.

  `augment(example, rng)` (optional) runs after `preprocess` with a generator grain derives from
  `seed` and the example's index in the whole multi-epoch stream: new draws every epoch, reproducible.
  `batch_augment(batch, rng)` (optional: mixup, CutMix, `jaxcnn.data.mixing`) runs on each padded batch
  of this process's rows, its generator derived from `seed` and the batch's position in the stream."""
  ds = grain.MapDataset.source(source).seed(seed).shuffle().map(preprocess)
  if augment is not None:
    ds = ds.random_map(augment)
  rows = batch_size if rows is None else rows
  if rows < batch_size or rows % process_count:
    raise ValueError(f"{rows} rows per step must hold the global batch of {batch_size} and split over "
                     f"{process_count} processes")
  per = rows // process_count
  template = ds[0]  # keys and shapes of a batch that is all padding on this process
  ds = (_ProcessRows(ds, batch_size, rows, process_index, process_count)
        .batch(per, batch_fn=functools.partial(_pad_rows, batch_size=per, template=template))
        .repeat(num_epochs))
  if batch_augment is not None:  # after repeat: a position in the whole stream, new draws every epoch
    ds = ds.seed(seed + 1).random_map(batch_augment)
  opts = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(2 * num_threads, 1))
  return iter(ds.to_iter_dataset(read_options=opts))


def eval_batches(source, preprocess, *, batch_size: int, process_index: int = 0,
                 process_count: int = 1, num_threads: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """Every example of `source` once, in order, as padded global batches (this process's rows).
  `num_threads` > 0 preprocesses the examples in that many threads (decoding JPEGs: Pillow releases the
  GIL), one batch ahead of the consumer; the batches are the same."""
  per = batch_size // process_count
  starts = range(0, len(source), batch_size)

  def rows(start):
    lo = start + process_index * per  # only this process's rows are read and preprocessed
    return range(lo, min(lo + per, len(source)))

  template = None

  def batch(elements):
    nonlocal template
    if not elements and template is None:
      template = preprocess(source[0])
    return pad_batch(elements, per, template)

  if num_threads <= 0:
    for start in starts:
      yield batch([preprocess(source[i]) for i in rows(start)])
    return
  from concurrent.futures import ThreadPoolExecutor
  with ThreadPoolExecutor(num_threads) as pool:
    submit = lambda start: [pool.submit(lambda i: preprocess(source[i]), i) for i in rows(start)]  # noqa: E731
    pending = submit(starts[0]) if starts else []
    for k in range(len(starts)):
      current, pending = pending, (submit(starts[k + 1]) if k + 1 < len(starts) else [])
      yield batch([f.result() for f in current])


def batches_per_second(iterator, n: int) -> float:
  """The rate at which `iterator` yields batches, over `n` batches after a first (warm-up) one: the input
  pipeline's throughput, which must exceed the train step's rate (bench/ reports both)."""
  import time
  next(iterator)
  t = time.perf_counter()
  for _ in range(n):
    next(iterator)
  return n / (time.perf_counter() - t)
