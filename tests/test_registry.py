import pytest

from jaxcnn import registry


def test_unknown_names_list_the_registered_ones():
  registry.load_all()
  with pytest.raises(registry.RegistryError) as e:
    registry.MODELS.get("fnc")
  msg = str(e.value)
  assert "Unknown model name 'fnc'" in msg and "Did you mean: fcn" in msg
  assert "fcn" in msg and "resnet_ts" in msg
  with pytest.raises(registry.RegistryError, match="Available datasets: .*ucr_uea"):
    registry.DATASETS.get("ucr")
  with pytest.raises(registry.RegistryError, match="Available tasks: classification"):
    registry.TASKS.get("segmentation_x")


def test_unknown_kwargs_are_rejected_with_the_accepted_ones():
  registry.load_all()
  with pytest.raises(registry.RegistryError) as e:
    registry.MODELS.build("fcn", num_classes=2, filter=(1, 2, 3))
  assert "'filter'" in str(e.value) and "filters" in str(e.value) and "kernel_sizes" in str(e.value)


def test_register_twice_fails():
  r = registry.Registry("thing")
  r.register("a")(lambda: 1)
  with pytest.raises(registry.RegistryError):
    r.register("a")(lambda: 2)


def test_every_task_declares_the_task_contract():
  """The loop, the step, the report and the CLI call tasks through jaxcnn.tasks.base.Task only."""
  from jaxcnn.tasks.base import KINDS, Task
  registry.load_all()
  for name in registry.TASKS.names():
    cls = registry.TASKS.get(name)
    assert issubclass(cls, Task) and cls.kind in KINDS, name
    if cls.host_eval:
      assert cls.predict_body is not Task.predict_body and cls.evaluate is not Task.evaluate, name


def test_every_model_takes_the_injected_arguments_and_declares_its_input():
  """The model contract of jaxcnn/models/__init__.py: the trainer's num_classes / axis_name / dtype,
  and the natural input `python -m jaxcnn.summary NAME` traces."""
  for name in registry.MODELS.names():
    accepted = registry.accepted_kwargs(registry.MODELS.get(name))
    assert accepted is None or {"num_classes", "axis_name", "dtype"} <= set(accepted), (name, accepted)
    info = registry.MODELS.info(name)
    assert isinstance(info.get("input_shape"), tuple) and all(d > 0 for d in info["input_shape"]), name


def test_a_run_builds_its_model_once_and_its_copy_without_the_axis_equals_a_fresh_build(monkeypatch):
  """components.build_model_and_task builds the model once and copies it without the device axis
  (`clone(axis_name=None)`): for every zoo model that copy equals a build with axis_name=None."""
  registry.load_all()
  for name in registry.MODELS.names():
    with_axis = registry.MODELS.build(name, num_classes=10, axis_name="data")
    assert with_axis.clone(axis_name=None) == registry.MODELS.build(name, num_classes=10, axis_name=None), name
  from conftest import load_experiment
  from jaxcnn.train import components
  calls = []
  build = registry.MODELS.build
  monkeypatch.setattr(registry.MODELS, "build", lambda *a, **k: calls.append(a) or build(*a, **k))
  model, init_model, _ = components.build_model_and_task(load_experiment("lenet_mnist", "runlocal"), 10,
                                                         host_eval_ready=False)
  assert len(calls) == 1 and model.axis_name == "data" and init_model.axis_name is None
