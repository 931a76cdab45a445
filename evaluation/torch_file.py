"""PyTorch state-dict files read and written without PyTorch: name -> NumPy array.

`torch.save(state_dict, path)` writes one of two layouts, both built on a pickle whose tensors point at raw storages
through "persistent ids" (`('storage', torch.FloatStorage, key, location, numel, ...)`) and are rebuilt by
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks)`:

- zip (torch >= 1.6, the default): a zip archive `<name>/data.pkl` + `<name>/data/<key>`, one uncompressed record of
  raw little-endian bytes per storage (`<name>/byteorder` says otherwise where it exists);
- legacy (`_use_new_zipfile_serialization=False`, and every file from torch < 1.6, such as pytorch-fid's Inception
  weights of 2020): five pickles back to back, the magic number 0x1950a86a20f9469cfc6c, the protocol version 1001, a
  dict of system facts, the object, the sorted list of storage keys; then, for each key in that order, an 8-byte
  little-endian element count and the storage's raw bytes.

The pickles are read by an unpickler that knows only the few globals a state dict needs (`collections.OrderedDict`,
the tensor rebuilders, the storage classes); any other global is refused, so no code in a file is ever run.
`.npz` archives (a plain name -> array mapping, as `np.savez` writes) are read by the same `load_state_dict`.
"""

import io
import os
import pickle
import struct
import zipfile

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# torch storage class -> NumPy dtype; bfloat16 has no NumPy dtype, and is read as its 16 bits (widened later).
_STORAGE_DTYPES = {
  "DoubleStorage": np.float64,
  "FloatStorage": np.float32,
  "HalfStorage": np.float16,
  "BFloat16Storage": np.uint16,
  "LongStorage": np.int64,
  "IntStorage": np.int32,
  "ShortStorage": np.int16,
  "CharStorage": np.int8,
  "ByteStorage": np.uint8,
  "BoolStorage": np.bool_,
  "ComplexFloatStorage": np.complex64,
  "ComplexDoubleStorage": np.complex128,
}
_STORAGE_OF_DTYPE = {np.dtype(v): k for k, v in _STORAGE_DTYPES.items() if k != "BFloat16Storage"}


class _Malformed(ValueError):
  """What is wrong with a file, found by this module's own checks (other errors are reported as unreadable)."""


class _StorageType:
  """Stands in for `torch.<X>Storage` inside a pickle: only its name is needed."""

  def __init__(self, name):
    self.name = name


class _StorageRef:
  """A storage named in the pickle, whose bytes are read afterwards (legacy) or from its own record (zip)."""

  def __init__(self, dtype_name, key, numel):
    self.dtype_name, self.key, self.numel = dtype_name, str(key), int(numel)


class _TensorRef:
  """A tensor as `_rebuild_tensor_v2` describes it: a strided view into a storage."""

  def __init__(self, storage, offset, size, stride):
    if not isinstance(storage, _StorageRef):
      raise _Malformed("a tensor is rebuilt from something other than a storage")
    self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
  return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_):
  return data  # an nn.Parameter pickled as such is its tensor


