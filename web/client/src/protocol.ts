// The Parley wire contract, typed: every WebSocket message (client → server
// and server → client) by its type, the envelope, error and close codes, and
// the REST shapes. Source: ../shared/PROTOCOL.md and docs/protocol.md. Field
// names are the wire's own (snake_case, except inside mediasoup objects).
//
// These types are checked against golden JSON captured from the real server
// (internal/protocol/testdata/wire): rename nothing without the server.

// ---------------------------------------------------------------- JSON

export type JsonPrimitive = string | number | boolean | null;
export type JsonValue = JsonPrimitive | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

// ---------------------------------------------------------------- envelope

/** One WebSocket text frame: `{"type", "id"?, "data"?}`. */
export interface Envelope<T extends string = string, D = unknown> {
  type: T;
  /** Set on requests; the one reply to a request carries the same id. */
  id?: string;
  data?: D;
}

/** Error codes of `error` frames and REST error bodies (`{"error": code}`). */
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
  | 'unavailable';

/** WebSocket close codes the server uses (docs/protocol.md §1). */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  ProtocolError: 1002,
  Abnormal: 1006,
  InternalError: 1011,
  HeartbeatMissed: 4000,
  TokenExpired: 4001,
  Disconnected: 4003,
  SlowConsumer: 4008,
  MessageTooBig: 4009,
  RateLimited: 4029,
  ProtocolAbuse: 4400,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

// ---------------------------------------------------------------- shared shapes

/** A client's room presence: any JSON object (≤ 4 KiB by default). */
export type Presence = JsonObject;

/** User status (PROTOCOL §5). */
export type UserStatus = 'online' | 'idle' | 'dnd' | 'offline' | 'invisible';

/** One client (connection) in a room. */
export interface Member {
  client_id: string;
  user_id: string;
  name?: string;
  presence: Presence;
  joined_at: string;
}

export type JsonPatchOp =
  | { op: 'add'; path: string; value: JsonValue }
  | { op: 'remove'; path: string }
  | { op: 'replace'; path: string; value: JsonValue }
  | { op: 'move'; from: string; path: string }
  | { op: 'copy'; from: string; path: string }
  | { op: 'test'; path: string; value: JsonValue };

/** One accepted storage batch, as a catch-up serves it. */
export interface StorageUpdate {
  version: number;
  client_id: string;
  ops: JsonPatchOp[];
}

/** The whole document at a version (room:state, GET …/storage). */
export interface StorageSnapshot {
  version: number;
  data: JsonObject;
}

/** The batches after a join's since_version (room:state with since_version). */
export interface StorageCatchUp {
  version: number;
  updates: StorageUpdate[];
}

/** A chat message. */
export interface Message {
  id: string;
  room_id: string;
  author_id: string;
  content: string;
  nonce?: string;
  created_at: string;
  updated_at?: string;
}

/** mediasoup objects travel in mediasoup-client's own camelCase shapes. */
export type MediasoupObject = { [key: string]: unknown };

export interface IceServer {
  urls: string[];
  username?: string;
  credential?: string;
}

/** A transport as `device.createSendTransport()` takes it. */
export interface TransportInfo {
  id: string;
  iceParameters: MediasoupObject;
  iceCandidates: MediasoupObject[];
  dtlsParameters: MediasoupObject;
  sctpParameters?: MediasoupObject;
}

export type MediaKind = 'audio' | 'video';

/** ICE parameters of a transport (media:ice_restarted), for `transport.restartIce({ iceParameters })`. */
export interface IceParameters {
  usernameFragment: string;
  password: string;
  iceLite: boolean;
}

/** A transport's item of media:stats (mediasoup's WebRtcTransportStat, reduced). */
export interface MediaTransportStats {
  type: 'webrtc-transport';
  transportId: string;
  /** Milliseconds since the Unix epoch. */
  timestamp: number;
  direction: 'send' | 'recv';
  /** The transport's connection state. */
  state: 'new' | 'connecting' | 'connected' | 'disconnected' | 'failed' | 'closed';
  iceRole: 'controlled';
  iceState: 'new' | 'checking' | 'connected' | 'completed' | 'disconnected' | 'failed' | 'closed';
  dtlsState: 'new' | 'connecting' | 'connected' | 'failed' | 'closed';
  /** The selected candidate pair, while connected. */
  iceSelectedTuple?: { localIp: string; localPort: number; remoteIp: string; remotePort: number; protocol: 'udp' | 'tcp' };
  /** The server's ICE ufrag and the client's, of the current ICE generation ('' until the client's first check). */
  iceUsernameFragment: string;
  iceRemoteUsernameFragment: string;
  iceRestarts: number;
  bytesReceived: number;
  bytesSent: number;
  recvBitrate: number;
  sendBitrate: number;
  rtpPacketsReceived: number;
  rtpPacketsSent: number;
  /** How long the transport has been disconnected or failed (0 otherwise). */
  disconnectedForMs: number;
}

