// Parley calls: the SFU side of the SDK, on top of mediasoup-client.
//
//   import { Call } from '@parley/client/calls';
//   const call = new Call(client, roomId);          // client: a ParleyClient
//   call.on('track', ({ track, kind, userId }) => show(track));
//   await call.join();
//   const cam = await call.produce(videoTrack, { source: 'webcam' });
//   await cam.pause(); await cam.resume();
//   call.on('data', ({ data, userId, label }) => show(label, data));
//   const chat = await call.produceData({ label: 'chat' });
//   chat.send('hello');
//   await call.leave();
//
// The wire is docs/protocol.md section 6 (PROTOCOL.md section 6). This is
// the only module of the package that imports mediasoup-client (an optional
// peer dependency), and it needs nothing of the SDK core but CallSignaling,
// which ParleyClient implements.
import { Device } from 'mediasoup-client';
import type { types } from 'mediasoup-client';
import type { IceParameters, MediaStatsItem } from './protocol.js';

export type { IceParameters, MediaStatsItem, MediaTransportStats, MediaRtpStreamStats } from './protocol.js';

type Transport = types.Transport;
type Producer = types.Producer;
type Consumer = types.Consumer;
type DataProducer = types.DataProducer;
type DataConsumer = types.DataConsumer;
type SctpStreamParameters = types.SctpStreamParameters;
type MediaKind = types.MediaKind;
type RtpCapabilities = types.RtpCapabilities;
type RtpParameters = types.RtpParameters;
type RtpEncodingParameters = types.RtpEncodingParameters;
type ProducerCodecOptions = types.ProducerCodecOptions;
type ConnectionState = types.ConnectionState;

/**
 * What a Call needs from the SDK core: ParleyClient has all three.
 * `request` resolves with the reply envelope and rejects with an Error
 * carrying `.code` ('unsupported', 'not_found', 'timeout', 'disconnected',
 * ...) on an error reply; `on` takes server message types by wire name
 * (and the client event 'disconnected') and returns an unsubscribe function.
 */
export interface CallSignaling {
  request(type: string, data: unknown, opts?: { timeoutMs?: number }): Promise<{ type: string; id?: string; data?: any }>;
  on(type: string, fn: (data: any) => void): () => void;
  readonly connectionId: string | null;
}

/** The header extension whose presence in the router's capabilities turns simulcast on. */
export const RTP_STREAM_ID_URI = 'urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id';

export type CallSource = 'webcam' | 'mic' | 'screen' | (string & {});

/** idle → joining → joined → left (leave()) | closed (call ended, socket lost); join() again from idle, left or closed. */
export type CallState = 'idle' | 'joining' | 'joined' | 'left' | 'closed';

export interface CallOptions {
  /** A mediasoup-client Device class to instantiate, or a Device instance (loaded or not). Default: new Device(). */
  Device?: (new () => Device) | Device;
  /** 'relay' to use TURN only. The server's force_relay always wins. Default 'all'. */
  iceTransportPolicy?: RTCIceTransportPolicy;
  /** Timeout of each media:* request; default: the signaling's own. */
  requestTimeoutMs?: number;
  /**
   * Restart ICE on its own (media:restart_ice, then transport.restartIce) when
   * a transport's connection state turns 'failed', or stays 'disconnected' for
   * iceRestartDelayMs. Default true.
   */
  autoRestartIce?: boolean;
  /** How long 'disconnected' may last before an automatic ICE restart, and the least time between two; default 2000. */
  iceRestartDelayMs?: number;
  /**
   * Consume as mediasoup-demo does: media:consume with paused: true, then
   * media:consumer_resume once the local consumer exists, so that the key
   * frame asked for at the resume finds it ready. Default false (consumers
   * start unpaused; the server asks for a key frame at once).
   */
  consumePaused?: boolean;
  /**
   * Consume every data producer the others announce (media:new_data_producer),
   * delivering its messages as 'data' events. Default true; false: call
   * consumeData(id) for the ones wanted ('data_producer' announces them).
   */
  consumeData?: boolean;
  /** How long produceData() and consumeData() wait for the data channel to open; default 30000. */
  dataOpenTimeoutMs?: number;
}

export interface DataProducerOptions {
  /** Echoed to the others (media:new_data_producer); at most 256 bytes. Default ''. */
  label?: string;
  /** Sub-protocol, echoed like the label. Default ''. */
  protocol?: string;
  /** Ordered delivery; default true, false when maxPacketLifeTime or maxRetransmits is set. */
  ordered?: boolean;
  /** Partial reliability: give up a message after this many ms (not with maxRetransmits). */
  maxPacketLifeTime?: number;
  /** Partial reliability: at most this many retransmissions (not with maxPacketLifeTime). */
  maxRetransmits?: number;
  appData?: Record<string, unknown>;
}

/** A data producer of another connection (media:new_data_producer). */
export interface RemoteDataProducer {
  dataProducerId: string;
  userId: string;
  connectionId: string;
  label: string;
  protocol: string;
}

/** A remote data producer and whether this call receives it. */
export interface RemoteDataProducerState extends RemoteDataProducer {
  /** A data consumer exists (auto, or consumeData()). */
  consumed: boolean;
  /** Its data channel is open: messages sent from now on arrive. */
  open: boolean;
}

/** What a data channel message carries: text, or binary as an ArrayBuffer. */
export type DataPayload = string | ArrayBuffer;

/** Why a remote data producer ended: its channel closed (the owner closed it), its peer left, I left, the call ended, my socket closed. */
export type DataEndReason = 'closed' | 'peer_left' | 'left' | 'room_closed' | 'disconnected';

export interface ProduceOptions {
  /** Echoed to the others; default 'mic' for audio, 'webcam' for video. At most 32 characters. */
  source?: CallSource;
  /** RTP encodings; default for video: simulcast layers when the router supports them, else one encoding.
   * For VP9 SVC: one encoding with a scalabilityMode, e.g. `[{ scalabilityMode: 'L3T3_KEY' }]`. */
  encodings?: RtpEncodingParameters[];
  /** The codec to send by mimeType (e.g. 'video/VP9' for SVC); default: the first the router and browser share.
   * Not offered by both: CallError 'unsupported'. */
  codec?: string;
  codecOptions?: ProducerCodecOptions;
  appData?: Record<string, unknown>;
}

