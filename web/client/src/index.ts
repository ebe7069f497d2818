// @parley/client: the Parley SDK. See API.md for the contract and
// README.md for a quick start.

export { ParleyClient, httpBaseOf, parseEnvelope } from './client.js';
export type {
  ClientEvents,
  ConnectionState,
  DisconnectedEvent,
  FetchLike,
  ParleyClientOptions,
  RequestOptions,
  StateChange,
  WebSocketConstructor,
  WebSocketLike,
} from './client.js';
export { Room } from './room.js';
export type { JoinOptions, PatchOptions, RoomEvents, RoomState, StorageEvent } from './room.js';
export { ParleyError } from './errors.js';
export type { ParleyErrorCode, SDKErrorCode } from './errors.js';
export { ParleyAPI } from './rest.js';
export type { MessageSender, ParleyAPIOptions, SendOptions } from './rest.js';
export { Typing, TYPING_EXPIRY_MS, TYPING_RENEW_MS } from './typing.js';
export { applyPatch, applyPatchWithInverse, formatPointer, jsonEqual, parsePointer } from './jsonpatch.js';
export { backoffDelay } from './backoff.js';
export { Emitter } from './emitter.js';
export type { Handler } from './emitter.js';
export * from './protocol.js';
