"""Weight files as `{name: numpy array}`, read and written without torch.

- `.pth` / `.pt` / `.bin`: what `torch.save(model.state_dict(), f)` writes, in both of its formats: the
  zip archive of torch >= 1.6 (`<archive>/data.pkl` + one raw file per storage) and the older stream
  (pickles followed by the raw storages; the EfficientNet-Lite0 file is one). The pickle is read by a
  restricted unpickler that knows only the tensor-rebuilding functions, the storage types and
  `OrderedDict`: a file that pickles anything else (a whole `nn.Module`, optimizer objects, code) is
  refused with a message, never executed. A checkpoint dict that wraps the weights (`{"state_dict":
  ...}`, `{"model": ...}`, timm's `{"state_dict_ema": ...}`) is unwrapped.
- `.safetensors`: an 8-byte little-endian header length, a JSON header, the raw bytes.
- `.npz`: numpy's archive, the format `save_state_dict` writes by default (no extra package).

Every failure is a `WeightFileError` that names the file and what is wrong with it.
"""
from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

from jaxcnn.errors import ConfigError


class WeightFileError(ConfigError):
  """A weight file that cannot be read: missing, of an unknown format, truncated, or not a state dict."""


# torch's storage classes (as pickled by torch.save) -> numpy dtypes.
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_SAFETENSORS_NAMES = {np.dtype(v): k for k, v in SAFETENSORS_DTYPES.items()}
# Keys under which training checkpoints keep the model's weights (torchvision's references, timm).
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema", "model_ema", "params")
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".npz")


class _Storage:
  """A storage named in the pickle; its bytes are read after the pickle."""

  def __init__(self, key: str, dtype, numel: int | None):
    self.key, self.dtype, self.numel = key, np.dtype(dtype), numel
    self.data: np.ndarray | None = None


class _Tensor:
  """A strided view of a storage, materialised once the storages are read."""

  def __init__(self, storage: _Storage, offset: int, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

  def array(self) -> np.ndarray:
    data = self.storage.data
    if not self.size:
      return np.array(data[self.offset])
    needed = self.offset + 1 + sum((n - 1) * s for n, s in zip(self.size, self.stride))
    if 0 in self.size:
      return np.zeros(self.size, data.dtype)
    if needed > data.size:
      raise ValueError(f"a tensor needs {needed} elements of storage {self.storage.key}, which has "
                       f"{data.size}")
    item = data.itemsize
    return np.lib.stride_tricks.as_strided(data[self.offset:], self.size,
                                           [s * item for s in self.stride]).copy()


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused):
  return data


class _StorageType:
  def __init__(self, name: str):
    self.name = name
    self.dtype = STORAGE_DTYPES[name]


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("builtins", "set"): set,
}


class _Unpickler(pickle.Unpickler):
  """Rebuilds tensors as `_Tensor`s; refuses every global outside `_ALLOWED` and the storage types."""

  def __init__(self, f, path: str, storages: dict, legacy: bool):
    super().__init__(f)
    self._path, self._storages, self._legacy = path, storages, legacy

  def find_class(self, module, name):
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    if module == "torch" and name in STORAGE_DTYPES:
      return _StorageType(name)
    if module.startswith("torch.nn") or "models" in module:
      raise WeightFileError(
          f"{self._path} pickles a whole model object ({module}.{name}), not a state dict: jaxcnn "
          f"reads weights without running pickled code. In torch, save `model.state_dict()` instead "
          f"(torch.save(model.state_dict(), path)).")
    raise WeightFileError(
        f"{self._path} pickles {module}.{name}, which is not part of a state dict of tensors: jaxcnn "
        f"reads only tensors, their storages and OrderedDicts (a restricted unpickler, so that a "
        f"weight file cannot run code). Save `model.state_dict()` from torch, or use .safetensors.")

  def persistent_load(self, pid):
    kind = pid[0].decode() if isinstance(pid[0], bytes) else pid[0]
    if kind != "storage":
      raise WeightFileError(f"{self._path}: unsupported persistent object {kind!r} in the pickle")
    if self._legacy:
      storage_type, key, _location, numel, view = pid[1:6]
      if view is not None:
        raise WeightFileError(f"{self._path}: storage views of the pre-1.0 torch format are not "
                              f"supported; re-save the file with a current torch")
    else:
      storage_type, key, _location, numel = pid[1:5]
    if not isinstance(storage_type, _StorageType):
      raise WeightFileError(f"{self._path}: unknown storage type {storage_type!r}")
    key = str(key)
    if key not in self._storages:
      self._storages[key] = _Storage(key, storage_type.dtype, numel)
    return self._storages[key]