/** A track received from another connection (one consumer). */
export interface RemoteTrack {
  track: MediaStreamTrack;
  kind: MediaKind;
  source: string;
  userId: string;
  connectionId: string;
  producerId: string;
  consumerId: string;
  /** Paused by me (pauseRemote): the SFU sends nothing for it. */
  pausedByMe: boolean;
  /** Paused by its producer's owner ('paused' / 'resumed' events). */
  producerPaused: boolean;
}

/** Why a remote track ended: its producer closed, its peer left, I left, the call ended, my socket closed. */
export type RemoteEndReason = 'producer_closed' | 'peer_left' | 'left' | 'room_closed' | 'disconnected';
/** Why one of my producers ended: close(), its track ended (e.g. "stop sharing"), leave(), the call ended, my socket closed. */
export type LocalEndReason = 'closed' | 'track_ended' | 'left' | 'room_closed' | 'disconnected';

export interface CallEvents {
  /** A remote track is ready to play. Every 'track' is followed by exactly one 'track_ended'. */
  track: RemoteTrack;
  track_ended: RemoteTrack & { reason: RemoteEndReason };
  /** Another connection left the call (its tracks got 'track_ended' just before). */
  peer_left: { userId: string; connectionId: string };
  /** The dominant speaker changed; local: it is one of my producers. */
  active_speaker: { producerId: string; userId: string; connectionId: string; local: boolean };
  /**
   * The layers a remote simulcast/SVC video is received in changed
   * (media:consumer_layers_changed): the spatial layer (0 = lowest encoding)
   * and the temporal ceiling the SFU forwards now. Follows its 'track'.
   */
  layers_changed: RemoteTrack & { spatialLayer: number; temporalLayer: number };
  /** A remote producer was paused / resumed by its owner (the local consumer is paused / resumed too). */
  paused: RemoteTrack;
  resumed: RemoteTrack;
  /** The call is over for this connection without leave(): media:room_closed (call/end, removal) or the socket closed. */
  closed: { roomId: string; reason: 'room_closed' | 'disconnected' };
  /** One of my producers closed, for any reason. */
  local_track_ended: { producerId: string; kind: MediaKind; source: string; track: MediaStreamTrack | null; reason: LocalEndReason };
  /** ICE/DTLS state of the send or receive transport. */
  connection_state: { direction: 'send' | 'recv'; state: ConnectionState };
  /** An ICE restart (restartIce(), or automatic after 'failed'/'disconnected') gave the transport new ICE parameters. */
  ice_restarted: { direction: 'send' | 'recv'; automatic: boolean };
  /**
   * A failure of something I did not call: consuming an announced producer, or
   * (op 'consume_data') data producer: producerId is its id; an automatic ICE restart.
   */
  error:
    | { op: 'consume' | 'consume_data'; producerId: string; error: Error }
    | { op: 'restart_ice'; direction: 'send' | 'recv'; error: Error };
  /** Another connection announced a data producer (consumed at once unless CallOptions.consumeData is false). */
  data_producer: RemoteDataProducer;
  /** A message from a consumed remote data producer. */
  data: RemoteDataProducer & { data: DataPayload };
  /** A remote data producer ended (announced ones; one per 'data_producer'). */
  data_producer_ended: RemoteDataProducer & { reason: DataEndReason };
}

/** An error of the calls layer itself; server errors keep the signaling's own error (with its .code). */
export class CallError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(`${code}: ${message}`);
    this.name = 'CallError';
    this.code = code;
  }
}

function errorCode(e: unknown): string | undefined {
  const c = (e as { code?: unknown } | null)?.code;
  return typeof c === 'string' ? c : undefined;
}

/** True when the router's capabilities carry the rtp-stream-id header extension (rid-based simulcast). */
export function supportsSimulcast(caps: RtpCapabilities | null | undefined): boolean {
  return !!caps?.headerExtensions?.some(
    (e) => e.uri === RTP_STREAM_ID_URI && (e.kind === undefined || e.kind === 'video'),
  );
}

/**
 * Default video encodings: with rid support, up to three layers (¼, ½, full
 * resolution) as many as the track's height carries (as Chromium does: 3 from
 * 540 lines, 2 from 270), else undefined (one encoding).
 */
export function videoEncodings(
  caps: RtpCapabilities | null | undefined,
  height?: number,
): RtpEncodingParameters[] | undefined {
  if (!supportsSimulcast(caps)) return undefined;
  const layers = height === undefined || height >= 540 ? 3 : height >= 270 ? 2 : 1;
  if (layers < 2) return undefined;
  // Lowest first, as mediasoup-client and the SFU number the layers.
  const all: RtpEncodingParameters[] = [
    { scaleResolutionDownBy: 4, maxBitrate: 150_000 },
    { scaleResolutionDownBy: 2, maxBitrate: 500_000 },
    { scaleResolutionDownBy: 1, maxBitrate: 1_200_000 },
  ];
  return all.slice(3 - layers);
}

interface TransportInfo {
  id: string;
  iceParameters: types.IceParameters;
  iceCandidates: types.IceCandidate[];
  dtlsParameters: types.DtlsParameters;
  sctpParameters?: types.SctpParameters;
}

interface TransportCreated {
  send_transport: TransportInfo;
  recv_transport: TransportInfo;
  ice_servers?: RTCIceServer[];
  force_relay?: boolean;
}

interface NewProducer {
  producer_id: string;
  user_id: string;
  connection_id: string;
  kind: MediaKind;
  source?: string;
  room_id?: string;
}

interface Remote {
  info: RemoteTrack;
  consumer: Consumer;
}

type Handler<T> = (data: T) => void;

/** One of my producers. pause()/resume() keep the local state even when the server cannot (answers 'unsupported'). */
export class CallProducer {
  readonly producer: Producer;
  readonly source: string;
  private readonly call: Call;

