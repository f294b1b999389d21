"""lmms-eval plugin: `pip install -e ".[eval]"` registers `visiondrop_llava` in the entry-point group
`lmms_eval.models`; `manifest` is what lmms-eval's registry loads (the model class is imported only when
the model is asked for, so lmms-eval starts even if this package's model cannot load)."""

from __future__ import annotations

MODEL_NAME = "visiondrop_llava"
MODEL_CLASS = "llava.lmms.model.VisionDropLlava"


def manifest():
    """lmms-eval's ModelManifest of the `visiondrop_llava` model."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_NAME, simple_class_path=MODEL_CLASS)
