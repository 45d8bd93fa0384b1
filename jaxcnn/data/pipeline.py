"""grain input pipelines: seeded per-epoch shuffling, batching, padding, per-process sharding.

Training batches follow Keras's `fit` semantics: every epoch is a fresh permutation of the training
set (`shuffle` reseeds per epoch), cut into `ceil(N / batch_size)` batches; the last one of an epoch may
be partial and is padded to `batch_size` with zero rows whose `mask` is False, so shapes stay static and
the padding changes no statistic. The iterator is a grain `DatasetIterator`: its position is saved in
every checkpoint, so a resumed run sees exactly the batches an uninterrupted run would.

Each process keeps its contiguous slice of rows of every global batch (`process_index`), so the
global batch is the same for any number of processes.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Iterator, Mapping, Sequence

import grain
import numpy as np


def pad_batch(elements: Sequence[Mapping[str, Any]], batch_size: int) -> dict[str, np.ndarray]:
  """Stacks examples into `[batch_size, ...]` arrays, padding with zeros; adds `mask` `[batch_size]`."""
  n = len(elements)
  out = {}
  for key in elements[0]:
    arr = np.stack([np.asarray(e[key]) for e in elements])
    if n < batch_size:
      arr = np.concatenate([arr, np.zeros((batch_size - n,) + arr.shape[1:], arr.dtype)])
    out[key] = arr
  out["mask"] = np.arange(batch_size) < n
  return out


def process_rows(batch: dict[str, np.ndarray], process_index: int, process_count: int):
  """This process's contiguous slice of the rows of a global batch."""
  if process_count == 1:
    return batch
  per = next(iter(batch.values())).shape[0] // process_count
  return {k: v[process_index * per:(process_index + 1) * per] for k, v in batch.items()}


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  return math.ceil(num_examples / batch_size)


def train_iterator(source, preprocess, *, batch_size: int, seed: int, num_epochs: int,
                   process_index: int = 0, process_count: int = 1, num_threads: int = 0,
                   augment=None):
  """A checkpointable iterator over `num_epochs` epochs of padded global batches (this process's rows).

  `augment(example, rng)` (optional) runs after `preprocess` with a generator grain derives from
  `seed` and the example's index in the whole multi-epoch stream: new draws every epoch, reproducible."""
  ds = grain.MapDataset.source(source).seed(seed).shuffle().map(preprocess)
  if augment is not None:
    ds = ds.random_map(augment)
  ds = (ds.batch(batch_size, batch_fn=functools.partial(pad_batch, batch_size=batch_size))
        .repeat(num_epochs))
  ds = ds.map(functools.partial(process_rows, process_index=process_index, process_count=process_count))
  opts = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(2 * num_threads, 1))
  return iter(ds.to_iter_dataset(read_options=opts))


def eval_batches(source, preprocess, *, batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Every example of `source` once, in order, as padded global batches (this process's rows)."""
  for start in range(0, len(source), batch_size):
    elements = [preprocess(source[i]) for i in range(start, min(start + batch_size, len(source)))]
    yield process_rows(pad_batch(elements, batch_size), process_index, process_count)


def batches_per_second(iterator, n: int) -> float:
  """The rate at which `iterator` yields batches, over `n` batches after a first (warm-up) one: the input
  pipeline's throughput, which must exceed the train step's rate (bench/ reports both)."""
  import time
  next(iterator)
  t = time.perf_counter()
  for _ in range(n):
    next(iterator)
  return n / (time.perf_counter() - t)