  /** @internal */
  constructor(call: Call, producer: Producer, source: string) {
    this.call = call;
    this.producer = producer;
    this.source = source;
  }

  get id(): string { return this.producer.id; }
  get kind(): MediaKind { return this.producer.kind; }
  get track(): MediaStreamTrack | null { return this.producer.track; }
  get paused(): boolean { return this.producer.paused; }
  get closed(): boolean { return this.producer.closed; }

  /** Stops sending (the track is disabled) and asks the SFU to stop forwarding (media:producer_pause). */
  async pause(): Promise<void> {
    if (this.closed) return;
    this.producer.pause();
    await this.call._producerRequest('media:producer_pause', this.id);
  }

  /** Sends again (media:producer_resume). */
  async resume(): Promise<void> {
    if (this.closed) return;
    this.producer.resume();
    await this.call._producerRequest('media:producer_resume', this.id);
  }

  /** Closes the producer; the others get media:producer_closed ('track_ended' there). */
  async close(): Promise<void> {
    await this.call._closeProducer(this, 'closed');
  }
}

/** Byte length of what RTCDataChannel.send() takes. */
function payloadSize(data: string | ArrayBuffer | ArrayBufferView | Blob): number {
  if (typeof data === 'string') return new TextEncoder().encode(data).byteLength;
  if (data instanceof ArrayBuffer) return data.byteLength;
  if (ArrayBuffer.isView(data)) return data.byteLength;
  return (data as Blob).size;
}

/** Waits for a DataProducer/DataConsumer to open (or close, or time out). */
function whenOpen(d: DataProducer | DataConsumer, timeoutMs: number, what: string): Promise<void> {
  if (d.readyState === 'open') return Promise.resolve();
  // DataProducer and DataConsumer share these events, with different typings.
  const ev = d as unknown as { on(e: string, fn: () => void): void; off(e: string, fn: () => void): void };
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      clearTimeout(timer);
      ev.off('open', onOpen);
      ev.off('close', onClose);
      ev.off('transportclose', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onOpen = () => done();
    const onClose = () => done(new CallError('closed', `${what} closed before it opened`));
    const timer = setTimeout(() => done(new CallError('timeout', `${what} did not open within ${timeoutMs} ms`)), timeoutMs);
    ev.on('open', onOpen);
    ev.on('close', onClose);
    ev.on('transportclose', onClose);
    if (d.closed) onClose();
  });
}

/**
 * One of my data producers: an open data channel to everyone in the call who
 * consumes it. Closing it (close(), leave(), the call ending) closes it for them too.
 */
export class CallDataProducer {
  readonly dataProducer: DataProducer;
  readonly label: string;
  readonly protocol: string;
  private readonly maxMessageSize: number | undefined;
  private readonly onClosed: () => void;

  /** @internal */
  constructor(dataProducer: DataProducer, maxMessageSize: number | undefined, onClosed: () => void) {
    this.dataProducer = dataProducer;
    this.label = dataProducer.label;
    this.protocol = dataProducer.protocol;
    this.maxMessageSize = maxMessageSize;
    this.onClosed = onClosed;
  }

  get id(): string { return this.dataProducer.id; }
  get closed(): boolean { return this.dataProducer.closed; }
  get readyState(): RTCDataChannelState { return this.dataProducer.readyState; }
  /** Bytes queued in the browser, not sent yet. */
  get bufferedAmount(): number { return this.dataProducer.bufferedAmount; }
  get sctpStreamParameters(): SctpStreamParameters { return this.dataProducer.sctpStreamParameters; }

  /**
   * Sends one message (text, or binary). Throws CallError 'closed' after
   * close, 'bad_state' when the channel is not open, 'too_large' over the
   * server's maximum (its transports' sctpParameters.maxMessageSize).
   */
  send(data: string | ArrayBuffer | ArrayBufferView | Blob): void {
    if (this.closed) throw new CallError('closed', `data producer ${this.id} is closed`);
    if (this.readyState !== 'open') throw new CallError('bad_state', `data producer ${this.id} is ${this.readyState}`);
    const size = payloadSize(data);
    if (this.maxMessageSize !== undefined && size > this.maxMessageSize) {
      throw new CallError('too_large', `message of ${size} bytes is over the server's maximum of ${this.maxMessageSize}`);
    }
    this.dataProducer.send(data);
  }

  /** Closes the data channel; the server closes the data producer and its consumers. */
  close(): void {
    if (!this.dataProducer.closed) this.dataProducer.close();
    this.onClosed();
  }
}

interface NewDataProducer {
  data_producer_id: string;
  user_id: string;
  connection_id: string;
  label?: string;
  protocol?: string;
}

interface DataRemote {
  info: RemoteDataProducer;
  consumer: DataConsumer | null; // null while media:consume_data / consumeData() run
  waiters: Array<Promise<void>>;
}

export class Call {
  readonly roomId: string;
  readonly device: Device;
  private readonly signaling: CallSignaling;
  private readonly options: CallOptions;
  private _state: CallState = 'idle';
  private joinPromise: Promise<void> | null = null;
  private generation = 0;
  private routerCaps: RtpCapabilities | null = null;
  private send: Transport | null = null;
  private recv: Transport | null = null;
  private unsubs: Array<() => void> = [];
  private handlers = new Map<keyof CallEvents, Set<Handler<any>>>();
  private queue: NewProducer[] = [];                         // announced before the recv transport existed
  private inflight = new Map<string, NewProducer>();         // media:consume sent, consumer not there yet
  private endedInflight = new Set<string>();                 // closed while in flight: drop the consumer
  private remotes = new Map<string, Remote>();               // producer id → consumer
  private pausedRemote = new Set<string>();                  // producer ids announced paused
  private producers = new Map<string, CallProducer>();       // my producers by id
  private iceTimers = new Map<'send' | 'recv', ReturnType<typeof setTimeout>>();
  private iceRestarts = new Map<'send' | 'recv', Promise<void>>(); // in flight
  private lastIceRestart = new Map<'send' | 'recv', number>();
  private maxDataMessageSize: number | undefined;            // send transport's sctpParameters.maxMessageSize
  private dataProducers = new Map<string, CallDataProducer>(); // my data producers by id
  private dataQueue: NewDataProducer[] = [];                 // data producers announced while joining
  private dataAnnounced = new Map<string, RemoteDataProducer>(); // others' data producers by id
  private dataRemotes = new Map<string, DataRemote>();       // consumed (or being consumed) data producers
  private layers = new Map<string, { spatialLayer: number; temporalLayer: number }>(); // consumer id → last layers_changed

