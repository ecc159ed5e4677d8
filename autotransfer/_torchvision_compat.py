"""Make ``import torchvision`` (and so ``import timm``) work on a CPU-only torch.

PyPI's ``torchvision==0.28.0`` is built against CUDA torch. On the CPU build of torch that we pin,
its compiled extension ``torchvision/_C.so`` cannot load (missing CUDA libraries), and the import
then dies in ``torchvision/_meta_registrations.py`` with ``operator torchvision::nms does not exist``
because it registers fake kernels for operators that the extension would have declared.

The fix: when, and only when, the extension really fails to load, declare the schemas of those
operators ourselves with ``torch.library`` before torchvision is imported. The import then
succeeds; torchvision's compiled ops (nms, roi_align, ...) stay unavailable, and nothing in
autotransfer uses them. Everything is in this one module. The package's ``__init__`` installs
an import hook (``install_import_hook``) that runs the fix just before the first ``import timm`` or
``import torchvision`` of the process, so the main process, test workers and Ray workers (which
import the package before they unpickle anything that refers to timm) are all covered, and a
process that never needs torch (``autotransfer --help``) does not pay for importing it.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

# The only operators whose fake kernels torchvision registers at import time (see its
# _meta_registrations.py); the signatures are those of torchvision's C++ sources.
_MISSING_OP_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)

_library = None  # the torch.library.Library, kept alive: dropping it would undefine the ops


def _extension_loads() -> bool:
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # no torchvision at all: nothing to fix
    candidates = sorted(Path(spec.submodule_search_locations[0]).glob("_C*.so"))
    if not candidates:
        return False
    try:
        torch.ops.load_library(str(candidates[0]))
    except (OSError, RuntimeError):
        return False
    return True


def ensure_torchvision_importable() -> bool:
    """Declare torchvision's operator schemas if its compiled ops cannot load; return True if it did."""
    global _library
    # torch first: importing it may look torchvision up, which runs the import hook (and this
    # function) re-entrantly; the checks below then see what that call did.
    import torch

    _FixBeforeImport.done = True
    if _library is not None or "torchvision" in sys.modules or _extension_loads():
        return False
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _MISSING_OP_SCHEMAS:
        _library.define(schema)
    return True


class _FixBeforeImport(importlib.abc.MetaPathFinder):
    """Runs ``ensure_torchvision_importable`` once, just before timm or torchvision is first imported."""

    done = False

    def find_spec(self, fullname, path=None, target=None):
        if not self.done and fullname in ("timm", "torchvision"):
            type(self).done = True  # first: the fix itself looks torchvision up
            ensure_torchvision_importable()
        return None  # the normal finders do the import


def install_import_hook() -> None:
    """Apply the fix lazily (before the first timm/torchvision import), or now if one already happened."""
    if "timm" in sys.modules or "torchvision" in sys.modules:
        return
    if not any(isinstance(f, _FixBeforeImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _FixBeforeImport())
