"""Makes the fixtures that check evaluation/torch_file.py and evaluation/inception.py against real PyTorch.

Not a test, and not run by CI (which has no PyTorch): run it by hand in a virtual environment holding torch,
torchvision, pytorch-fid and this package, e.g.

  python3 -m venv /tmp/torchvenv
  /tmp/torchvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 pytorch-fid jax flax
  /tmp/torchvenv/bin/pip install --no-deps -e .
  /tmp/torchvenv/bin/python tests/data/make_inception_reference.py

It writes, next to itself:
- inception_torch_tensors_zip.pt, inception_torch_tensors_legacy.pt: `torch.save` of a few small tensors (a transposed
  and a sliced view sharing one storage, float64/16, bfloat16, int64/32, uint8, bool, a scalar, an empty tensor, and
  a real BasicConv2d state dict with its `num_batches_tracked`), in the zip and in the legacy layout;
  inception_torch_tensors_expected.npz: the same tensors as torch's `.numpy()` gives them (bfloat16 as float32);
- inception_reference.npz: pool3 features and fc logits of pytorch-fid's FID Inception, loaded with
  `random_state_dict(0)` written by `save_state_dict(legacy=True)` and read by `torch.load`, on `reference_images()`;
  with the state dict's keys and shapes, and the parameter counts, as torch reports them.

Before writing, it checks the other direction too: files from `save_state_dict` (both layouts) load in `torch.load`
bit-exactly (also with `weights_only=True`, and the zip one with `mmap=True`).
"""

import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def reference_images():
  """Three images in [0, 1], made of 8-bit pixels (pixel / 255) from NumPy's PCG64, seed 0: a 32x32 RGB image
  (CIFAR-10's size, enlarged to 299), an 8x8 grey one (the digits' size), and a 320x320 RGB one (shrunk to 299)."""
  rng = np.random.default_rng(0)
  pixels = lambda *shape: (rng.integers(0, 256, shape).astype(np.float32) / 255).astype(np.float32)
  return {"rgb_32": pixels(32, 32, 3), "grey_8": pixels(8, 8, 1), "rgb_320": pixels(320, 320, 3)}


def _torch_tensors(torch, torchvision):
  """The small tensors of the reader fixtures (name -> tensor), views and all."""
  base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 7
  block = torchvision.models.inception.BasicConv2d(2, 3, kernel_size=2)
  with torch.no_grad():
    for i, t in enumerate(block.state_dict().values()):
      if t.is_floating_point():
        t.copy_(torch.linspace(-1, 1, t.numel()).reshape(t.shape) + i)
  # A module's own state dict (an OrderedDict carrying `_metadata`, with `num_batches_tracked`), then the rest.
  tensors = block.state_dict(prefix="block.")
  tensors.update(
    {
      "float32_transposed": base.t(),  # strides (1, 6)
      "float32_slice": base[1:3, ::2],  # the same storage, offset 6, strides (6, 2)
      "float64": torch.linspace(-1, 1, 5, dtype=torch.float64),
      "float16": torch.tensor([0.5, -2.0, 65504.0], dtype=torch.float16),
      "bfloat16": torch.tensor([1.5, -0.1, 3e38], dtype=torch.bfloat16),
      "int64": torch.tensor([-(2**40), 0, 2**62 + 1], dtype=torch.int64),
      "int32": torch.tensor([[-7, 8], [9, 2**31 - 1]], dtype=torch.int32),
      "uint8": torch.tensor([0, 255, 17], dtype=torch.uint8),
      "bool": torch.tensor([True, False, True]),
      "scalar": torch.tensor(3.25),
      "empty": torch.zeros(0, 3),
    }
  )
  assert hasattr(tensors, "_metadata")
  return tensors


def make_reader_fixtures(torch, torchvision):
  tensors = _torch_tensors(torch, torchvision)
  torch.save(tensors, os.path.join(HERE, "inception_torch_tensors_zip.pt"))
  torch.save(tensors, os.path.join(HERE, "inception_torch_tensors_legacy.pt"), _use_new_zipfile_serialization=False)
  expected = {k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in tensors.items()}
  np.savez(os.path.join(HERE, "inception_torch_tensors_expected.npz"), **expected)