  constructor(signaling: CallSignaling, roomId: string, options: CallOptions = {}) {
    this.signaling = signaling;
    this.roomId = roomId;
    this.options = options;
    const D = options.Device;
    this.device = D === undefined ? new Device() : typeof D === 'function' ? new D() : D;
  }

  get state(): CallState { return this._state; }
  get sendTransport(): Transport | null { return this.send; }
  get recvTransport(): Transport | null { return this.recv; }
  /** The router's RTP capabilities from the last join. */
  get routerRtpCapabilities(): RtpCapabilities | null { return this.routerCaps; }
  /** Whether produce() sends simulcast layers by default for video. */
  get simulcast(): boolean { return supportsSimulcast(this.routerCaps); }
  /** Remote tracks being received now. */
  get remoteTracks(): RemoteTrack[] { return [...this.remotes.values()].map((r) => r.info); }
  /** My open producers. */
  get localProducers(): CallProducer[] { return [...this.producers.values()]; }
  /** My open data producers. */
  get localDataProducers(): CallDataProducer[] { return [...this.dataProducers.values()]; }
  /** The others' data producers announced to this call, and whether each is received. */
  get remoteDataProducers(): RemoteDataProducerState[] {
    return [...this.dataAnnounced.values()].map((info) => {
      const c = this.dataRemotes.get(info.dataProducerId)?.consumer;
      return { ...info, consumed: !!c, open: !!c && c.readyState === 'open' };
    });
  }
  /** Whether the server offers data channels (its transports carry sctpParameters). */
  get dataChannels(): boolean { return this.maxDataMessageSize !== undefined; }

  on<K extends keyof CallEvents>(event: K, fn: Handler<CallEvents[K]>): () => void {
    let set = this.handlers.get(event);
    if (!set) this.handlers.set(event, (set = new Set()));
    set.add(fn);
    return () => { this.handlers.get(event)?.delete(fn); };
  }

  private emit<K extends keyof CallEvents>(event: K, data: CallEvents[K]): void {
    for (const fn of [...(this.handlers.get(event) ?? [])]) {
      try {
        fn(data);
      } catch (e) {
        console.error(`parley calls: '${event}' handler failed`, e);
      }
    }
  }

  private request(type: string, data: Record<string, unknown>) {
    const opts = this.options.requestTimeoutMs !== undefined ? { timeoutMs: this.options.requestTimeoutMs } : undefined;
    return this.signaling.request(type, { room_id: this.roomId, ...data }, opts);
  }

  /**
   * media:join, then device.load with the router's capabilities, then the
   * send and receive transports. Producers announced meanwhile are consumed
   * once the receive transport exists.
   */
  join(): Promise<void> {
    if (this._state === 'joining' && this.joinPromise) return this.joinPromise;
    if (this._state === 'joined') return Promise.resolve();
    this._state = 'joining';
    this.joinPromise = this.doJoin();
    return this.joinPromise;
  }

  private async doJoin(): Promise<void> {
    const gen = this.generation;
    this.routerCaps = null;
    this.subscribe();
    let joined = false;
    try {
      const reply = await this.request('media:join', {});
      joined = true;
      this.checkJoining(gen);
      const tc = reply.data as TransportCreated;
      const caps = this.routerCaps;
      if (!caps) throw new CallError('internal', 'no media:router_capabilities before media:transport_created');
      if (!this.device.loaded) await this.device.load({ routerRtpCapabilities: caps });
      this.checkJoining(gen);
      const policy: RTCIceTransportPolicy = tc.force_relay ? 'relay' : this.options.iceTransportPolicy ?? 'all';
      const common = { iceServers: tc.ice_servers ?? [], iceTransportPolicy: policy };
      this.send = this.device.createSendTransport({ ...tc.send_transport, ...common });
      this.recv = this.device.createRecvTransport({ ...tc.recv_transport, ...common });
      this.maxDataMessageSize = tc.send_transport.sctpParameters?.maxMessageSize;
      this.wire(this.send, 'send');
      this.wire(this.recv, 'recv');
      this._state = 'joined';
    } catch (e) {
      if (gen === this.generation) {
        // Not ended by room_closed or the socket meanwhile: back to idle.
        this.teardown('left');
        this._state = 'idle';
        if (joined) this.request('media:leave', {}).catch(() => {});
      }
      throw e;
    }
    const queued = this.queue;
    this.queue = [];
    for (const a of queued) void this.consume(a);
    const dataQueued = this.dataQueue;
    this.dataQueue = [];
    for (const d of dataQueued) this.onNewDataProducer(d);
  }

  private checkJoining(gen: number): void {
    if (gen !== this.generation || this._state !== 'joining') {
      throw new CallError('closed', `the call of room ${this.roomId} ended while joining`);
    }
  }

  private subscribe(): void {
    const on = (type: string, fn: (d: any) => void) => {
      this.unsubs.push(this.signaling.on(type, (d) => {
        if (d && typeof d === 'object' && typeof d.room_id === 'string' && d.room_id !== this.roomId) return;
        fn(d ?? {});
      }));
    };
    on('media:router_capabilities', (d) => {
      if (this._state === 'joining' && d.rtp_capabilities) this.routerCaps = d.rtp_capabilities;
    });
    on('media:new_producer', (d) => this.onNewProducer(d as NewProducer));
    on('media:producer_closed', (d) => this.endRemote(d.producer_id, 'producer_closed'));
    on('media:peer_left', (d) => this.onPeerLeft(d));
    on('media:producer_paused', (d) => this.onPaused(d.producer_id, true));
    on('media:producer_resumed', (d) => this.onPaused(d.producer_id, false));
    on('media:active_speaker', (d) => {
      if (typeof d.producer_id !== 'string') return;
      this.emit('active_speaker', {
        producerId: d.producer_id, userId: d.user_id, connectionId: d.connection_id,
        local: this.producers.has(d.producer_id) || (d.connection_id != null && d.connection_id === this.signaling.connectionId),
      });
    });
    on('media:new_data_producer', (d) => this.onNewDataProducer(d as NewDataProducer));
    on('media:consumer_layers_changed', (d) => this.onLayers(d));
    on('media:room_closed', () => this.end('room_closed'));
    on('disconnected', () => this.end('disconnected'));
  }