/** A producer's ('inbound-rtp') or consumer's ('outbound-rtp') item of media:stats, in mediasoup's shape. */
export interface MediaRtpStreamStats {
  type: 'inbound-rtp' | 'outbound-rtp';
  producerId: string;
  /** outbound-rtp only. */
  consumerId?: string;
  timestamp: number;
  ssrc: number;
  rtxSsrc?: number;
  kind: MediaKind;
  mimeType: string;
  packetCount: number;
  /** RTP payload bytes. */
  byteCount: number;
  /** bits per second over the last second. */
  bitrate: number;
  packetsLost: number;
  /** Of the last interval, in 1/256. */
  fractionLost: number;
  /** RTP timestamp units. */
  jitter: number;
  /** Milliseconds (outbound-rtp, from the receiver's reports; 0 until known). */
  roundTripTime: number;
  /** 0-10. */
  score: number;
  nackCount: number;
  pliCount: number;
  firCount: number;
  packetsRetransmitted: number;
  paused: boolean;
  /** outbound-rtp only. */
  producerPaused?: boolean;
}

export type MediaStatsItem = MediaTransportStats | MediaRtpStreamStats;

// ---------------------------------------------------------------- client → server

export interface ClientMessages {
  ping: undefined;
  'room:join': { room_id: string; presence?: Presence; since_version?: number };
  'room:leave': { room_id: string };
  'room:update_presence': { room_id: string; presence: { [key: string]: JsonValue } };
  'room:update_storage': { room_id: string; ops: JsonPatchOp[]; base_version?: number };
  'room:broadcast': { room_id: string; event: JsonValue };
  /** Large rooms: a page of members after the cursor (members_next / next_after). */
  'room:members': { room_id: string; after?: string; limit?: number };
  'typing:start': { room_id: string };
  'typing:stop': { room_id: string };
  'presence:update': { presence: UserStatus };
  'media:join': { room_id: string };
  'media:connect_transport': { room_id: string; transport_id: string; dtls_parameters: MediasoupObject };
  'media:produce': {
    room_id: string;
    transport_id: string;
    kind: MediaKind;
    rtp_parameters: MediasoupObject;
    source?: string;
  };
  'media:consume': { room_id: string; producer_id: string; rtp_capabilities: MediasoupObject; paused?: boolean };
  'media:producer_close': { room_id: string; producer_id: string };
  'media:leave': { room_id: string };
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
    sctp_stream_parameters: MediasoupObject;
    label?: string;
    protocol?: string;
  };
  'media:consume_data': { room_id: string; data_producer_id: string };
}

export type ClientMessageType = keyof ClientMessages;

// ---------------------------------------------------------------- server → client

export interface ConnectedData {
  user_id: string;
  connection_id: string;
  heartbeat_interval_ms: number;
  server_time: string;
}

export interface ErrorData {
  code: ErrorCode;
  message: string;
}

export interface RoomStateData {
  room_id: string;
  /** This connection's client id in the room. */
  client_id: string;
  /** Clients in the room, the joiner included (may exceed members.length in a large room). */
  member_count: number;
  members: Member[];
  /** Cursor for `room:members` when the list is paged (large rooms, PROTOCOL §3). */
  members_next?: string;
  storage: StorageSnapshot | StorageCatchUp;
}

export interface ServerMessages {
  connected: ConnectedData;
  error: ErrorData;
  ack: undefined;
  pong: undefined;
  'room:state': RoomStateData;
  'room:joined': { room_id: string; client_id: string; user_id: string; name?: string; presence: Presence };
  'room:left': { room_id: string; client_id: string; user_id: string };
  'room:presence_updated': { room_id: string; client_id: string; user_id: string; presence: Presence; timestamp: string };
  'room:storage_updated': { room_id: string; version: number; client_id: string; ops: JsonPatchOp[] };
  /** client_id and user_id are null for an event sent through the server API. */
  'room:event': { room_id: string; client_id: string | null; user_id: string | null; event: JsonValue };
  'room:members_page': { room_id: string; members: Member[]; next_after: string | null };
  /** Large rooms: net joins and leaves since the last batch; upsert joined, delete left, take member_count. */
  'room:members_changed': {
    room_id: string;
    joined: Member[];
    left: { client_id: string; user_id: string }[];
    member_count: number;
  };
  /** Large rooms with presence coalescing: the latest presence of each client that changed it. */
  'room:presence_batch': {
    room_id: string;
    updates: { client_id: string; user_id: string; presence: Presence; timestamp: string }[];
  };
  'room:call_started': { room_id: string; started_by: string };
  'room:call_updated': { room_id: string; participant_count: number };
  'room:call_ended': { room_id: string };
  'typing:start': { room_id: string; user_id: string };
  'typing:stop': { room_id: string; user_id: string };
  'presence:update': { user_id: string; presence: UserStatus };
  'message:create': Message;
  'message:update': Message;
  'message:delete': { id: string; room_id: string };
  'media:router_capabilities': { rtp_capabilities: MediasoupObject };
  'media:transport_created': {
    send_transport: TransportInfo;
    recv_transport: TransportInfo;
    ice_servers: IceServer[];
    force_relay: boolean;
  };
  'media:transport_connected': { transport_id: string };
  'media:produce_result': { id: string };
  'media:new_producer': { producer_id: string; user_id: string; connection_id: string; kind: MediaKind; source: string };
  /** paused: as media:consume asked; producer_paused: its producer is paused by its owner now. */
  'media:consumer_created': {
    id: string;
    producer_id: string;
    kind: MediaKind;
    rtp_parameters: MediasoupObject;
    paused: boolean;
    producer_paused: boolean;
  };
  'media:producer_closed': { producer_id: string; user_id: string };
  'media:peer_left': { room_id: string; user_id: string; connection_id: string };
  'media:room_closed': { room_id: string };
  'media:producer_paused': { producer_id: string; user_id: string };
  'media:producer_resumed': { producer_id: string; user_id: string };
  'media:consumer_layers_changed': { consumer_id: string; spatial_layer: number; temporal_layer: number };
  'media:ice_restarted': { transport_id: string; ice_parameters: IceParameters };
  'media:stats': { items: MediaStatsItem[] };
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
    sctp_stream_parameters: MediasoupObject;
    label: string;
    protocol: string;
  };
  'media:active_speaker': { room_id: string; producer_id: string; user_id: string; connection_id: string };
}