_ALLOWED_GLOBALS = {
  ("collections", "OrderedDict"): __import__("collections").OrderedDict,
  ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
  ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
  **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickles state dicts only: every global outside `_ALLOWED_GLOBALS` is refused."""

  def __init__(self, file, persistent_load=None):
    super().__init__(file)
    self._persistent_load = persistent_load

  def find_class(self, module, name):
    try:
      return _ALLOWED_GLOBALS[(module, name)]
    except KeyError:
      raise _Malformed(f"refusing to unpickle {module}.{name}: not part of a tensor state dict") from None

  def persistent_load(self, pid):
    if self._persistent_load is None:
      raise _Malformed("unexpected persistent id in a plain pickle")
    return self._persistent_load(pid)


def _storage_from_pid(pid):
  """`('storage', StorageType, key, location, numel[, view_metadata])` -> a `_StorageRef`."""
  if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
    raise _Malformed(f"unsupported persistent id {pid!r:.80}")
  if len(pid) > 5 and pid[5] is not None:
    raise _Malformed("storage views (torch < 0.4 files) are not supported")
  return _StorageRef(pid[1].name, pid[2], pid[4])


def _unpickle(data, persistent_load=None):
  try:
    return _RestrictedUnpickler(io.BytesIO(data) if isinstance(data, bytes) else data, persistent_load).load()
  except _Malformed:  # a refused global, a malformed storage: already says what is wrong
    raise
  except Exception as e:  # truncated or garbled bytes: EOFError, UnpicklingError, ...
    raise _Malformed(f"unreadable pickle ({type(e).__name__}: {e})") from None


def _materialize(tensor, storage_bytes, byteorder="little"):
  """The NumPy array of a strided view `tensor` into the raw bytes of its storage (copied, C-contiguous)."""
  storage = tensor.storage
  dtype = np.dtype(_STORAGE_DTYPES[storage.dtype_name]).newbyteorder("<" if byteorder == "little" else ">")
  if len(storage_bytes) < storage.numel * dtype.itemsize:
    raise _Malformed(f"storage {storage.key} holds {len(storage_bytes)} bytes, fewer than its {storage.numel} elements")
  flat = np.frombuffer(storage_bytes, dtype, count=storage.numel)
  if any(s < 0 for s in tensor.size) or any(s < 0 for s in tensor.stride) or tensor.offset < 0:
    raise _Malformed(f"negative size, stride or offset in a view of storage {storage.key}")
  if 0 not in tensor.size:
    last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride))
    if last >= storage.numel:
      raise _Malformed(f"a view reaches element {last} of storage {storage.key}, which has {storage.numel}")
  strided = np.lib.stride_tricks.as_strided(
    flat[tensor.offset :], tensor.size, tuple(s * dtype.itemsize for s in tensor.stride), writeable=False
  )
  array = np.asarray(strided, order="C").astype(dtype.newbyteorder("="))
  if storage.dtype_name == "BFloat16Storage":  # bfloat16 is the top half of a float32
    array = (array.astype(np.uint32) << 16).view(np.float32)
  return array


def _tensors_of(obj, storages, byteorder="little"):
  """`{name: array}` from the unpickled state dict, its tensors filled from `storages[key]` (bytes)."""
  if not isinstance(obj, dict):
    raise _Malformed(f"the file holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)")
  out = {}
  for name, value in obj.items():
    if not isinstance(value, _TensorRef):
      raise _Malformed(f"entry {name!r} is a {type(value).__name__}, not a tensor")
    if value.storage.key not in storages:
      raise _Malformed(f"the bytes of storage {value.storage.key} (entry {name!r}) are missing")
    out[str(name)] = _materialize(value, storages[value.storage.key], byteorder)
  return out


def _load_zip(archive, path):
  names = archive.namelist()
  pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
  if len(pickles) != 1:
    if names and all(n.endswith(".npy") for n in names):
      with np.load(path, allow_pickle=False) as npz:
        return {k: np.asarray(npz[k]) for k in npz.files}
    raise _Malformed("a zip archive that is neither a torch file (one <name>/data.pkl) nor an .npz")
  prefix = pickles[0][: -len("data.pkl")]
  byteorder = archive.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in names else "little"
  refs = {}

  def persistent_load(pid):
    ref = _storage_from_pid(pid)
    refs.setdefault(ref.key, ref)
    return refs[ref.key]

  obj = _unpickle(archive.read(pickles[0]), persistent_load)
  storages = {}
  for key in refs:
    record = f"{prefix}data/{key}"
    if record not in names:
      raise _Malformed(f"record {record} is missing")
    storages[key] = archive.read(record)
  return _tensors_of(obj, storages, byteorder)


def _load_legacy(f):
  file_size = os.fstat(f.fileno()).st_size
  try:
    magic = _unpickle(f)
  except _Malformed:
    raise _Malformed("neither a zip archive nor a legacy torch file (no magic number)") from None
  if magic != _LEGACY_MAGIC:
    raise _Malformed("neither a zip archive nor a legacy torch file (wrong magic number)")
  protocol = _unpickle(f)
  if protocol != _LEGACY_PROTOCOL:
    raise _Malformed(f"legacy torch file of protocol {protocol}, expected {_LEGACY_PROTOCOL}")
  sys_info = _unpickle(f)
  if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
    raise _Malformed("legacy torch file of another system (big-endian, or no system facts)")
  refs = {}

  def persistent_load(pid):
    ref = _storage_from_pid(pid)
    refs.setdefault(ref.key, ref)
    return refs[ref.key]

  obj = _unpickle(f, persistent_load)
  keys = _unpickle(f)
  storages = {}
  for key in keys:
    header = f.read(8)
    if len(header) < 8:
      raise _Malformed(f"truncated before storage {key}")
    (numel,) = struct.unpack("<q", header)
    if key not in refs:
      raise _Malformed(f"storage {key} is listed but no tensor uses it")
    nbytes = numel * np.dtype(_STORAGE_DTYPES[refs[key].dtype_name]).itemsize
    if not 0 <= nbytes <= file_size - f.tell():
      raise _Malformed(f"truncated inside storage {key}")
    storages[str(key)] = f.read(nbytes)
    if len(storages[str(key)]) < nbytes:
      raise _Malformed(f"truncated inside storage {key}")
  return _tensors_of(obj, storages)


def load_state_dict(path):
  """`{name: np.ndarray}` from a torch state-dict file (zip or legacy layout) or an `.npz` archive.

  Arrays come back C-contiguous in their stored dtype (bfloat16 widened to float32). Any file that is not one of
  these, is truncated, or pickles something other than tensors in a mapping raises ValueError with one line.
  """
  path = os.fspath(path)
  try:
    if zipfile.is_zipfile(path):
      with zipfile.ZipFile(path) as archive:
        return _load_zip(archive, path)
    with open(path, "rb") as f:
      if f.read(4) == b"PK\x03\x04":
        raise _Malformed("a damaged or truncated zip archive (no central directory)")
      f.seek(0)
      return _load_legacy(f)
  except _Malformed as e:
    raise ValueError(f"{path}: {_first_line(e)}") from None
  except Exception as e:  # OSError, BadZipFile, a garbled view (TypeError): whatever it is, one line naming the file
    raise ValueError(f"{path}: unreadable ({type(e).__name__}: {_first_line(e)})") from None


def _first_line(error):
  return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


class _PickleWriter:
  """Emits protocol-2 pickle opcodes for a state dict, naming torch's globals without importing torch."""

  def __init__(self):
    self.out = bytearray(b"\x80\x02")  # PROTO 2

  def global_(self, module, name):
    self.out += b"c" + f"{module}\n{name}\n".encode()

  def value(self, v):
    if v is None:
      self.out += b"N"
    elif v is True or v is False:
      self.out += b"\x88" if v else b"\x89"
    elif isinstance(v, int):
      if 0 <= v < 256:
        self.out += b"K" + bytes([v])
      elif -(2**31) <= v < 2**31:
        self.out += b"J" + struct.pack("<i", v)
      else:
        raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
        self.out += b"\x8a" + bytes([len(raw)]) + raw
    elif isinstance(v, str):
      raw = v.encode()
      self.out += b"X" + struct.pack("<I", len(raw)) + raw
    elif isinstance(v, tuple):
      if not v:
        self.out += b")"
        return
      if len(v) > 3:
        self.out += b"("
      for item in v:
        self.value(item)
      self.out += {1: b"\x85", 2: b"\x86", 3: b"\x87"}.get(len(v), b"t")
    else:
      raise TypeError(type(v))

  def ordered_dict(self):
    self.global_("collections", "OrderedDict")
    self.out += b")R"  # OrderedDict()

  def tensor(self, storage_pid, offset, shape, strides):
    """`_rebuild_tensor_v2(<persistent storage>, offset, shape, strides, False, OrderedDict())`."""
    self.global_("torch._utils", "_rebuild_tensor_v2")
    self.out += b"("
    self.out += b"("  # the persistent id tuple: ('storage', torch.XStorage, key, 'cpu', numel[, None])
    self.value(storage_pid[0])
    self.global_("torch", storage_pid[1])
    for item in storage_pid[2:]:
      self.value(item)
    self.out += b"tQ"  # TUPLE, BINPERSID
    self.value(offset)
    self.value(tuple(shape))
    self.value(tuple(strides))
    self.value(False)
    self.ordered_dict()
    self.out += b"tR"  # TUPLE, REDUCE

  def state_dict(self, entries, legacy):
    """`entries`: (name, storage key, storage class name, numel, shape) with C-contiguous strides."""
    self.ordered_dict()
    if entries:
      self.out += b"("
      for name, key, storage_name, numel, shape in entries:
        self.value(name)
        pid = ("storage", storage_name, key, "cpu", numel) + ((None,) if legacy else ())
        strides = tuple(int(np.prod(shape[i + 1 :], dtype=np.int64)) for i in range(len(shape)))
        self.tensor(pid, 0, shape, strides)
      self.out += b"u"  # SETITEMS
    self.out += b"."
    return bytes(self.out)


def _zip_record(archive, name, data, offset_alignment=64):
  """Writes an uncompressed record whose bytes start on a 64-byte boundary, as torch's own writer does (so
  `torch.load(..., mmap=True)` can map them)."""
  info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
  info.compress_type = zipfile.ZIP_STORED
  start = archive.fp.tell() + 30 + len(name.encode())
  pad = (-(start + 4)) % offset_alignment
  info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
  archive.writestr(info, data)


def save_state_dict(path, tensors, legacy=False):
  """Writes `{name: array}` as `torch.save(state_dict, path)` would: the zip layout, or the legacy one with
  `legacy=True` (torch's `_use_new_zipfile_serialization=False`, the layout of pytorch-fid's weights). `torch.load`
  reads either back as an OrderedDict of CPU tensors; `load_state_dict` reads it back bit-exactly."""
  arrays = [(str(name), np.asarray(a, order="C")) for name, a in tensors.items()]
  for name, a in arrays:
    if a.dtype.newbyteorder("=") not in _STORAGE_OF_DTYPE:
      raise ValueError(f"entry {name!r}: dtype {a.dtype} has no torch storage")
  entries = [
    (name, str(i), _STORAGE_OF_DTYPE[a.dtype.newbyteorder("=")], int(a.size), a.shape)
    for i, (name, a) in enumerate(arrays)
  ]
  raw = [a.astype(a.dtype.newbyteorder("<")).tobytes() for _, a in arrays]
  pickled = _PickleWriter().state_dict(entries, legacy)
  path = os.fspath(path)
  if legacy:
    sys_info = {
      "protocol_version": _LEGACY_PROTOCOL,
      "little_endian": True,
      "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    with open(path, "wb") as f:
      for header in (_LEGACY_MAGIC, _LEGACY_PROTOCOL, sys_info):
        pickle.dump(header, f, protocol=2)
      f.write(pickled)
      pickle.dump([key for _, key, *_ in entries], f, protocol=2)  # already sorted: torch sorts them as strings
      for (_, _, _, numel, _), data in zip(entries, raw):
        f.write(struct.pack("<q", numel) + data)
    return
  prefix = os.path.splitext(os.path.basename(path))[0] or "archive"
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
    _zip_record(archive, f"{prefix}/data.pkl", pickled)
    _zip_record(archive, f"{prefix}/byteorder", b"little")
    for (_, key, _, _, _), data in zip(entries, raw):
      _zip_record(archive, f"{prefix}/data/{key}", data)
    _zip_record(archive, f"{prefix}/version", b"3\n")
