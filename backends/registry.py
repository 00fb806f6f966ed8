"""Backend registry: a lazy table of engines and a capability check that says why.

Backend modules are imported only when asked for, and a backend module never imports its
engine at import time, so ``supports`` answers even where the engine is not installed.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from backends.base import Backend
from backends.errors import ConfigError, field_problems
from backends.types import Device, ModelSpec

# name -> "module:Class". Order is the preference order for ``backend: auto``.
BACKENDS: Mapping[str, str] = {
    "llama_cpp": "backends.llama_cpp.backend:LlamaCppBackend",
    "vllm": "backends.vllm.backend:VllmBackend",
}


def load_backend_class(name: str) -> type[Backend]:
    try:
        target = BACKENDS[name]
    except KeyError:
        known = ", ".join(["auto", *BACKENDS])
        raise ConfigError(f"unknown backend {name!r}; choose one of: {known}") from None
    module_name, class_name = target.split(":")
    cls: type[Backend] = getattr(importlib.import_module(module_name), class_name)
    return cls


@dataclass(frozen=True, slots=True)
class Selection:
    backend: type[Backend]
    reasons: tuple[str, ...]  # why the backends tried before it were passed over


def select_backend(spec: ModelSpec, device: Device) -> Selection:
    """Pick the backend for ``spec``; raise ``ConfigError`` listing every reason if none fits."""
    names = list(BACKENDS) if spec.backend == "auto" else [spec.backend]
    reasons: list[str] = []
    for name in names:
        cls = load_backend_class(name)
        support = cls.supports(spec, device)
        if support.ok:
            return Selection(cls, tuple(reasons))
        reasons.append(f"{name}: {support.reason}")
    detail = "; ".join(reasons)
    raise ConfigError(
        f"no backend can serve model {spec.id!r} ({spec.format.value} at {spec.path.name}) "
        f"on this {device.kind}: {detail}"
    )


def create_backend(spec: ModelSpec, device: Device) -> Backend:
    """Select a backend and validate the model's options against it (typos fail here)."""
    cls = select_backend(spec, device).backend
    try:
        options = cls.parse_options(spec.options)
    except ValidationError as exc:
        raise ConfigError(f"model {spec.id!r} ({cls.name}): {field_problems(exc, prefix='options.')}") from None
    return cls(spec, options)
