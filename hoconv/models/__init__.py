"""Model zoo: ``create_model(name, **kwargs)``, ``list_models()``.

Importing this package registers every model (the model modules below).
"""

from hoconv.models import convnet3d, mobilenet, resnet  # noqa: F401  (register models)
from hoconv.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