  private wire(t: Transport, direction: 'send' | 'recv'): void {
    t.on('connect', ({ dtlsParameters }, callback, errback) => {
      this.request('media:connect_transport', { transport_id: t.id, dtls_parameters: dtlsParameters })
        .then(() => callback(), errback);
    });
    t.on('connectionstatechange', (state) => {
      this.emit('connection_state', { direction, state });
      this.onConnectionState(t, direction, state);
    });
    if (direction === 'send') {
      t.on('produce', ({ kind, rtpParameters, appData }, callback, errback) => {
        const data: Record<string, unknown> = { transport_id: t.id, kind, rtp_parameters: rtpParameters };
        const source = appData['source'];
        if (typeof source === 'string') data['source'] = source;
        this.request('media:produce', data).then((r) => callback({ id: String(r.data?.id) }), errback);
      });
      t.on('producedata', ({ sctpStreamParameters, label, protocol }, callback, errback) => {
        this.request('media:produce_data', { transport_id: t.id, sctp_stream_parameters: sctpStreamParameters, label, protocol })
          .then((r) => callback({ id: String(r.data?.id) }), errback);
      });
    }
  }

  /**
   * Produces a track. Video gets simulcast encodings by default when the
   * router supports rid-based simulcast (see videoEncodings), else one.
   */
  async produce(track: MediaStreamTrack, opts: ProduceOptions = {}): Promise<CallProducer> {
    if (this._state === 'joining' && this.joinPromise) await this.joinPromise;
    if (this._state !== 'joined' || !this.send) throw new CallError('bad_state', `produce() needs a joined call (state ${this._state})`);
    const kind = track.kind as MediaKind;
    const source = opts.source ?? (kind === 'audio' ? 'mic' : 'webcam');
    let codec;
    if (opts.codec !== undefined) {
      const want = opts.codec.toLowerCase();
      codec = this.device.rtpCapabilities.codecs?.find((c) => c.mimeType.toLowerCase() === want);
      if (!codec) throw new CallError('unsupported', `codec ${opts.codec} is not offered by both the server and this browser`);
    }
    let encodings = opts.encodings;
    if (encodings === undefined && kind === 'video') {
      encodings = videoEncodings(this.routerCaps, track.getSettings?.().height);
    }
    const gen = this.generation;
    const producer = await this.send.produce({
      track,
      ...(codec ? { codec } : {}),
      ...(encodings ? { encodings } : {}),
      ...(opts.codecOptions ? { codecOptions: opts.codecOptions } : {}),
      appData: { ...opts.appData, source },
    });
    if (gen !== this.generation) {
      // The call ended (or was left) while producing.
      producer.close();
      throw new CallError('closed', `the call of room ${this.roomId} ended while producing`);
    }
    const handle = new CallProducer(this, producer, source);
    this.producers.set(producer.id, handle);
    producer.on('trackended', () => { void this._closeProducer(handle, 'track_ended').catch(() => {}); });
    return handle;
  }

  /**
   * Restarts ICE of the send and/or receive transport: media:restart_ice gives
   * new ICE parameters, transport.restartIce takes them (the browser then
   * checks with a new ufrag; media keeps its DTLS session). Done on its own
   * after 'failed' / a lasting 'disconnected' unless autoRestartIce is false.
   */
  async restartIce(direction?: 'send' | 'recv'): Promise<void> {
    for (const d of direction ? [direction] : (['send', 'recv'] as const)) {
      const t = d === 'send' ? this.send : this.recv;
      if (t && !t.closed) await this.restartIceOf(t, d, false);
    }
  }

  private restartIceOf(t: Transport, direction: 'send' | 'recv', automatic: boolean): Promise<void> {
    const inflight = this.iceRestarts.get(direction);
    if (inflight) return inflight;
    if (this._state !== 'joined') return Promise.resolve();
    const gen = this.generation;
    this.lastIceRestart.set(direction, Date.now());
    let run: Promise<void> | undefined;
    run = (async () => {
      await Promise.resolve(); // run is set before the finally below can run
      try {
        const r = await this.request('media:restart_ice', { transport_id: t.id });
        if (gen !== this.generation || t.closed) return;
        await t.restartIce({ iceParameters: (r.data as { ice_parameters: IceParameters }).ice_parameters });
        this.emit('ice_restarted', { direction, automatic });
      } finally {
        if (this.iceRestarts.get(direction) === run) this.iceRestarts.delete(direction);
      }
    })();
    this.iceRestarts.set(direction, run);
    return run;
  }

  /** Automatic ICE restarts: at once on 'failed', after iceRestartDelayMs of 'disconnected'; never two within that delay. */
  private onConnectionState(t: Transport, direction: 'send' | 'recv', state: ConnectionState): void {
    const timer = this.iceTimers.get(direction);
    if (timer !== undefined) clearTimeout(timer);
    this.iceTimers.delete(direction);
    if (this.options.autoRestartIce === false || (state !== 'failed' && state !== 'disconnected')) return;
    const delayMs = this.options.iceRestartDelayMs ?? 2000;
    const sinceLast = Date.now() - (this.lastIceRestart.get(direction) ?? 0);
    const wait = Math.max(state === 'failed' ? 0 : delayMs, delayMs - sinceLast);
    const gen = this.generation;
    const go = () => {
      this.iceTimers.delete(direction);
      if (gen !== this.generation || t.closed || (t.connectionState !== 'failed' && t.connectionState !== 'disconnected')) return;
      this.restartIceOf(t, direction, true).catch((e) => {
        const code = errorCode(e);
        if (gen !== this.generation || code === 'not_found' || code === 'disconnected') return; // the call is gone
        this.emit('error', { op: 'restart_ice', direction, error: e instanceof Error ? e : new Error(String(e)) });
      });
    };
    if (wait <= 0) go();
    else this.iceTimers.set(direction, setTimeout(go, wait));
  }

