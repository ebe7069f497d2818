// Parley media adapter: mediasoup-client on top of the Parley WebSocket
// envelope ({type, id?, data?}), PROTOCOL.md section 6. It knows nothing of
// the server behind the WebSocket; give it an open WebSocket (or a URL).
//
//   const client = await ParleyMediaClient.connect(url);
//   client.on('media:new_producer', (d) => client.consume(d.producer_id));
//   await client.join(roomId);
//   const producer = await client.produce(track, { source: 'webcam' });
import { Device } from 'mediasoup-client';

let nextId = 0;

export class ParleyError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
  }
}

export class ParleyMediaClient {
  /** Opens a WebSocket to url and resolves once it is open. */
  static connect(url, { WebSocketImpl = globalThis.WebSocket } = {}) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocketImpl(url);
      ws.onopen = () => resolve(new ParleyMediaClient(ws));
      ws.onerror = () => reject(new Error(`WebSocket to ${url} failed`));
    });
  }

  constructor(ws, { device, timeoutMs = 15000 } = {}) {
    this.ws = ws;
    this.timeoutMs = timeoutMs;
    this.device = device ?? new Device();
    this.pending = new Map();
    this.listeners = new Map();
    this.roomId = null;
    this.sendTransport = null;
    this.recvTransport = null;
    this.consumers = new Map(); // consumer id → consumer
    this.producers = new Map(); // producer id → producer
    this.routerCapabilities = null;
    ws.addEventListener('message', (ev) => this._onMessage(ev.data));
    ws.addEventListener('close', () => {
      for (const { reject } of this.pending.values()) reject(new Error('WebSocket closed'));
      this.pending.clear();
      this._emit('close', {});
    });
  }

  /** Registers fn for a message type (e.g. 'media:new_producer'), or '*' for all. */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, []);
    this.listeners.get(type).push(fn);
    return () => this.listeners.set(type, this.listeners.get(type).filter((f) => f !== fn));
  }

  _emit(type, data, msg) {
    for (const fn of this.listeners.get(type) ?? []) fn(data, msg);
    for (const fn of this.listeners.get('*') ?? []) fn(data, msg ?? { type, data });
  }

  _onMessage(raw) {
    let msg;
    try { msg = JSON.parse(raw); } catch { return; }
    if (msg.type === 'media:router_capabilities') {
      this.routerCapabilities = msg.data.rtp_capabilities;
    }
    if (msg.id && this.pending.has(msg.id)) {
      const { resolve, reject, timer } = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      clearTimeout(timer);
      if (msg.type === 'error') reject(new ParleyError(msg.data?.code, msg.data?.message));
      else resolve(msg);
    }
    this._emit(msg.type, msg.data, msg);
  }

  /** Sends {type, id, data} and resolves with the reply envelope carrying that id. */
  request(type, data) {
    const id = `m${++nextId}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${type}: no reply within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ type, id, data }));
    });
  }

  /** media:join, loads the device and creates both transports. */
  join(roomId, options = {}) {
    this.roomId = roomId;
    // media:new_producer frames follow the join reply at once: consume()
    // waits for this promise (device loaded, transports created).
    this.joined = this._join(roomId, options);
    return this.joined;
  }

  // options.mapRecvTransport (tests): async (transportInfo) => transportInfo,
  // e.g. to send the receive transport through a relay.
  async _join(roomId, { iceTransportPolicy, mapRecvTransport } = {}) {
    const reply = await this.request('media:join', { room_id: roomId });
    const tc = reply.data;
    if (!this.device.loaded) {
      await this.device.load({ routerRtpCapabilities: this.routerCapabilities });
    }
    const policy = iceTransportPolicy ?? (tc.force_relay ? 'relay' : 'all');
    const common = { iceServers: tc.ice_servers, iceTransportPolicy: policy };
    const recvInfo = mapRecvTransport ? await mapRecvTransport(tc.recv_transport) : tc.recv_transport;
    this.sendTransport = this.device.createSendTransport({ ...tc.send_transport, ...common });
    this.recvTransport = this.device.createRecvTransport({ ...recvInfo, ...common });
    for (const transport of [this.sendTransport, this.recvTransport]) {
      transport.on('connect', ({ dtlsParameters }, callback, errback) => {
        this.request('media:connect_transport', {
          room_id: roomId, transport_id: transport.id, dtls_parameters: dtlsParameters,
        }).then(() => callback(), errback);
      });
    }
    this.sendTransport.on('produce', ({ kind, rtpParameters, appData }, callback, errback) => {
      const data = { room_id: roomId, transport_id: this.sendTransport.id, kind, rtp_parameters: rtpParameters };
      if (appData?.source) data.source = appData.source;
      this.request('media:produce', data).then((r) => callback({ id: r.data.id }), errback);
    });
    return tc;
  }

  /** Produces a track; options.source ('mic', 'webcam', 'screen', ...) is echoed to others. */
  async produce(track, { source, ...options } = {}) {
    const producer = await this.sendTransport.produce({ track, ...options, appData: { source } });
    this.producers.set(producer.id, producer);
    return producer;
  }

  /** Consumes another connection's producer. */
  async consume(producerId) {
    if (!this.joined) throw new Error('join() first');
    await this.joined;
    const reply = await this.request('media:consume', {
      room_id: this.roomId, producer_id: producerId, rtp_capabilities: this.device.rtpCapabilities,
    });
    const d = reply.data;
    const consumer = await this.recvTransport.consume({
      id: d.id, producerId: d.producer_id, kind: d.kind, rtpParameters: d.rtp_parameters,
    });
    this.consumers.set(consumer.id, consumer);
    return consumer;
  }

  /** Closes one of this connection's producers (others get media:producer_closed). */
  async closeProducer(producerId) {
    this.producers.get(producerId)?.close();
    this.producers.delete(producerId);
    await this.request('media:producer_close', { room_id: this.roomId, producer_id: producerId });
  }

  /** media:set_preferred_layers: the highest layers wanted for one of my consumers (temporal: highest when omitted). */
  async setPreferredLayers(consumerId, spatialLayer, temporalLayer) {
    const data = { room_id: this.roomId, consumer_id: consumerId, spatial_layer: spatialLayer };
    if (temporalLayer !== undefined) data.temporal_layer = temporalLayer;
    await this.request('media:set_preferred_layers', data);
  }

  /** Closes local consumers of a producer (on media:producer_closed). */
  closeConsumersOf(producerId) {
    for (const [id, c] of this.consumers) {
      if (c.producerId === producerId) { c.close(); this.consumers.delete(id); }
    }
  }

  /** media:leave; closes transports. */
  async leave() {
    await this.request('media:leave', { room_id: this.roomId });
    this.sendTransport?.close();
    this.recvTransport?.close();
  }
}