def check_reader_and_writer(torch, torchvision):
  """torch.save -> load_state_dict and save_state_dict -> torch.load are both bit-exact."""
  from scorejax.evaluation import torch_file

  rng = np.random.default_rng(1)
  arrays = {
    "f32": rng.standard_normal((3, 4, 5)).astype(np.float32),
    "f64": rng.standard_normal(7),
    "f16": rng.standard_normal((2, 2)).astype(np.float16),
    "i64": rng.integers(-(2**62), 2**62, (4,)),
    "i8": rng.integers(-128, 128, (3,)).astype(np.int8),
    "b": rng.uniform(size=5) > 0.5,
    "scalar": np.array(2.5, np.float32),
    "empty": np.zeros((0, 2), np.float32),
  }
  with tempfile.TemporaryDirectory() as tmp:
    for legacy in (False, True):
      path = os.path.join(tmp, f"ours_{legacy}.pt")
      torch_file.save_state_dict(path, arrays, legacy=legacy)
      for kwargs in ({}, {"weights_only": True}, {"weights_only": False}, {} if legacy else {"mmap": True}):
        loaded = torch.load(path, **kwargs)
        assert list(loaded) == list(arrays), (legacy, kwargs)
        for k, a in arrays.items():
          got = loaded[k].numpy()
          assert got.dtype == a.dtype and got.shape == a.shape and np.array_equal(got, a), (legacy, kwargs, k)
      path = os.path.join(tmp, f"torch_{legacy}.pt")
      tensors = {k: torch.from_numpy(a) for k, a in arrays.items()}
      tensors["f32_view"] = tensors["f32"].permute(2, 0, 1)[1:, :, ::2]
      torch.save(tensors, path, _use_new_zipfile_serialization=not legacy)
      ours = torch_file.load_state_dict(path)
      for k, t in tensors.items():
        assert ours[k].dtype == t.numpy().dtype and np.array_equal(ours[k], t.numpy()), (legacy, k)
  print("reader and writer agree with torch, both layouts")


def make_inception_reference(torch):
  import torch.nn.functional as F
  from pytorch_fid import inception as fid

  from scorejax.evaluation import inception, torch_file

  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "random_state_dict_0.pth")
    torch_file.save_state_dict(path, inception.random_state_dict(0), legacy=True)
    state_dict = torch.load(path)
  # pytorch-fid's own construction, with its download replaced by our weights.
  fid.load_state_dict_from_url = lambda url, progress=True: state_dict
  full = fid.fid_inception_v3().eval()
  pool3_model = fid.InceptionV3([fid.InceptionV3.DEFAULT_BLOCK_INDEX], resize_input=True, normalize_input=True).eval()
  torch_shapes = [(k, tuple(t.shape)) for k, t in full.state_dict().items() if not k.endswith("num_batches_tracked")]
  assert torch_shapes == inception.reference_state_dict_shapes(), "reference_state_dict_shapes differs from torch's"

  out = {
    "torch_state_dict_keys": np.array([k for k, _ in torch_shapes]),
    "torch_state_dict_shapes": np.array([str(s) for _, s in torch_shapes]),
    "torch_num_parameters": np.array(sum(p.numel() for p in full.parameters())),
    "torch_num_buffers": np.array(sum(b.numel() for k, b in full.named_buffers() if "num_batches_tracked" not in k)),
    "torch_num_batches_tracked": np.array(sum("num_batches_tracked" in k for k, _ in full.named_buffers())),
  }
  with torch.no_grad():
    for name, image in reference_images().items():
      x = torch.from_numpy(image).permute(2, 0, 1)[None].repeat(1, 3 // image.shape[-1], 1, 1)  # grey -> RGB
      pool3 = pool3_model(x)[0][:, :, 0, 0]
      # The whole torchvision forward (dropout off, then fc) on pytorch-fid's input: the logits, and pool3 again.
      prepared = 2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
      logits = full(prepared)
      assert torch.allclose(full.fc(pool3), logits, atol=1e-5), name
      out[f"{name}_pool3"] = pool3[0].numpy()
      out[f"{name}_logits"] = logits[0].numpy()
      out[f"{name}_pixel_sum"] = np.array(image.astype(np.float64).sum())
  np.savez_compressed(os.path.join(HERE, "inception_reference.npz"), **out)
  print(f"{len(torch_shapes)} tensors, {int(out['torch_num_parameters'])} parameters, {torch.__version__}")


def main():
  import torch
  import torchvision

  torch.set_num_threads(max(1, os.cpu_count() or 1))
  check_reader_and_writer(torch, torchvision)
  make_reader_fixtures(torch, torchvision)
  make_inception_reference(torch)
  return 0


if __name__ == "__main__":
  sys.exit(main())