  /**
   * Server-side statistics of my own transports, producers and consumers
   * (media:get_stats), in mediasoup's shapes: all of them, or those named.
   */
  async getStats(filter: { transportId?: string; producerId?: string; consumerId?: string } = {}): Promise<MediaStatsItem[]> {
    if (this._state !== 'joined') throw new CallError('bad_state', `getStats() needs a joined call (state ${this._state})`);
    const data: Record<string, unknown> = {};
    if (filter.transportId) data['transport_id'] = filter.transportId;
    if (filter.producerId) data['producer_id'] = filter.producerId;
    if (filter.consumerId) data['consumer_id'] = filter.consumerId;
    const r = await this.request('media:get_stats', data);
    return ((r.data as { items?: MediaStatsItem[] } | undefined)?.items) ?? [];
  }

  /**
   * Stops receiving a remote track (media:consumer_pause: the SFU sends
   * nothing for it) and pauses its local consumer. 'unsupported' keeps the
   * local pause quietly.
   */
  async pauseRemote(track: RemoteTrack | string): Promise<void> {
    const r = this.remoteOf(track);
    r.info.pausedByMe = true;
    if (!r.consumer.closed) r.consumer.pause();
    await this.consumerRequest('media:consumer_pause', r.info.consumerId);
  }

  /** Receives a remote track again (media:consumer_resume; video starts with a key frame), unless its owner paused it. */
  async resumeRemote(track: RemoteTrack | string): Promise<void> {
    const r = this.remoteOf(track);
    r.info.pausedByMe = false;
    await this.consumerRequest('media:consumer_resume', r.info.consumerId);
    if (!r.info.pausedByMe && !r.info.producerPaused && !r.consumer.closed) r.consumer.resume();
  }

  private remoteOf(track: RemoteTrack | string): Remote {
    const pid = typeof track === 'string' ? track : track.producerId;
    const r = this.remotes.get(pid);
    if (!r) throw new CallError('not_found', `no remote track of producer ${pid}`);
    return r;
  }

  private async consumerRequest(type: 'media:consumer_pause' | 'media:consumer_resume', consumerId: string): Promise<void> {
    if (this._state !== 'joined') return;
    try {
      await this.request(type, { consumer_id: consumerId });
    } catch (e) {
      const code = errorCode(e);
      if (code === 'unsupported' || code === 'not_found') return; // not_found: closed meanwhile
      throw e;
    }
  }

  /** @internal pause/resume of my producer: the local state stays when the server answers 'unsupported'. */
  async _producerRequest(type: 'media:producer_pause' | 'media:producer_resume', producerId: string): Promise<void> {
    if (this._state !== 'joined') return;
    try {
      await this.request(type, { producer_id: producerId });
    } catch (e) {
      if (errorCode(e) === 'unsupported') return;
      throw e;
    }
  }

  /** @internal */
  async _closeProducer(handle: CallProducer, reason: LocalEndReason): Promise<void> {
    if (!this.producers.has(handle.id) || handle.closed) return;
    this.producers.delete(handle.id);
    const track = handle.track;
    handle.producer.close();
    this.emit('local_track_ended', { producerId: handle.id, kind: handle.kind, source: handle.source, track, reason });
    if (this._state !== 'joined') return;
    try {
      await this.request('media:producer_close', { producer_id: handle.id });
    } catch (e) {
      if (errorCode(e) === 'not_found') return;
      throw e;
    }
  }

  /**
   * Opens a data channel to the call (media:produce_data): everyone else
   * is told (media:new_data_producer) and, by default, consumes it. Resolves
   * once the channel is open, so send() works at once. Throws CallError
   * 'unsupported' when the server has data channels off.
   */
  async produceData(opts: DataProducerOptions = {}): Promise<CallDataProducer> {
    if (this._state === 'joining' && this.joinPromise) await this.joinPromise;
    if (this._state !== 'joined' || !this.send) throw new CallError('bad_state', `produceData() needs a joined call (state ${this._state})`);
    if (!this.dataChannels) throw new CallError('unsupported', 'the server offers no data channels (its transports carry no sctpParameters)');
    const gen = this.generation;
    const dp = await this.send.produceData({
      label: opts.label ?? '', protocol: opts.protocol ?? '',
      ...(opts.ordered !== undefined ? { ordered: opts.ordered } : {}),
      ...(opts.maxPacketLifeTime !== undefined ? { maxPacketLifeTime: opts.maxPacketLifeTime } : {}),
      ...(opts.maxRetransmits !== undefined ? { maxRetransmits: opts.maxRetransmits } : {}),
      appData: { ...opts.appData },
    });
    if (gen !== this.generation) {
      dp.close();
      throw new CallError('closed', `the call of room ${this.roomId} ended while producing data`);
    }
    const handle = new CallDataProducer(dp, this.maxDataMessageSize, () => { this.dataProducers.delete(dp.id); });
    this.dataProducers.set(dp.id, handle);
    // Closed by the server (its SCTP stream reset) or with the transport.
    dp.on('close', () => this.dataProducers.delete(dp.id));
    dp.on('transportclose', () => this.dataProducers.delete(dp.id));
    await whenOpen(dp, this.options.dataOpenTimeoutMs ?? 30_000, `data producer ${dp.id}`);
    return handle;
  }

