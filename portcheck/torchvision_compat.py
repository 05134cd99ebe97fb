"""Make `import torchvision` work beside a CPU-only torch, for the model-zoo pairs (torchvision.models).

torchvision 0.28.0 is the release that matches the pinned torch 2.13.0, but every wheel reachable from the package
indexes is a CUDA build. Beside the CPU torch its C extension (`torchvision/_C`) cannot load, and then
`import torchvision` fails with "operator torchvision::nms does not exist": `torchvision/_meta_registrations.py`
registers fake kernels for `torchvision::nms` and `torchvision::qnms` with `torch.library.register_fake`, which
needs the operator's schema, and unlike its other meta registrations these two are not guarded by
`extension._has_ops()` (upstream bug pytorch/vision#9085). The schemas are normally defined by the C extension.

`prepare_torchvision()` first tries the extension itself; only if it cannot load does it define the two schemas
(exactly as the C++ sources declare them) with `torch.library.define`, which keeps its registration alive for the
life of the process. Nothing of torchvision is replaced or assigned to: the model definitions (pure Python over
torch.nn) import normally, and calling the two detection operators would fail loudly ("no kernel registered"),
which the zoo never does.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

# The schemas torchvision's C++ sources declare (read from torchvision 0.28.0's _C.so: the same text for both).
_SCHEMAS = {
    "torchvision::nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "torchvision::qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


def prepare_torchvision() -> None:
    """Import torchvision, defining the operator schemas its fake registrations need when its C extension cannot
    load. Idempotent: a second call (or a call after torchvision was imported) does nothing. Raises
    ModuleNotFoundError with the install hint when torchvision is not installed."""
    if "torchvision" in sys.modules:
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("torchvision is not installed (pip install torchvision==0.28.0, the 'test' extra)")
    if not _extension_loads(Path(next(iter(spec.submodule_search_locations)))):
        _define_missing_schemas()
    importlib.import_module("torchvision")


def _extension_loads(package_dir: Path) -> bool:
    """Load torchvision's C extension the way torchvision would; False when there is none or it cannot load (a
    CUDA build beside a CPU torch). When it loads, it defines the operators itself and must not be pre-empted."""
    import torch

    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        library = package_dir / f"_C{suffix}"
        if library.is_file():
            try:
                torch.ops.load_library(str(library))
            except OSError:
                return False
            return True
    return False


def _define_missing_schemas() -> None:
    import torch

    for qualname, signature in _SCHEMAS.items():
        if not _operator_exists(qualname):
            torch.library.define(qualname, signature)


def _operator_exists(qualname: str) -> bool:
    import torch

    namespace, name = qualname.split("::")
    try:
        getattr(getattr(torch.ops, namespace), name)
    except (AttributeError, RuntimeError):
        return False
    return True
