"""HubSpot's error body (contract §1.9), raised anywhere in the stand-in and rendered by the app."""

from __future__ import annotations

import uuid


class ApiError(Exception):
    def __init__(self, status: int, category: str, message: str, *, errors: list[dict] | None = None,
                 context: dict | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status = status
        self.category = category
        self.message = message
        self.errors = errors
        self.context = context
        self.extra = extra or {}

    def body(self) -> dict:
        body = {"status": "error", "message": self.message, "correlationId": str(uuid.uuid4()),
                "category": self.category, **self.extra}
        if self.errors:
            body["errors"] = self.errors
        if self.context:
            body["context"] = self.context
        return body


def validation_error(message: str, *, field: str | None = None) -> ApiError:
    errors = [{"message": message, "in": field}] if field else None
    return ApiError(400, "VALIDATION_ERROR", message, errors=errors)


def not_found(object_type: str, record_id: str) -> ApiError:
    return ApiError(404, "OBJECT_NOT_FOUND", f"Object not found. objectId are usually numeric. ({object_type}/{record_id})",
                    context={"id": [record_id]})
