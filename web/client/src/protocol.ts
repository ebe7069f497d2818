// The Parley wire, typed (../../shared/PROTOCOL.md v1.1, docs/protocol.md).
//
// ClientMessages maps each client → server message type to its `data`,
// ServerMessages each server → client type to its `data` (`undefined` where
// the frame has none). REST bodies follow. Wire names are snake_case, except
// inside mediasoup objects (rtp_capabilities, rtp_parameters, transports),
// which keep mediasoup-client's camelCase.
//
// These types are checked against golden JSON captured from the real server
// (internal/protocol/testdata/wire, written by TestWireGolden) by
// web/client/test/wire-types.mjs: a field the server sends that is missing
// here, or a required field here that the server does not send, fails it.
// Optional (`?`) fields are ones the server omits in some frames.

// ---- JSON ---------------------------------------------------------------

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

/** One RFC 6902 operation. */
export type JsonPatchOp =
  | { op: 'add' | 'replace' | 'test'; path: string; value: JsonValue }
  | { op: 'remove'; path: string }
  | { op: 'move' | 'copy'; from: string; path: string };

// ---- envelope, codes ------------------------------------------------------

/** One frame: `{type, id?, data?}`. */
export interface Envelope<T extends string = string, D = unknown> {
  type: T;
  id?: string;
  data?: D;
}

/** A frame of type K of a message map M (ServerMessages or ClientMessages), with its typed data. */
export type TypedEnvelope<M, K extends keyof M & string = keyof M & string> = {
  [P in K]: [M[P]] extends [undefined] ? { type: P; id?: string; data?: undefined } : { type: P; id?: string; data: M[P] };
}[K];

/** A server frame of type K, with its typed data. */
export type ServerEnvelope<K extends keyof ServerMessages = keyof ServerMessages> = TypedEnvelope<ServerMessages, K>;

/** A client frame of type K, with its typed data. */
export type ClientEnvelope<K extends keyof ClientMessages = keyof ClientMessages> = TypedEnvelope<ClientMessages, K>;

/** Error codes of `error` frames and REST error bodies. */
export type ErrorCode =
  | 'bad_request'
  | 'test_failed'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'version_conflict'
  | 'too_large'
  | 'rate_limited'
  | 'conflict'
  | 'internal'
  | 'unsupported'
  | 'unavailable'; // REST only: GET /ws while draining or at --max-connections

/** WebSocket close codes the server sends (docs/protocol.md §1). */
export type CloseCode =
  | 1000 // normal
  | 1001 // server shutting down: reconnect with backoff
  | 1002 // RFC 6455 framing violated
  | 1011 // internal error while serving this connection
  | 4000 // heartbeat timeout
  | 4001 // token expired or revoked: new token, then reconnect
  | 4003 // disconnected by the server API: do not reconnect
  | 4008 // slow consumer
  | 4009 // message too big
  | 4029 // rate limited
  | 4400; // repeated protocol violations

/** A user's status (`presence:update`); the SDK calls it "status". */
export type PresenceStatus = 'online' | 'idle' | 'dnd' | 'offline' | 'invisible';

export type MediaKind = 'audio' | 'video';

// ---- rooms ------------------------------------------------------------------

/** A client in a live room. `client_id` is that client's connection_id. */
export interface Member {
  client_id: string;
  user_id: string;
  name?: string;
  presence: JsonObject;
  joined_at: string;
}

/** One stored storage batch, as served for catch-up. */
export interface StorageUpdate {
  version: number;
  client_id: string;
  ops: JsonPatchOp[];
}

/** `room:state` storage: the whole document, or (after `since_version`) the missed batches. */
export type RoomStateStorage =
  | { version: number; data: JsonObject; updates?: never }
  | { version: number; updates: StorageUpdate[]; data?: never };

export interface RoomState {
  room_id: string;
  client_id: string;
  member_count: number;
  members: Member[];
  /** v1.1 large rooms: the cursor for `room:members` when the list is paged. */
  members_next?: string;
  storage: RoomStateStorage;
}

// ---- mediasoup shapes (camelCase, as mediasoup-client takes them) ----------

export interface RtcpFeedback {
  type: string;
  parameter?: string;
}

export interface RtpCodecCapability {
  kind: MediaKind;
  mimeType: string;
  preferredPayloadType?: number;
  clockRate: number;
  channels?: number;
  parameters?: { [key: string]: string | number };
  rtcpFeedback?: RtcpFeedback[];
}

export interface RtpHeaderExtension {
  kind: MediaKind;
  uri: string;
  preferredId: number;
  preferredEncrypt?: boolean;
  direction?: 'sendrecv' | 'sendonly' | 'recvonly' | 'inactive';
}

export interface RtpCapabilities {
  codecs?: RtpCodecCapability[];
  headerExtensions?: RtpHeaderExtension[];
}

export interface RtpCodecParameters {
  mimeType: string;
  payloadType: number;
  clockRate: number;
  channels?: number;
  parameters?: { [key: string]: string | number };
  rtcpFeedback?: RtcpFeedback[];
}

