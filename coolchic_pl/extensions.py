"""A researcher's own callbacks and loggers, named in the config as LightningCLI names them:

    callbacks:
      - class_path: my_package.CountSteps
        init_args: {every: 10}
    loggers:                      # null: the stock TensorBoard and CSV loggers; []: none
      - class_path: lightning.pytorch.loggers.CSVLogger
        init_args: {save_dir: runs/csv}

A user callback is one instance for the whole encode, added to the Trainer of every stage
after the encode's own callbacks, so it sees the same hooks; its ``state_dict`` goes into
every checkpoint of the encode and is loaded back on resume.
"""

from __future__ import annotations

import importlib
from typing import Any, TypeVar

T = TypeVar("T")


def check_spec(spec: Any, where: str) -> None:
    """A ``{class_path: "module.Class", init_args: {...}}`` mapping; ValueError (one line) if not."""
    if not isinstance(spec, dict) or not isinstance(spec.get("class_path"), str) or "." not in spec["class_path"]:
        raise ValueError(f"{where}: expected {{class_path: module.Class, init_args: {{...}}}}, got {spec!r}")
    unknown = set(spec) - {"class_path", "init_args"}
    if unknown or not isinstance(spec.get("init_args", {}), dict):
        raise ValueError(f"{where}: only class_path and a mapping init_args may be given, got {sorted(spec)}")


def instantiate(spec: dict[str, Any], base: type[T], where: str) -> T:
    """The object a spec names, checked to be a ``base``; ValueError with one line otherwise."""
    check_spec(spec, where)
    module_name, _, class_name = spec["class_path"].rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"{where}: cannot import {spec['class_path']} ({error})") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"{where}: {spec['class_path']} is not a {base.__module__}.{base.__name__}")
    try:
        return cls(**spec.get("init_args", {}))
    except TypeError as error:
        raise ValueError(f"{where}: {spec['class_path']}: {error}") from None


def callback_states(callbacks: list[Any]) -> dict[str, Any]:
    """What a checkpoint keeps of the user callbacks: their ``state_dict`` by ``state_key``."""
    return {callback.state_key: callback.state_dict() for callback in callbacks}


def load_callback_states(callbacks: list[Any], states: dict[str, Any]) -> None:
    for callback in callbacks:
        if callback.state_key in states:
            callback.load_state_dict(states[callback.state_key])