export type ServerMessageType = keyof ServerMessages;

/** Any server frame, discriminated by `type`. */
export type ServerEnvelope = { [K in ServerMessageType]: Envelope<K, ServerMessages[K]> }[ServerMessageType];

/** Any client frame, discriminated by `type`. */
export type ClientEnvelope = { [K in ClientMessageType]: Envelope<K, ClientMessages[K]> }[ClientMessageType];

/** The reply type a request gets (`ack` where PROTOCOL §1 names none). */
export interface ReplyTypes {
  ping: 'pong';
  'room:join': 'room:state';
  'room:leave': 'room:left';
  'room:update_presence': 'room:presence_updated';
  'room:update_storage': 'room:storage_updated';
  'room:broadcast': 'ack';
  'room:members': 'room:members_page';
  'typing:start': 'ack';
  'typing:stop': 'ack';
  'presence:update': 'ack';
  'media:join': 'media:transport_created';
  'media:connect_transport': 'media:transport_connected';
  'media:produce': 'media:produce_result';
  'media:consume': 'media:consumer_created';
  'media:producer_close': 'ack';
  'media:leave': 'ack';
  'media:producer_pause': 'ack';
  'media:producer_resume': 'ack';
  'media:consumer_pause': 'ack';
  'media:consumer_resume': 'ack';
  'media:set_preferred_layers': 'ack';
  'media:restart_ice': 'media:ice_restarted';
  'media:get_stats': 'media:stats';
  'media:produce_data': 'media:produce_data_result';
  'media:consume_data': 'media:data_consumer_created';
}

/** The reply envelope of request type T. */
export type ReplyEnvelope<T extends ClientMessageType> = Envelope<ReplyTypes[T], ServerMessages[ReplyTypes[T]]>;

// ---------------------------------------------------------------- REST (§7)

/** REST error body. */
export interface RestError {
  error: ErrorCode | (string & {});
  message: string;
}

export interface User {
  id: string;
  username: string;
  display_name: string;
}

/** Answer of register, login and refresh. */
export interface TokenPair {
  access_token: string;
  refresh_token: string;
  /** Seconds until the access token expires. */
  expires_in: number;
  user: User;
}

/** `POST /api/tokens` (API key). */
export interface MintTokenRequest {
  user_id: string;
  name?: string;
  ttl_seconds?: number;
  rooms?: { [pattern: string]: ('read' | 'presence' | 'write')[] };
}

export interface MintedToken {
  token: string;
  expires_at: string;
}

export interface RoomInfo {
  id: string;
  name: string;
  open: boolean;
  /** Empty for a room the API key created. */
  owner_id: string;
  created_at: string;
  /** User ids; `GET /api/rooms/{id}` only. */
  members?: string[];
}

/** A list answer: newest first; pass next_before as `before` for the next page. */
export interface Page<T> {
  items: T[];
  next_before: string | null;
}

export interface UserPresence {
  user_id: string;
  presence: UserStatus;
}

export interface CallStartResult {
  started: true;
  rtp_capabilities: MediasoupObject;
}

export interface CallParticipant {
  connection_id: string;
  user_id: string;
  producers: { id: string; kind: MediaKind; source: string }[];
}

/** `PATCH /api/rooms/{id}/storage`. */
export interface StoragePatchResult {
  version: number;
}

/** `GET /api/presence?user_ids=...`. */
export interface PresenceList {
  items: UserPresence[];
}

/** `POST /api/rooms/{id}/call/join`. */
export interface CallJoined {
  joined: true;
}

/** `POST /api/rooms/{id}/call/leave`. */
export interface CallLeft {
  left: true;
}

/** `POST /api/rooms/{id}/call/end`. */
export interface CallEnded {
  ended: true;
}
