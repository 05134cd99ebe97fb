"""Checkpoint converter between the official CoNR PyTorch files and PaddlePaddle (`python -m convert --help`).

- `convert.rename`: the declarative torch <-> Paddle rename table and per-tensor transforms.
- `convert.mapping`: pure functions over `dict[str, numpy.ndarray]` (unwrap, identify, check, convert).
- `convert.io`: safe readers and atomic-friendly writers of .pth / .pdparams / .safetensors, sha256.
- `convert.run`: folder-level jobs used by the CLI (validate all, then convert one network at a time).
- `convert.cli`: `main(argv=None) -> int`.
Nothing is imported from torch or paddle until a file is read or written.
"""
