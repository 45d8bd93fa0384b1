import numpy as np
import pytest

from jaxcnn.data import pipeline


class ListSource:
  def __init__(self, n):
    self.rows = [{"x": np.full((3, 1), i, np.float32), "label": np.int32(i % 2), "id": np.int32(i)}
                 for i in range(n)]

  def __len__(self):
    return len(self.rows)

  def __getitem__(self, i):
    return self.rows[i]


def ident(e):
  return dict(e)


def test_epochs_are_fresh_permutations_with_a_padded_last_batch():
  src = ListSource(11)
  it = pipeline.train_iterator(src, ident, batch_size=4, seed=0, num_epochs=3)
  batches = list(it)
  assert len(batches) == 3 * pipeline.steps_per_epoch(11, 4) == 9
  epochs = []
  for e in range(3):
    ids = []
    for b in batches[3 * e:3 * e + 3]:
      assert b["x"].shape == (4, 3, 1)
      ids += b["id"][b["mask"]].tolist()
    assert sorted(ids) == list(range(11))  # every example exactly once per epoch
    epochs.append(ids)
    last = batches[3 * e + 2]
    assert last["mask"].tolist() == [True, True, True, False]  # Keras keeps the partial batch
    assert not last["x"][3].any()
  assert epochs[0] != epochs[1] != epochs[2]  # reshuffled every epoch


def test_iterator_state_resumes_exactly():
  src = ListSource(11)
  it = pipeline.train_iterator(src, ident, batch_size=4, seed=3, num_epochs=4)
  for _ in range(5):
    next(it)
  state = it.get_state()
  rest = [b["id"].tolist() for b in it]
  it2 = pipeline.train_iterator(src, ident, batch_size=4, seed=3, num_epochs=4)
  it2.set_state(state)
  assert [b["id"].tolist() for b in it2] == rest


def test_processes_take_disjoint_rows_of_the_same_global_batch():
  src = ListSource(16)
  full = list(pipeline.train_iterator(src, ident, batch_size=8, seed=1, num_epochs=1))
  parts = [list(pipeline.train_iterator(src, ident, batch_size=8, seed=1, num_epochs=1,
                                        process_index=p, process_count=2)) for p in range(2)]
  for b, p0, p1 in zip(full, *parts, strict=True):
    np.testing.assert_array_equal(np.concatenate([p0["id"], p1["id"]]), b["id"])


def test_eval_batches_cover_every_example_once_in_order():
  src = ListSource(10)
  batches = list(pipeline.eval_batches(src, ident, batch_size=4))
  ids = np.concatenate([b["id"][b["mask"]] for b in batches])
  np.testing.assert_array_equal(ids, np.arange(10))


def test_each_process_reads_only_its_rows_and_all_padding_batches_keep_their_shape():
  src = ListSource(11)  # batches of 8: the second is 3 rows + 5 padding, all padding on process 1
  full = list(pipeline.train_iterator(src, ident, batch_size=8, seed=1, num_epochs=2,
                                      augment=lambda e, rng: dict(e, noise=rng.random())))
  for p in range(2):
    seen = []

    def counting(e):
      seen.append(int(e["id"]))
      return dict(e)
    part = list(pipeline.train_iterator(src, counting, batch_size=8, seed=1, num_epochs=2, process_index=p,
                                        process_count=2, augment=lambda e, rng: dict(e, noise=rng.random())))
    assert len(part) == len(full) == 4
    for b, q in zip(full, part, strict=True):
      rows = slice(4 * p, 4 * p + 4)
      for k in ("id", "mask", "noise", "x"):  # same rows, same augmentation draws
        np.testing.assert_array_equal(q[k], b[k][rows], err_msg=k)
    own = [int(i) for b in part for i in b["id"][b["mask"]]]
    assert sorted(seen[1:]) == sorted(own)  # (seen[0]: the shape template) nobody else's rows
  assert not part[1]["mask"].any() and part[1]["x"].shape == (4, 3, 1)


def test_eval_rows_per_process():
  src = ListSource(10)  # batches of 8: the second is 2 rows, all padding on process 1
  full = list(pipeline.eval_batches(src, ident, batch_size=8))
  parts = [list(pipeline.eval_batches(src, ident, batch_size=8, process_index=p, process_count=2))
           for p in range(2)]
  for b, p0, p1 in zip(full, *parts, strict=True):
    for k in b:
      np.testing.assert_array_equal(np.concatenate([p0[k], p1[k]]), b[k], err_msg=k)


def test_a_batch_in_more_rows_takes_the_same_examples_and_masks_the_rest():
  """Batch 5 in 8 rows (8 devices): each step holds exactly the 5 examples of the bare batch, in the
  same order, then 3 masked rows; split over 2 processes the rows are the same (process 1: 1 + 3)."""
  src = ListSource(12)
  bare = list(pipeline.train_iterator(src, ident, batch_size=5, seed=2, num_epochs=2))
  rows = list(pipeline.train_iterator(src, ident, batch_size=5, seed=2, num_epochs=2, rows=8))
  assert len(bare) == len(rows) == 6  # ceil(12 / 5) steps per epoch
  for b, r in zip(bare, rows, strict=True):
    assert r["id"].shape == (8,) and not r["mask"][5:].any()
    np.testing.assert_array_equal(r["mask"][:5], b["mask"])
    np.testing.assert_array_equal(r["id"][:5][b["mask"]], b["id"][b["mask"]])
  parts = [list(pipeline.train_iterator(src, ident, batch_size=5, seed=2, num_epochs=2, rows=8,
                                        process_index=p, process_count=2)) for p in range(2)]
  for r, p0, p1 in zip(rows, *parts, strict=True):
    for k in ("id", "mask"):
      np.testing.assert_array_equal(np.concatenate([p0[k], p1[k]]), r[k])
  with pytest.raises(ValueError, match="3 rows per step must hold the global batch of 5"):
    pipeline.train_iterator(src, ident, batch_size=5, seed=2, num_epochs=1, rows=3)


def test_eval_batches_in_threads_are_the_same_batches():
  from jaxcnn.data import pipeline
  source = [{"x": np.full((3,), i, np.float32), "label": np.int32(i)} for i in range(23)]
  plain = list(pipeline.eval_batches(source, lambda e: e, batch_size=8))
  threaded = list(pipeline.eval_batches(source, lambda e: e, batch_size=8, num_threads=3))
  assert len(plain) == len(threaded) == 3
  for a, b in zip(plain, threaded):
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
  assert plain[-1]["mask"].sum() == 7