  /**
   * Receives an announced data producer (media:consume_data): its messages
   * arrive as 'data' events. Resolves once the channel is open. Not needed
   * unless CallOptions.consumeData is false; consuming one twice is a no-op.
   */
  async consumeData(dataProducerId: string): Promise<void> {
    if (this._state === 'joining' && this.joinPromise) await this.joinPromise;
    if (this._state !== 'joined' || !this.recv) throw new CallError('bad_state', `consumeData() needs a joined call (state ${this._state})`);
    if (!this.dataChannels) throw new CallError('unsupported', 'the server offers no data channels (its transports carry no sctpParameters)');
    const info = this.dataAnnounced.get(dataProducerId);
    if (!info) throw new CallError('not_found', `no data producer ${dataProducerId} was announced`);
    const existing = this.dataRemotes.get(dataProducerId);
    if (existing) {
      await Promise.all(existing.waiters);
      return;
    }
    const remote: DataRemote = { info, consumer: null, waiters: [] };
    const p = this.doConsumeData(remote);
    remote.waiters.push(p);
    this.dataRemotes.set(dataProducerId, remote);
    return p;
  }

  private async doConsumeData(remote: DataRemote): Promise<void> {
    const { info } = remote;
    const gen = this.generation;
    const recv = this.recv!;
    const dropped = () => gen !== this.generation || this.dataRemotes.get(info.dataProducerId) !== remote;
    try {
      const r = await this.request('media:consume_data', { data_producer_id: info.dataProducerId });
      if (dropped()) return;
      const d = r.data as { id: string; data_producer_id: string; sctp_stream_parameters: SctpStreamParameters; label: string; protocol: string };
      const consumer = await recv.consumeData({
        id: d.id, dataProducerId: d.data_producer_id, sctpStreamParameters: d.sctp_stream_parameters,
        label: d.label, protocol: d.protocol, appData: { userId: info.userId, connectionId: info.connectionId },
      });
      if (dropped()) {
        consumer.close();
        return;
      }
      consumer.binaryType = 'arraybuffer';
      remote.consumer = consumer;
      consumer.on('message', (data: unknown) => {
        if (typeof data === 'string' || data instanceof ArrayBuffer) this.emit('data', { ...info, data });
      });
      // The server reset the stream: the owner closed it (or left).
      consumer.on('close', () => this.endDataRemote(info.dataProducerId, 'closed'));
      await whenOpen(consumer, this.options.dataOpenTimeoutMs ?? 30_000, `data consumer of ${info.dataProducerId}`);
    } catch (e) {
      if (!dropped()) {
        // Not open in time (or refused): drop it; consumeData(id) may retry.
        this.dataRemotes.delete(info.dataProducerId);
        if (remote.consumer && !remote.consumer.closed) remote.consumer.close();
        throw e;
      }
    }
  }

  private onNewDataProducer(d: NewDataProducer): void {
    if (typeof d.data_producer_id !== 'string' || typeof d.connection_id !== 'string') return;
    if (d.connection_id === this.signaling.connectionId) return;
    if (this._state === 'joining') {
      if (!this.dataQueue.some((q) => q.data_producer_id === d.data_producer_id)) this.dataQueue.push(d);
      return;
    }
    if (this._state !== 'joined' || this.dataAnnounced.has(d.data_producer_id)) return;
    const info: RemoteDataProducer = {
      dataProducerId: d.data_producer_id, userId: d.user_id, connectionId: d.connection_id,
      label: d.label ?? '', protocol: d.protocol ?? '',
    };
    this.dataAnnounced.set(info.dataProducerId, info);
    this.emit('data_producer', info);
    if (this.options.consumeData === false || !this.dataChannels) return;
    this.consumeData(info.dataProducerId).catch((e) => {
      if (this.dataAnnounced.has(info.dataProducerId)) {
        this.emit('error', { op: 'consume_data', producerId: info.dataProducerId, error: e instanceof Error ? e : new Error(String(e)) });
      }
    });
  }

  private endDataRemote(dataProducerId: string, reason: DataEndReason): void {
    const info = this.dataAnnounced.get(dataProducerId);
    if (!info) return;
    this.dataAnnounced.delete(dataProducerId);
    const r = this.dataRemotes.get(dataProducerId);
    this.dataRemotes.delete(dataProducerId);
    if (r?.consumer && !r.consumer.closed) r.consumer.close();
    this.emit('data_producer_ended', { ...info, reason });
  }

  private onNewProducer(d: NewProducer): void {
    if (typeof d.producer_id !== 'string' || typeof d.connection_id !== 'string') return;
    if (d.connection_id === this.signaling.connectionId) return;
    if (this._state === 'joining') {
      if (!this.queue.some((q) => q.producer_id === d.producer_id)) this.queue.push(d);
      return;
    }
    if (this._state === 'joined') void this.consume(d);
  }

  private async consume(a: NewProducer): Promise<void> {
    const pid = a.producer_id;
    if (this.remotes.has(pid) || this.inflight.has(pid) || !this.recv) return;
    const gen = this.generation;
    const recv = this.recv;
    this.inflight.set(pid, a);
    const dropped = () => gen !== this.generation || this.endedInflight.has(pid);
    try {
      let paused = this.options.consumePaused === true;
      const ask = () => this.request('media:consume', {
        producer_id: pid, rtp_capabilities: this.device.rtpCapabilities, ...(paused ? { paused: true } : {}),
      });
      const r = await ask().catch((e) => {
        if (!paused || errorCode(e) !== 'unsupported') throw e;
        paused = false; // a server without paused consumers
        return ask();
      });
      if (dropped()) return; // the server drops it with its producer, peer or call
      const d = r.data as { id: string; producer_id: string; kind: MediaKind; rtp_parameters: RtpParameters; producer_paused?: boolean };
      if (d.producer_paused) this.pausedRemote.add(pid);
      const consumer = await recv.consume({
        id: d.id, producerId: d.producer_id, kind: d.kind, rtpParameters: d.rtp_parameters,
        appData: { source: a.source, userId: a.user_id, connectionId: a.connection_id },
      });
      if (dropped()) {
        consumer.close();
        return;
      }
      const info: RemoteTrack = {
        track: consumer.track, kind: consumer.kind, source: a.source ?? (consumer.kind === 'audio' ? 'mic' : 'webcam'),
        userId: a.user_id, connectionId: a.connection_id, producerId: pid, consumerId: consumer.id,
        pausedByMe: false, producerPaused: this.pausedRemote.has(pid),
      };
      this.remotes.set(pid, { info, consumer });
      this.emit('track', info);
      const l = this.layers.get(consumer.id); // came before the consumer was ready
      if (l) this.emit('layers_changed', { ...info, ...l });
      if (this.pausedRemote.has(pid)) {
        consumer.pause();
        this.emit('paused', info);
      }
      if (paused && !info.pausedByMe) await this.consumerRequest('media:consumer_resume', consumer.id);
    } catch (e) {
      if (!dropped()) this.emit('error', { op: 'consume', producerId: pid, error: e instanceof Error ? e : new Error(String(e)) });
    } finally {
      if (gen === this.generation) {
        this.inflight.delete(pid);
        this.endedInflight.delete(pid);
      }
    }
  }

