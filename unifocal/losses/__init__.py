"""The Unified Focal loss family and the segmentation losses it generalises.

Every loss takes raw network outputs (``from_logits=True``) of shape (B, C, *S), 2D or 3D, and a label
map (B, 1, *S) / (B, *S) or one-hot target (B, C, *S); ``multilabel=True`` switches from softmax classes
to independent sigmoid channels (regions). Each loss is an ``nn.Module`` whose hyperparameters are
validated keyword-only arguments, with a functional twin ``xyz_loss(input, target, *, mask=None,
**options)`` that builds and calls the module. The mathematics is documented in ``docs/losses.md``; the
building blocks for writing a loss are :mod:`unifocal.losses.extend`.

The package collects its losses itself: every module here whose name does not start with an underscore
(except :mod:`~unifocal.losses.extend`) is a loss module, and the names in its ``__all__`` are the
package's. A new loss is a new module; nothing here changes.
"""

import importlib as _importlib
import pkgutil as _pkgutil

__all__: list = []
for _module in _pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name != "extend":
        _loaded = _importlib.import_module(f"{__name__}.{_module.name}")
        globals().update({name: getattr(_loaded, name) for name in _loaded.__all__})
        __all__ += _loaded.__all__
__all__.sort()
del _module, _loaded
