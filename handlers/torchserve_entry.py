"""TorchServe entry point: `handle(None, context)` loads the model once, then one call per batch."""

from __future__ import annotations

from typing import Any

from .service import ClassifierService

_service: ClassifierService | None = None


def handle(data: list[Any] | None, context: Any) -> list[str | bytes] | None:
    global _service
    if data is None:
        _service = ClassifierService.from_context(context)
        return None
    if _service is None:
        _service = ClassifierService.from_context(context)
    return _service.handle(data, context)
