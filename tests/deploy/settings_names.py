"""Whether a MEMOS_* environment variable names a real setting of the daemon."""

from __future__ import annotations

from pydantic import BaseModel

from memos.config import Settings

# Read by memos.config itself rather than through a Settings field.
OUTSIDE_SETTINGS = {"MEMOS_CONFIG"}


def is_setting(name: str) -> bool:
    if name in OUTSIDE_SETTINGS:
        return True
    if not name.startswith("MEMOS_"):
        return False
    model: type[BaseModel] | None = Settings
    for part in name.removeprefix("MEMOS_").lower().split("__"):
        if model is None or part not in model.model_fields:
            return False
        annotation = model.model_fields[part].annotation
        model = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )
    return True
