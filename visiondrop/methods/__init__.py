"""Method registry: a config's `method` key picks one of these classes."""

from __future__ import annotations

from visiondrop.methods.base import Method, NoPruning
from visiondrop.methods.fastv import FastV
from visiondrop.methods.pdrop import PDrop
from visiondrop.methods.sparsevlm import SparseVLM
from visiondrop.methods.visiondrop import VisionDrop
from visiondrop.methods.visionzip import VisionZip
from visiondrop.methods.vispruner import VisPruner

METHODS: dict[str, type[Method]] = {
    cls.name: cls for cls in (NoPruning, VisionDrop, FastV, PDrop, VisionZip, VisPruner, SparseVLM)
}


def get_method_class(name: str) -> type[Method]:
    """The registered class for a method name, or a ConfigError listing the known ones."""
    from visiondrop.config import ConfigError

    if name not in METHODS:
        raise ConfigError(f"method: unknown method {name!r} (known: {', '.join(sorted(METHODS))})")
    return METHODS[name]


def build_method(config) -> Method:
    """Instantiate the method of a validated PruningConfig."""
    from visiondrop.config import ConfigError

    try:
        return get_method_class(config.method)(config.options)
    except ValueError as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(str(err)) from err
