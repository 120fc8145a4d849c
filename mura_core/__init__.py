"""mura_core: musculoskeletal radiograph screening with the MURA method, as a library.

The public API: `create_model`, `get_spec`, `list_models` (model registry); `Ensemble`,
`load_ensemble` (ensembles on disk and study prediction); `load_image`, `ImageLoadError`
(decoding any radiograph file); `index_dataset` (MURA, FracAtlas and folder layouts).
Submodules import TensorFlow lazily through this module's attributes.
"""

from importlib import import_module

_EXPORTS = {
    "create_model": "registry", "get_spec": "registry", "list_models": "registry", "ModelSpec": "registry",
    "Ensemble": "ensemble", "load_ensemble": "ensemble", "EnsembleLoadError": "ensemble",
    "StudyResult": "ensemble", "Study": "results", "DISCLAIMER": "notices",
    "load_image": "imaging", "ImageLoadError": "imaging",
    "index_dataset": "datasets", "DatasetError": "datasets",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'mura_core' has no attribute {name!r}")