export interface RtpHeaderExtensionParameters {
  uri: string;
  id: number;
  encrypt?: boolean;
  parameters?: { [key: string]: string | number };
}

export interface RtpEncodingParameters {
  ssrc?: number;
  rid?: string;
  codecPayloadType?: number;
  rtx?: { ssrc: number };
  dtx?: boolean;
  scalabilityMode?: string;
  scaleResolutionDownBy?: number;
  maxBitrate?: number;
  maxFramerate?: number;
  adaptivePtime?: boolean;
  priority?: string;
  networkPriority?: string;
  active?: boolean;
}

export interface RtcpParameters {
  cname?: string;
  reducedSize?: boolean;
  mux?: boolean;
}

export interface RtpParameters {
  mid?: string;
  codecs: RtpCodecParameters[];
  headerExtensions?: RtpHeaderExtensionParameters[];
  encodings?: RtpEncodingParameters[];
  rtcp?: RtcpParameters;
}

export interface IceParameters {
  usernameFragment: string;
  password: string;
  iceLite?: boolean;
}

export interface IceCandidate {
  foundation: string;
  priority: number;
  /** mediasoup's current name of the address. */
  address: string;
  /** mediasoup's older name of the same address; the server sends both. */
  ip: string;
  protocol: 'udp' | 'tcp';
  port: number;
  type: 'host' | 'srflx' | 'prflx' | 'relay';
  tcpType?: 'active' | 'passive' | 'so';
}

export interface DtlsFingerprint {
  algorithm: string;
  value: string;
}

export interface DtlsParameters {
  role?: 'auto' | 'client' | 'server';
  fingerprints: DtlsFingerprint[];
}

export interface SctpParameters {
  port: number;
  OS: number;
  MIS: number;
  maxMessageSize: number;
}

export interface SctpStreamParameters {
  streamId?: number;
  ordered?: boolean;
  maxPacketLifeTime?: number;
  maxRetransmits?: number;
}

/** `device.createSendTransport(...)` / `createRecvTransport(...)` take it as it is. */
export interface TransportOptions {
  id: string;
  iceParameters: IceParameters;
  iceCandidates: IceCandidate[];
  dtlsParameters: DtlsParameters;
  sctpParameters?: SctpParameters;
}

/** An RTCIceServer. */
export interface IceServer {
  urls: string[];
  username?: string;
  credential?: string;
}

// ---- client → server ----------------------------------------------------------

export interface ClientMessages {
  ping: undefined;

  'room:join': { room_id: string; presence?: JsonObject; since_version?: number };
  'room:leave': { room_id: string };
  /** Shallow merge; a key set to null is removed. */
  'room:update_presence': { room_id: string; presence: JsonObject };
  'room:update_storage': { room_id: string; ops: JsonPatchOp[]; base_version?: number };
  'room:broadcast': { room_id: string; event: JsonValue };
  /** v1.1 large rooms (not accepted yet: issue 15). */
  'room:members': { room_id: string; after?: string; limit?: number };

  'typing:start': { room_id: string };
  'typing:stop': { room_id: string };
  /** Sets the user's status. */
  'presence:update': { presence: PresenceStatus };

  'media:join': { room_id: string };
  'media:connect_transport': { room_id: string; transport_id: string; dtls_parameters: DtlsParameters };
  'media:produce': {
    room_id: string;
    transport_id: string;
    kind: MediaKind;
    rtp_parameters: RtpParameters;
    source?: string;
  };
  'media:consume': { room_id: string; producer_id: string; rtp_capabilities: RtpCapabilities; paused?: boolean };
  'media:producer_close': { room_id: string; producer_id: string };
  'media:leave': { room_id: string };
  // v1.1, answered `unsupported` until issue 12:
  'media:producer_pause': { room_id: string; producer_id: string };
  'media:producer_resume': { room_id: string; producer_id: string };
  'media:consumer_pause': { room_id: string; consumer_id: string };
  'media:consumer_resume': { room_id: string; consumer_id: string };
  'media:set_preferred_layers': { room_id: string; consumer_id: string; spatial_layer: number; temporal_layer?: number };
  'media:restart_ice': { room_id: string; transport_id: string };
  'media:get_stats': { room_id: string; transport_id?: string; producer_id?: string; consumer_id?: string };
  'media:produce_data': {
    room_id: string;
    transport_id: string;
    sctp_stream_parameters: SctpStreamParameters;
    label?: string;
    protocol?: string;
  };
  'media:consume_data': { room_id: string; data_producer_id: string };
}

// ---- server → client ----------------------------------------------------------

export interface ServerMessages {
  connected: { user_id: string; connection_id: string; heartbeat_interval_ms: number; server_time: string };
  error: { code: ErrorCode; message: string };
  ack: undefined;
  pong: undefined;