  private endRemote(producerId: unknown, reason: RemoteEndReason): void {
    if (typeof producerId !== 'string') return;
    this.queue = this.queue.filter((q) => q.producer_id !== producerId);
    this.pausedRemote.delete(producerId);
    if (this.inflight.has(producerId)) this.endedInflight.add(producerId);
    const r = this.remotes.get(producerId);
    if (!r) return;
    this.remotes.delete(producerId);
    this.layers.delete(r.info.consumerId);
    r.consumer.close();
    this.emit('track_ended', { ...r.info, reason });
  }

  private onLayers(d: { consumer_id?: unknown; spatial_layer?: unknown; temporal_layer?: unknown }): void {
    if (typeof d.consumer_id !== 'string' || typeof d.spatial_layer !== 'number') return;
    const l = { spatialLayer: d.spatial_layer, temporalLayer: typeof d.temporal_layer === 'number' ? d.temporal_layer : 0 };
    this.layers.set(d.consumer_id, l);
    for (const r of this.remotes.values()) {
      if (r.info.consumerId === d.consumer_id) this.emit('layers_changed', { ...r.info, ...l });
    }
  }

  /**
   * media:set_preferred_layers: the highest layers wanted for a remote
   * video (its consumerId from 'track'); temporalLayer omitted: the highest.
   * The SFU may send less when this connection's bandwidth estimate is
   * short; 'layers_changed' tells what arrives. Rejects with the server's
   * error ('not_found' for an unknown consumer).
   */
  async setPreferredLayers(consumerId: string, spatialLayer: number, temporalLayer?: number): Promise<void> {
    if (this._state !== 'joined') throw new CallError('bad_state', `setPreferredLayers() needs a joined call (state ${this._state})`);
    const data: Record<string, unknown> = { consumer_id: consumerId, spatial_layer: spatialLayer };
    if (temporalLayer !== undefined) data['temporal_layer'] = temporalLayer;
    await this.request('media:set_preferred_layers', data);
  }

  private onPeerLeft(d: { user_id?: string; connection_id?: string }): void {
    const conn = d.connection_id;
    if (typeof conn !== 'string') return;
    this.queue = this.queue.filter((q) => q.connection_id !== conn);
    for (const [pid, a] of this.inflight) if (a.connection_id === conn) this.endedInflight.add(pid);
    for (const [pid, r] of [...this.remotes]) if (r.info.connectionId === conn) this.endRemote(pid, 'peer_left');
    this.dataQueue = this.dataQueue.filter((q) => q.connection_id !== conn);
    for (const [id, info] of [...this.dataAnnounced]) if (info.connectionId === conn) this.endDataRemote(id, 'peer_left');
    this.emit('peer_left', { userId: d.user_id ?? '', connectionId: conn });
  }

  private onPaused(producerId: unknown, paused: boolean): void {
    if (typeof producerId !== 'string') return;
    if (paused) this.pausedRemote.add(producerId);
    else this.pausedRemote.delete(producerId);
    const r = this.remotes.get(producerId);
    if (!r) return;
    r.info.producerPaused = paused;
    if (paused) r.consumer.pause();
    else if (!r.info.pausedByMe) r.consumer.resume();
    this.emit(paused ? 'paused' : 'resumed', r.info);
  }

  /** The call ended under me (room_closed, socket closed). */
  private end(reason: 'room_closed' | 'disconnected'): void {
    if (this._state !== 'joining' && this._state !== 'joined') return;
    this.teardown(reason);
    this._state = 'closed';
    this.emit('closed', { roomId: this.roomId, reason });
  }

  /** Closes everything local: consumers ('track_ended'), producers ('local_track_ended'), transports, subscriptions. */
  private teardown(reason: 'left' | 'room_closed' | 'disconnected'): void {
    this.generation++;
    for (const timer of this.iceTimers.values()) clearTimeout(timer);
    this.iceTimers.clear();
    this.iceRestarts.clear();
    for (const u of this.unsubs) u();
    this.unsubs = [];
    this.queue = [];
    this.inflight.clear();
    this.endedInflight.clear();
    this.pausedRemote.clear();
    for (const pid of [...this.remotes.keys()]) this.endRemote(pid, reason);
    this.dataQueue = [];
    for (const id of [...this.dataAnnounced.keys()]) this.endDataRemote(id, reason);
    for (const d of [...this.dataProducers.values()]) d.close();
    this.layers.clear();
    for (const p of [...this.producers.values()]) {
      this.producers.delete(p.id);
      const track = p.track;
      p.producer.close();
      this.emit('local_track_ended', { producerId: p.id, kind: p.kind, source: p.source, track, reason });
    }
    this.send?.close();
    this.recv?.close();
    this.send = null;
    this.recv = null;
  }

  /** media:leave, then closes every producer, consumer and transport of this call. */
  async leave(): Promise<void> {
    if (this._state === 'joining' && this.joinPromise) await this.joinPromise.catch(() => {});
    if (this._state !== 'joined') return;
    this.teardown('left');
    this._state = 'left';
    try {
      await this.request('media:leave', {});
    } catch (e) {
      const code = errorCode(e);
      if (code === 'not_found' || code === 'disconnected') return; // the call or the socket is gone: left all the same
      throw e;
    }
  }
}