def _materialise(obj, path: str):
  if isinstance(obj, _Tensor):
    return obj.array()
  if isinstance(obj, dict):
    return {k: _materialise(v, path) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialise(v, path) for v in obj)
  return obj


def _read_zip_pth(path: str) -> Any:
  try:
    zf = zipfile.ZipFile(path)
  except zipfile.BadZipFile as e:
    raise WeightFileError(f"{path} is a damaged torch zip archive ({e}): the file is truncated or "
                          f"corrupt; download or copy it again") from None
  with zf:
    names = zf.namelist()
    pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
    if pkl is None:
      raise WeightFileError(f"{path} is a zip archive without data.pkl: not a file torch.save wrote")
    prefix = pkl[: -len("data.pkl")]
    storages: dict[str, _Storage] = {}
    try:
      obj = _Unpickler(io.BytesIO(zf.read(pkl)), path, storages, legacy=False).load()
      for key, s in storages.items():
        raw = zf.read(f"{prefix}data/{key}")
        s.data = np.frombuffer(raw, dtype=s.dtype)
    except (zipfile.BadZipFile, KeyError, EOFError, OSError, struct.error, pickle.UnpicklingError) as e:
      raise WeightFileError(f"{path}: a part of the torch archive cannot be read ({e}): the file is "
                            f"truncated or corrupt; download or copy it again") from None
  return obj, storages


def _read_legacy_pth(path: str) -> Any:
  storages: dict[str, _Storage] = {}
  with open(path, "rb") as f:
    try:
      magic = pickle.load(f)
      if magic != _LEGACY_MAGIC:
        raise WeightFileError(f"{path} is a pickle, but not one that torch.save wrote (no torch magic "
                              f"number): jaxcnn reads torch state dicts, .safetensors and .npz")
      pickle.load(f)  # protocol version
      sys_info = pickle.load(f)
      if not sys_info.get("little_endian", True):
        raise WeightFileError(f"{path} was saved on a big-endian machine; re-save it on x86 or ARM")
      obj = _Unpickler(f, path, storages, legacy=True).load()
      keys = pickle.load(f)
      for key in keys:
        s = storages[str(key)]
        (numel,) = struct.unpack("<q", f.read(8))
        raw = f.read(numel * s.dtype.itemsize)
        if len(raw) != numel * s.dtype.itemsize:
          raise EOFError(f"storage {key} has {len(raw)} of {numel * s.dtype.itemsize} bytes")
        s.data = np.frombuffer(raw, dtype=s.dtype)
    except WeightFileError:
      raise
    except (EOFError, KeyError, struct.error, pickle.UnpicklingError, ValueError, TypeError) as e:
      raise WeightFileError(f"{path} is truncated or corrupt ({type(e).__name__}: {e}); download or "
                            f"copy it again") from None
  return obj, storages


def _state_dict_of(obj, path: str) -> dict[str, np.ndarray]:
  if isinstance(obj, dict):
    for key in WRAPPER_KEYS:
      if key in obj and isinstance(obj[key], dict) and any(isinstance(v, np.ndarray)
                                                            for v in obj[key].values()):
        return _state_dict_of(obj[key], path)
    tensors = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if tensors:
      return {str(k).removeprefix("module."): v for k, v in tensors.items()}
  raise WeightFileError(f"{path} holds no tensors by name (found {type(obj).__name__}"
                        f"{' with keys ' + ', '.join(map(str, list(obj)[:6])) if isinstance(obj, dict) else ''}"
                        f"): a state dict is a mapping from parameter names to tensors")


