"""Every experiment's resolved config, for every variant its argument names, is the one recorded in
tests/data/resolved_configs.json: the experiments keep their shared defaults in one place
(`jaxcnn.configs.base_config`) and state only what they change, and moving a default there changed
no experiment. A deliberate change of a config is recorded with `python tests/test_experiment_configs.py`."""
import importlib.util
import itertools
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORD = os.path.join(ROOT, "tests", "data", "resolved_configs.json")
sys.path.insert(0, ROOT)


def _module(name: str):
  spec = importlib.util.spec_from_file_location(f"exp_{name}", os.path.join(ROOT, "experiments", f"{name}.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _combos(names, options) -> list[str]:
  opts = [",".join(c) for r in range(len(options) + 1) for c in itertools.combinations(options, r)]
  return [",".join(p for p in (n, o) if p) for n in names for o in opts]


def variants() -> list[tuple[str, str]]:
  fcn = _module("fcn_ucr")
  out = [("c3d_moving_shapes", a) for a in _combos([""], ["runlocal"])]
  out += [("char_cnn", a) for a in _combos(_module("char_cnn").DATASETS, ["large", "runlocal"])]
  out += [("char_cnn", "ag_news,small")]
  out += [("fcn_ucr", a) for a in _combos(["GunPoint", "BasicMotions", "JapaneseVowels"],
                                          ["runlocal", "quick"])]
  out += [("fcn_ucr", f"GunPoint,{m}{o}") for m in fcn.MODELS[1:] for o in ("", ",quick", ",runlocal")]
  out += [("finetune_mnist", a) for a in _combos(["pretrained", "scratch"], ["2", "runlocal"])]
  for name in ("imagenet", "resnet_imagenet"):
    out += [(name, a) for a in _combos(_module("imagenet").MODELS, ["synthetic", "runlocal"])]
  out += [("lenet_mnist", a) for a in _combos([""], ["gap", "runlocal"])]
  out += [("mask_rcnn", a) for a in _combos(["shapes", "nuclei", *_module("mask_rcnn").PAPER_MASK_AP],
                                            ["fpn", "runlocal"])]
  out += [("resnet_cifar", a) for a in _combos(["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"],
                                               ["synthetic", "runlocal"])]
  out += [("ucr_benchmark", a) for a in _combos(fcn.MODELS, ["runlocal", "quick"])]
  out += [("unet_roads", a) for a in _combos([""], list(_module("unet_roads").OPTIONS))]
  return out


def resolved(name: str, arg: str):
  """The config as a run sees it (JSON-able: tuples as lists), or the error its argument gives."""
  try:
    config = _module(name).get_config(arg)
  except ValueError as e:
    return {"error": str(e)}
  return json.loads(json.dumps(config.to_dict(), default=repr))


def test_the_record_covers_every_experiment_file():
  import glob
  files = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "experiments", "*.py"))} - {"defaults"}
  assert {n for n, _ in variants()} == files


@pytest.mark.parametrize("name", sorted({n for n, _ in variants()}))
def test_every_variant_resolves_to_its_recorded_config(name):
  record = json.load(open(RECORD))
  for exp, arg in variants():
    if exp == name:
      assert resolved(exp, arg) == record[f"{exp}:{arg}"], f"{exp}:{arg}"


if __name__ == "__main__":
  json.dump({f"{n}:{a}": resolved(n, a) for n, a in variants()}, open(RECORD, "w"), indent=0, sort_keys=True)
  print(f"wrote {RECORD}: {len(variants())} configs")
