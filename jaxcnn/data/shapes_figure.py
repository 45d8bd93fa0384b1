"""`python -m jaxcnn.data.shapes_figure --out docs/shapes_instances.png`: the first training scenes of the
synthetic instance-segmentation set (`shapes_instances`), masks tinted, boxes and classes drawn."""
from __future__ import annotations

import argparse

import numpy as np

from jaxcnn.data.shapes_instances import draw, render


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", default="docs/shapes_instances.png")
  ap.add_argument("--size", type=int, default=128)
  ap.add_argument("--max_instances", type=int, default=6)
  ap.add_argument("--count", type=int, default=8)
  ap.add_argument("--seed", type=int, default=0)
  a = ap.parse_args()
  rng = np.random.default_rng([a.seed, 0])  # the generator of the training split of `seed`
  scenes = [dict(zip(("image", "instance_ids", "labels", "boxes"), render(rng, a.size, a.max_instances)))
            for _ in range(a.count)]
  print(f"wrote {draw(scenes, a.out)}")


if __name__ == "__main__":
  main()
