from jaxcnn.train.plateau import Plateau


def test_keras1_reduce_lr_on_plateau_semantics():
  p = Plateau(1e-3, factor=0.5, patience=3, min_lr=2e-4, min_delta=1e-4)
  lrs = [p.update(1.0)]                       # first epoch sets best
  lrs += [p.update(1.0) for _ in range(3)]    # 3 epochs without improvement: wait 1, 2, 3
  assert lrs == [1e-3] * 4
  assert p.update(1.0) == 5e-4                # 4th (patience + 1): reduced; the counter restarts at 1
  assert [p.update(1.0) for _ in range(2)] == [5e-4] * 2
  assert p.update(1.0) == 2.5e-4              # later reductions every `patience` epochs
  assert p.update(0.99995) == 2.5e-4          # improvement below min_delta does not count
  p2 = Plateau(1e-3, patience=2)
  p2.update(1.0)
  p2.update(1.0)
  assert p2.update(0.5) == 1e-3 and p2.wait == 0  # a real improvement resets the counter
  for _ in range(20):
    p.update(1.0)
  assert p.lr == 2e-4                          # floor


def test_state_round_trip():
  p = Plateau(1e-3, patience=2)
  for v in (1.0, 1.0, 1.0, 1.0):
    p.update(v)
  q = Plateau(1e-3, patience=2)
  q.load_state_dict(p.state_dict())
  assert [p.update(1.0) for _ in range(4)] == [q.update(1.0) for _ in range(4)]
