"""Custom handlers: a `TorchModel` subclass named on the command line (`--handler`) or in
model.json (`"handler"`), served in place of TorchModel.

A handler customises `preprocess` (named arrays as every protocol decodes them, BYTES
included -> the arrays the module takes) and `postprocess` (the module's named outputs ->
what goes back, BYTES included), or `predict` itself. Like a module class, it may live in a
module shipped beside the model.
"""

from __future__ import annotations

import importlib
import inspect
import sys

from .loader import ModelLoadError, resolve_model_dir
from .model import TorchModel
from .signature import SignatureError, read_signature


def resolve_handler(spec: str | None, model_dir: str | None) -> type[TorchModel]:
    """The class to serve: `spec`, else model.json's "handler", else TorchModel.

    Every way it can fail is one ModelLoadError line, which stops the process (exit 2).
    """
    directory = resolve_model_dir(model_dir)
    if spec is None:
        try:
            signature = read_signature(directory)
        except SignatureError as error:
            raise ModelLoadError(str(error)) from None
        spec = signature.extras.get("handler") if signature else None
        if spec is None:
            return TorchModel
        if not isinstance(spec, str):
            raise ModelLoadError(f"{directory}/model.json: 'handler' must be a string")
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise ModelLoadError(f"handler {spec!r} must look like 'package.module:Class'")
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # an import runs the module's code: any error is possible
        raise ModelLoadError(
            f"cannot import handler module {module_name!r}: {type(error).__name__}: {error}"
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ModelLoadError(f"handler module {module_name!r} has no {class_name!r}")
    if not (inspect.isclass(cls) and issubclass(cls, TorchModel)):
        raise ModelLoadError(
            f"handler {spec!r} is not a predictor.model.TorchModel subclass "
            f"(it is {cls!r}); subclass TorchModel and override preprocess/postprocess"
        )
    return cls
