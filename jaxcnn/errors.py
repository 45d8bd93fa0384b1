"""The error a user's mistake raises: one message that says what was wrong and how to fix it.

`launch.py` prints it as one line and exits with status 2 (jaxcnn/cli.py); every module that checks a
config value, a file or an argument raises it or a subclass (`registry.RegistryError`,
`data.DatasetError`, `pretrained.WeightFileError`, ...).
"""


class ConfigError(ValueError):
  """A config value that cannot work (a user error, not a bug): the message says how to fix it."""
