// ParleyError: every failure the SDK reports, from the server (an `error`
// frame or a REST error body) or from the SDK itself (timeouts, a closed
// connection, a server that cannot be reached).

import type { ErrorCode } from './protocol.js';

/** Codes the SDK itself produces, next to the server's {@link ErrorCode}s. */
export type SDKErrorCode =
  | 'timeout' // no reply (or no `connected` frame) in time
  | 'disconnected' // the socket closed before the reply, or the server closed us with 4003
  | 'unavailable' // the server could not be reached
  | 'conflict'; // an optimistic batch no longer applies after a rebase

/** A server code, an SDK code, or (REST) any other code a server sent. */
export type ParleyErrorCode = ErrorCode | SDKErrorCode | (string & {});

export class ParleyError extends Error {
  /** A machine-readable code: the server's `code` / REST `error`, or an SDK code. */
  readonly code: ParleyErrorCode;
  /** The HTTP status, for REST errors and the /api/me probe. */
  readonly status?: number;

  constructor(code: ParleyErrorCode, message: string, status?: number) {
    super(message);
    this.name = 'ParleyError';
    this.code = code;
    if (status !== undefined) this.status = status;
  }
}

/** asParleyError wraps anything thrown into a ParleyError (code `fallback`). */
export function asParleyError(err: unknown, fallback: ParleyErrorCode = 'internal'): ParleyError {
  if (err instanceof ParleyError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new ParleyError(fallback, message);
}
