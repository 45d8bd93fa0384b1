"""ImageNet ResNets: `experiments/imagenet.py` restricted to resnet18 ... resnet152 (the name the README's
first commands used). `python launch.py --config=experiments/resnet_imagenet.py:resnet50,synthetic,runlocal`.
"""
from jaxcnn.configs import sibling


def get_config(arg: str = "resnet50"):
  name = (arg or "resnet50").split(",")[0]
  if not name.startswith("resnet"):
    raise ValueError(f"resnet_imagenet.py takes resnet18 ... resnet152, got {name!r}; other ImageNet "
                     "models: experiments/imagenet.py")
  return sibling(__file__, "imagenet").get_config(arg or "resnet50")