  'room:state': RoomState;
  'room:joined': { room_id: string; client_id: string; user_id: string; name?: string; presence: JsonObject };
  'room:left': { room_id: string; client_id: string; user_id: string };
  /** `presence` is the whole merged object. */
  'room:presence_updated': { room_id: string; client_id: string; user_id: string; presence: JsonObject; timestamp: string };
  'room:storage_updated': { room_id: string; version: number; client_id: string; ops: JsonPatchOp[] };
  /** client_id and user_id are null for a server API broadcast (v1.1). */
  'room:event': { room_id: string; client_id: string | null; user_id: string | null; event: JsonValue };
  /** v1.1 large rooms (not sent yet: issue 15). */
  'room:members_page': { room_id: string; members: Member[]; next_after: string | null };
  'room:members_changed': { room_id: string; joined: Member[]; left: { client_id: string; user_id: string }[] };

  'room:call_started': { room_id: string; started_by: string };
  'room:call_updated': { room_id: string; participant_count: number };
  'room:call_ended': { room_id: string };

  'typing:start': { room_id: string; user_id: string };
  'typing:stop': { room_id: string; user_id: string };
  /** Another user's status. */
  'presence:update': { user_id: string; presence: PresenceStatus };
  'message:create': Message;
  'message:update': Message;
  'message:delete': { id: string; room_id: string };

  'media:router_capabilities': { rtp_capabilities: RtpCapabilities };
  'media:transport_created': {
    send_transport: TransportOptions;
    recv_transport: TransportOptions;
    ice_servers: IceServer[];
    force_relay: boolean;
  };
  'media:transport_connected': { transport_id: string };
  'media:produce_result': { id: string };
  'media:new_producer': { producer_id: string; user_id: string; connection_id: string; kind: MediaKind; source: string };
  'media:consumer_created': { id: string; producer_id: string; kind: MediaKind; rtp_parameters: RtpParameters };
  'media:producer_closed': { producer_id: string; user_id: string };
  'media:peer_left': { room_id: string; user_id: string; connection_id: string };
  'media:room_closed': { room_id: string };
  // v1.1, not sent yet (issue 12):
  'media:producer_paused': { producer_id: string; user_id: string };
  'media:producer_resumed': { producer_id: string; user_id: string };
  'media:consumer_layers_changed': { consumer_id: string; spatial_layer: number; temporal_layer: number };
  'media:ice_restarted': { transport_id: string; ice_parameters: IceParameters };
  'media:stats': { items: JsonObject[] };
  'media:produce_data_result': { id: string };
  'media:new_data_producer': {
    data_producer_id: string;
    user_id: string;
    connection_id: string;
    label: string;
    protocol: string;
  };
  'media:data_consumer_created': {
    id: string;
    data_producer_id: string;
    sctp_stream_parameters: SctpStreamParameters;
    label: string;
    protocol: string;
  };
  'media:active_speaker': { room_id: string; producer_id: string; user_id: string; connection_id: string };
}

// ---- REST (/api) ----------------------------------------------------------------

/** Every REST error: `{error, message}`. */
export interface ErrorBody {
  error: ErrorCode;
  message: string;
}

/** A list page. next_before is null at the end (and always, where the list is not paged). */
export interface Page<T> {
  items: T[];
  next_before: string | null;
}

/** GET /api/me; `user` of a TokenPair. username is "" for a user known only from a backend-minted token. */
export interface User {
  id: string;
  username: string;
  display_name: string;
}

/** POST /api/auth/register (201), /login, /refresh. */
export interface TokenPair {
  access_token: string;
  refresh_token: string;
  /** Seconds until the access token expires. */
  expires_in: number;
  user: User;
}

/** POST /api/tokens (API key). */
export interface MintedToken {
  token: string;
  expires_at: string;
}

/** POST /api/rooms (201), GET /api/rooms (Page<RoomInfo>), GET /api/rooms/{id}. */
export interface RoomInfo {
  id: string;
  name: string;
  open: boolean;
  /** "" for a room created with the API key. */
  owner_id: string;
  created_at: string;
  /** GET /api/rooms/{id} only: the member user ids. */
  members?: string[];
}

/** GET /api/rooms/{id}/storage. */
export interface StorageSnapshot {
  version: number;
  data: JsonObject;
}

/** PATCH /api/rooms/{id}/storage. */
export interface StoragePatchResult {
  version: number;
}

/** POST /api/rooms/{id}/messages (201), PATCH …/messages/{mid}, and message:create/update. */
export interface Message {
  id: string;
  room_id: string;
  author_id: string;
  content: string;
  nonce?: string;
  created_at: string;
  updated_at?: string;
}

/** GET /api/presence?user_ids=… (not paged: no next_before). */
export interface PresenceList {
  items: { user_id: string; presence: PresenceStatus }[];
}

/** POST /api/rooms/{id}/call/start. */
export interface CallStarted {
  started: true;
  rtp_capabilities: RtpCapabilities;
}

/** POST /api/rooms/{id}/call/join. */
export interface CallJoined {
  joined: true;
}

/** POST /api/rooms/{id}/call/leave. */
export interface CallLeft {
  left: true;
}

/** POST /api/rooms/{id}/call/end. */
export interface CallEnded {
  ended: true;
}

/** An item of GET /api/rooms/{id}/call/participants (a Page<Participant>). */
export interface Participant {
  connection_id: string;
  user_id: string;
  producers: { id: string; kind: MediaKind; source: string }[];
}