def read_pth(path: str) -> dict[str, np.ndarray]:
  """A torch state dict (either format of torch.save) as numpy arrays, without torch."""
  if zipfile.is_zipfile(path):
    obj, _ = _read_zip_pth(path)
  else:
    obj, _ = _read_legacy_pth(path)
  return _state_dict_of(_materialise(obj, path), path)


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  with open(path, "rb") as f:
    raw = f.read()
  try:
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
  except (struct.error, ValueError, UnicodeDecodeError) as e:
    raise WeightFileError(f"{path} has no valid safetensors header ({e}): the file is truncated or "
                          f"not a .safetensors file") from None
  data = memoryview(raw)[8 + n:]
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    dtype = SAFETENSORS_DTYPES.get(info.get("dtype"))
    if dtype is None:
      raise WeightFileError(f"{path}: tensor {name!r} has dtype {info.get('dtype')!r}, which jaxcnn "
                            f"does not read ({', '.join(SAFETENSORS_DTYPES)})")
    begin, end = info["data_offsets"]
    if end > len(data):
      raise WeightFileError(f"{path} is truncated: tensor {name!r} ends at byte {end} of the data, "
                            f"which has {len(data)}; download or copy it again")
    out[name] = np.frombuffer(data[begin:end], dtype=dtype).reshape(info["shape"]).copy()
  return _state_dict_of(out, path)


def read_npz(path: str) -> dict[str, np.ndarray]:
  try:
    with np.load(path, allow_pickle=False) as z:
      return _state_dict_of({k: z[k] for k in z.files}, path)
  except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
    raise WeightFileError(f"{path} is not a readable .npz archive ({e}): truncated or corrupt") from None


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """`{name: array}` from a `.pth`/`.pt`/`.bin` (torch.save), `.safetensors` or `.npz` file."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise WeightFileError(f"no weight file at {path}: pass the path of a .pth, .safetensors or .npz "
                          f"file (--config.model.pretrained=PATH)")
  suffix = os.path.splitext(path)[1].lower()
  if os.path.getsize(path) == 0:
    raise WeightFileError(f"{path} is empty (0 bytes): the download or copy did not finish")
  if suffix == ".safetensors":
    return read_safetensors(path)
  if suffix == ".npz":
    return read_npz(path)
  if suffix in (".pth", ".pt", ".bin", ".ckpt", ".tar"):
    return read_pth(path)
  raise WeightFileError(f"{path}: unknown weight file type {suffix or '(no suffix)'!r}; jaxcnn reads "
                        f"{', '.join(SUFFIXES)}")


def save_state_dict(path: str, state_dict: dict[str, np.ndarray]) -> str:
  """Writes `state_dict` as `.safetensors` or `.npz` (by `path`'s suffix); torch reads both
  (`safetensors.torch.load_file`, or `{k: torch.from_numpy(v) for k, v in np.load(path).items()}`)."""
  path = os.fspath(path)
  arrays = {k: np.ascontiguousarray(v) for k, v in state_dict.items()}
  if path.endswith(".npz"):
    np.savez(path, **arrays)
    return path
  if not path.endswith(".safetensors"):
    raise WeightFileError(f"save_state_dict writes .safetensors or .npz; got {path}")
  header, offset, chunks = {}, 0, []
  for name, a in arrays.items():
    if a.dtype not in _SAFETENSORS_NAMES:
      raise WeightFileError(f"tensor {name!r} has dtype {a.dtype}, which safetensors cannot hold")
    b = a.tobytes()
    header[name] = {"dtype": _SAFETENSORS_NAMES[a.dtype], "shape": list(a.shape),
                    "data_offsets": [offset, offset + len(b)]}
    offset += len(b)
    chunks.append(b)
  head = json.dumps(header, separators=(",", ":")).encode()
  head += b" " * (-len(head) % 8)
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(struct.pack("<Q", len(head)))
    f.write(head)
    for b in chunks:
      f.write(b)
  os.replace(tmp, path)
  return path
