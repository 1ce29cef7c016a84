"""REST error responses: an exception carrying the code, description and HTTP status."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, code: str, description: str, status: int = 400, **extra):
        super().__init__(f"{code or '<empty>'}: {description}")
        self.code = code
        self.description = description
        self.status = status
        self.extra = extra

    def body(self) -> dict:
        # Error bodies carry no "time" key (the portal's source, modules/rest/classes/general/rest.php outputError).
        return {"error": self.code, "error_description": self.description, **self.extra}


def crm_error(description: str) -> ApiError:
    """Legacy crm.* business errors: empty code, HTTP 400, the reason only in the text."""
    return ApiError("", description, 400)


def method_not_found(status: int = 404) -> ApiError:
    return ApiError("ERROR_METHOD_NOT_FOUND", "Method not found!", status)


def invalid_credentials(status: int = 401) -> ApiError:
    return ApiError("INVALID_CREDENTIALS", "Invalid request credentials", status)


def no_auth() -> ApiError:
    return ApiError("NO_AUTH_FOUND", "Wrong authorization data", 401)


def query_limit() -> ApiError:
    return ApiError("QUERY_LIMIT_EXCEEDED", "Too many requests", 503)


def operation_time_limit() -> ApiError:
    return ApiError("OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.", 429)


def internal_error() -> ApiError:
    return ApiError("INTERNAL_SERVER_ERROR", "Internal server error", 500)


def batch_length_exceeded() -> ApiError:
    return ApiError("ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded", 400)


def batch_method_not_allowed() -> ApiError:
    return ApiError("ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage", 405)
