"""Every error the gateway can return to a client, as one class tree.

Each class carries its HTTP status, its OpenAI error ``type`` and default ``code``; one handler in
``app.py`` renders any of them as the OpenAI envelope ``{"error": {message, type, param, code}}``.
Native routes render the same objects in their provider's own shape (see ``providers``).

    GatewayError                      500 api_error
    ├── InvalidRequest                400 invalid_request_error   (param names the field)
    │   └── UnsupportedParameter      400 invalid_request_error   unsupported_parameter
    ├── AuthenticationFailed          401 authentication_error    invalid_api_key
    │   └── KeyExpired                401 authentication_error    key_expired
    ├── PermissionDenied              403 permission_error        model_not_allowed
    ├── ModelNotFound                 404 invalid_request_error   model_not_found
    ├── RouteNotFound                 404 invalid_request_error   not_found
    ├── MethodNotAllowed              405 invalid_request_error   method_not_allowed
    ├── PayloadTooLarge               413 invalid_request_error   payload_too_large
    ├── RateLimited                   429 rate_limit_error        rate_limit_exceeded
    ├── BudgetExceeded                429 insufficient_quota      budget_exceeded
    ├── NoProviders                   503 service_unavailable     no_providers_configured
    ├── UpstreamError                 (upstream's status)         (upstream's type and code)
    │   ├── UpstreamAuthFailed        502 upstream_error          upstream_auth_failed
    │   └── UpstreamOverloaded        503 overloaded_error        upstream_overloaded
    ├── UpstreamUnreachable           502 upstream_error          upstream_unreachable
    └── UpstreamTimeout               504 timeout_error           upstream_timeout
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from gateway.redaction import redact, redact_bytes


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorEnvelope(msgspec.Struct, omit_defaults=True):
    error: ErrorDetail
    metadata: dict[str, Any] | None = None  # the routing trail, on chat errors


_encoder = msgspec.json.Encoder()


class GatewayError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        provider: str | None = None,
    ) -> None:
        # Cut here, once, so that every rendering (OpenAI envelope, Messages, native shapes, stream error
        # events, log lines) is clean: provider errors often quote the key they refused.
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = headers or {}
        self.provider = provider
        self.metadata: dict[str, Any] | None = None

    @property
    def status_code(self) -> int:
        return self.status

    @property
    def error_type(self) -> str:
        return self.type

    def detail(self) -> ErrorDetail:
        return ErrorDetail(message=self.message, type=self.error_type, param=self.param, code=self.code)

    def body(self) -> bytes:
        """The OpenAI error envelope, encoded; the routing trail in ``metadata`` may quote providers too."""
        body = _encoder.encode(ErrorEnvelope(error=self.detail(), metadata=self.metadata))
        return body if self.metadata is None else redact_bytes(body)


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    default_code = "invalid_request"


class UnsupportedParameter(InvalidRequest):
    default_code = "unsupported_parameter"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class KeyExpired(AuthenticationFailed):
    default_code = "key_expired"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    default_code = "model_not_allowed"


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    default_code = "model_not_found"


class RouteNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    default_code = "not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    default_code = "method_not_allowed"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    default_code = "payload_too_large"


class RequestTimeout(GatewayError):
    """The request body did not arrive in time (server.body_timeout_s, server.min_body_rate_kbps)."""

    status = 408
    type = "invalid_request_error"
    default_code = "request_timeout"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class BudgetExceeded(GatewayError):
    """Refused like OpenAI refuses an exhausted quota, so SDKs raise their usual RateLimitError."""

    status = 429
    type = "insufficient_quota"
    default_code = "budget_exceeded"


class StateUnavailable(GatewayError):
    """[state] backend = "redis" could not be reached, so a key with limits cannot be counted: fail closed."""

    status = 503
    type = "service_unavailable"
    default_code = "state_unavailable"


class NoProviders(GatewayError):
    status = 503
    type = "service_unavailable"
    default_code = "no_providers_configured"


class UpstreamError(GatewayError):
    """An error answer from a provider, kept with its status, type, code and message."""

    type = "upstream_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error_type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code, headers=headers, provider=provider)
        self._status = status
        self._error_type = error_type or _type_for_status(status)

    @property
    def status_code(self) -> int:
        return self._status

    @property
    def error_type(self) -> str:
        return self._error_type


class UpstreamAuthFailed(UpstreamError):
    """The provider refused the gateway's own key: the client's key was fine, so this is a 502."""

    status = 502
    default_code = "upstream_auth_failed"

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message, status=502, error_type=self.type, provider=provider)


class UpstreamOverloaded(UpstreamError):
    """Anthropic's 529 (and similar): the provider is overloaded, retry later."""

    status = 503
    type = "overloaded_error"
    default_code = "upstream_overloaded"

    def __init__(
        self, message: str, *, provider: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, status=503, error_type=self.type, provider=provider, headers=headers)


class UpstreamUnreachable(GatewayError):
    status = 502
    type = "upstream_error"
    default_code = "upstream_unreachable"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "timeout_error"
    default_code = "upstream_timeout"


_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def _type_for_status(status: int) -> str:
    return _TYPE_BY_STATUS.get(status, "api_error" if status >= 500 else "invalid_request_error")


def upstream_error(
    provider: str,
    status: int,
    message: str,
    *,
    error_type: str | None = None,
    param: str | None = None,
    code: str | None = None,
    retry_after: str | None = None,
) -> GatewayError:
    """Map a provider's error answer to what the client sees.

    401/403 mean the provider refused *our* key, so the client gets a 502; 529 (Anthropic "overloaded")
    becomes 503; everything else keeps its status. ``retry-after`` is kept so clients back off correctly.
    """
    text = f"[{provider}] {message}"
    headers = {"retry-after": retry_after} if retry_after else None
    if status in (401, 403):
        return UpstreamAuthFailed(
            f"{text} (the gateway's key for provider '{provider}' was rejected)", provider=provider
        )
    if status == 529:
        return UpstreamOverloaded(text, provider=provider, headers=headers)
    return UpstreamError(
        text,
        status=status,
        error_type=error_type,
        param=param,
        code=code,
        headers=headers,
        provider=provider,
    )
