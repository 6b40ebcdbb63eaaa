// One error class for every failed call, carrying the SDK error code.

import { Metadata, status as GrpcStatus, type ServiceError } from "@grpc/grpc-js";

import { BadRequest, ErrorInfo, RetryInfo } from "./gen/google/rpc/error_details";
import { Status } from "./gen/google/rpc/status";

/** The `ErrorInfo.domain` of this service's errors. */
export const DOMAIN = "contacts.kraiter.dev";

const TYPE_PREFIX = "type.googleapis.com/";

/** One entry of a validation error's `BadRequest`. */
export interface FieldViolation {
  field: string;
  description: string;
}

/**
 * A failed call. `code` is the SDK error code (`ErrorInfo.reason`: `"CONFLICT"`,
 * `"VALIDATION_ERROR"`, `"NOT_FOUND"`, ...), or `null` when the status does not come
 * from this service (a proxy, the client's own deadline); a broken connection counts
 * as `"UNAVAILABLE"`. `grpcCode` is the gRPC status code, `field` the request field a
 * validation error names (`BadRequest`), `retryAfterMs` the delay the server asks for
 * (`RetryInfo`).
 */
export class KraiterError extends Error {
  readonly code: string | null;
  readonly grpcCode: GrpcStatus;
  readonly details: string;
  readonly field: string | null;
  readonly violations: FieldViolation[];
  readonly retryAfterMs: number | null;
  readonly errorMetadata: Record<string, string>;

  constructor(init: {
    code: string | null;
    grpcCode: GrpcStatus;
    details: string;
    field?: string | null;
    violations?: FieldViolation[];
    retryAfterMs?: number | null;
    errorMetadata?: Record<string, string>;
  }) {
    super(`${init.code ?? GrpcStatus[init.grpcCode]}: ${init.details}`);
    this.name = "KraiterError";
    this.code = init.code;
    this.grpcCode = init.grpcCode;
    this.details = init.details;
    this.field = init.field ?? null;
    this.violations = init.violations ?? [];
    this.retryAfterMs = init.retryAfterMs ?? null;
    this.errorMetadata = init.errorMetadata ?? {};
  }

  /** Decodes the `grpc-status-details-bin` trailer of a failed call. */
  static fromServiceError(err: Partial<ServiceError>): KraiterError {
    const grpcCode = typeof err.code === "number" ? err.code : GrpcStatus.UNKNOWN;
    let code: string | null = null;
    let violations: FieldViolation[] = [];
    let retryAfterMs: number | null = null;
    let errorMetadata: Record<string, string> = {};
    for (const detail of statusDetails(err.metadata)) {
      const type = detail.typeUrl.startsWith(TYPE_PREFIX) ? detail.typeUrl.slice(TYPE_PREFIX.length) : "";
      if (type === "google.rpc.ErrorInfo") {
        const info = ErrorInfo.decode(detail.value);
        if (info.domain === DOMAIN) {
          code = info.reason;
          errorMetadata = info.metadata;
        }
      } else if (type === "google.rpc.BadRequest") {
        violations = BadRequest.decode(detail.value).fieldViolations.map((v) => ({
          field: v.field,
          description: v.description,
        }));
      } else if (type === "google.rpc.RetryInfo") {
        const delay = RetryInfo.decode(detail.value).retryDelay;
        if (delay) retryAfterMs = delay.seconds * 1000 + delay.nanos / 1e6;
      }
    }
    if (code === null && grpcCode === GrpcStatus.UNAVAILABLE) code = "UNAVAILABLE";
    return new KraiterError({
      code,
      grpcCode,
      details: err.details ?? err.message ?? "",
      field: violations[0]?.field ?? null,
      violations,
      retryAfterMs,
      errorMetadata,
    });
  }

  /** Whether the same call may succeed if tried again (after `retryAfterMs`). */
  get retryable(): boolean {
    return retryWait(this) !== null;
  }
}

function statusDetails(metadata: Metadata | undefined) {
  const raw = metadata?.get("grpc-status-details-bin") ?? [];
  if (raw.length !== 1 || typeof raw[0] === "string") return [];
  try {
    return Status.decode(raw[0]).details;
  } catch {
    return [];
  }
}

/**
 * How often and how patiently reads and lists are tried again: `maxRetries` attempts
 * after a failure in a row (a page received resets the count), waiting
 * `initialBackoffMs` before the first, doubling up to `maxBackoffMs`. Writes are never
 * retried (a lost answer to a create would make the retry a CONFLICT); give them a
 * `requestId` and retry them yourself.
 */
export interface RetryPolicy {
  maxRetries: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { maxRetries: 5, initialBackoffMs: 50, maxBackoffMs: 2000 };
export const NO_RETRY: RetryPolicy = { ...DEFAULT_RETRY, maxRetries: 0 };

/**
 * The least wait before trying a failed call again, or null when it would fail again:
 * UNAVAILABLE (the server's or a broken connection) at once; RATE_LIMITED after the
 * server's `RetryInfo` delay, and only when it gave one.
 */
export function retryWait(err: KraiterError): number | null {
  if (err.grpcCode === GrpcStatus.UNAVAILABLE) return 0;
  if (err.code === "RATE_LIMITED" && err.retryAfterMs !== null) return err.retryAfterMs;
  return null;
}

/**
 * The wait before retry number `attempt` (1-based), or null to give up: not
 * retryable, out of attempts, or the server asks for longer than `maxBackoffMs`.
 */
export function retryAfter(err: KraiterError, attempt: number, policy: RetryPolicy): number | null {
  if (attempt > policy.maxRetries) return null;
  const least = retryWait(err);
  if (least === null || least > policy.maxBackoffMs) return null;
  const backoff = Math.min(policy.initialBackoffMs * 2 ** Math.max(attempt - 1, 0), policy.maxBackoffMs);
  return Math.max(least, backoff);
}

/** A failure as a KraiterError (a call's error, or anything thrown on the way). */
export function toKraiterError(err: unknown): KraiterError {
  if (err instanceof KraiterError) return err;
  if (err && typeof err === "object" && "code" in err) return KraiterError.fromServiceError(err as ServiceError);
  return new KraiterError({ code: null, grpcCode: GrpcStatus.UNKNOWN, details: String(err) });
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
