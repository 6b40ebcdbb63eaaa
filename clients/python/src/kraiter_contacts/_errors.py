"""One exception type for every failed call, carrying the SDK error code."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

#: The `ErrorInfo.domain` of this service's errors.
DOMAIN = "contacts.kraiter.dev"


class KraiterError(Exception):
    """A failed call.

    ``code`` is the SDK error code (``ErrorInfo.reason``: ``"CONFLICT"``,
    ``"VALIDATION_ERROR"``, ``"NOT_FOUND"``, ...), or ``None`` when the status does not
    come from this service (a proxy, the client's own deadline); a broken connection
    counts as ``"UNAVAILABLE"``. ``grpc_code`` is the gRPC status code, ``field`` the
    request field a validation error names (``BadRequest``), ``retry_after`` the delay
    in seconds the server asks for (``RetryInfo``).
    """

    def __init__(
        self,
        code: str | None,
        grpc_code: grpc.StatusCode,
        message: str,
        *,
        field: str | None = None,
        violations: tuple[FieldViolation, ...] = (),
        retry_after: float | None = None,
        metadata: dict[str, str] | None = None,
    ):
        super().__init__(f"{code or grpc_code.name}: {message}")
        self.code = code
        self.grpc_code = grpc_code
        self.message = message
        self.field = field
        self.violations = violations
        self.retry_after = retry_after
        self.metadata = metadata or {}

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> KraiterError:
        """Decodes the `grpc-status-details-bin` trailer of a failed call."""
        grpc_code = err.code() if callable(getattr(err, "code", None)) else None
        grpc_code = grpc_code or grpc.StatusCode.UNKNOWN
        message = (err.details() if callable(getattr(err, "details", None)) else None) or ""
        code, field, violations, retry_after, metadata = None, None, (), None, {}
        for detail in _details(err):
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                if info.domain == DOMAIN:
                    code, metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations = tuple(
                    FieldViolation(v.field, v.description) for v in bad.field_violations
                )
                field = violations[0].field if violations else None
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_after = retry.retry_delay.ToTimedelta().total_seconds()
        if code is None and grpc_code == grpc.StatusCode.UNAVAILABLE:
            code = "UNAVAILABLE"
        return cls(
            code,
            grpc_code,
            message,
            field=field,
            violations=violations,
            retry_after=retry_after,
            metadata=metadata,
        )

    @property
    def retryable(self) -> bool:
        """Whether the same call may succeed if tried again (after ``retry_after``)."""
        return retry_wait(self) is not None


@dataclass(frozen=True)
class FieldViolation:
    """One entry of a validation error's ``BadRequest``."""

    field: str
    description: str


def _details(err: grpc.RpcError):
    try:
        status = rpc_status.from_call(err)
    except (ValueError, AttributeError):
        # A trailer that disagrees with the call's status is not this service's.
        return []
    return status.details if status is not None else []


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently reads and lists are tried again.

    ``max_retries`` attempts after a failure in a row (a page received resets the
    count), waiting ``initial_backoff`` seconds before the first, doubling up to
    ``max_backoff``. Writes are never retried (a lost answer to a create would make the
    retry a CONFLICT); give them a ``request_id`` and retry them yourself.
    """

    max_retries: int = 5
    initial_backoff: float = 0.05
    max_backoff: float = 2.0

    @classmethod
    def none(cls) -> RetryPolicy:
        return cls(max_retries=0)

    def backoff(self, attempt: int) -> float:
        return min(self.initial_backoff * 2 ** max(attempt - 1, 0), self.max_backoff)


def retry_wait(err: KraiterError) -> float | None:
    """The least wait before trying a failed call again, or None when it would fail
    again: UNAVAILABLE (the server's or a broken connection) at once; RATE_LIMITED
    after the server's ``RetryInfo`` delay, and only when it gave one."""
    if err.grpc_code == grpc.StatusCode.UNAVAILABLE:
        return 0.0
    if err.code == "RATE_LIMITED" and err.retry_after is not None:
        return err.retry_after
    return None


def retry_after(err: KraiterError, attempt: int, policy: RetryPolicy) -> float | None:
    """The wait before retry number ``attempt`` (1-based), or None to give up: not
    retryable, out of attempts, or the server asks for longer than ``max_backoff``."""
    if attempt > policy.max_retries:
        return None
    least = retry_wait(err)
    if least is None or least > policy.max_backoff:
        return None
    return max(least, policy.backoff(attempt))
