// Throwaway shim of Call (API.md "Calls"); see README.md.
/* eslint-disable */
import { Device } from 'mediasoup-client';
type Fn = (d: any) => void;
export class Call {
  private h = new Map<string, Set<Fn>>(); private device: any; private send: any; private recv: any; private offs: (() => void)[] = [];
  private consumers = new Map<string, any>(); private ready: Promise<void> | null = null;
  constructor(private c: any, private roomId: string, o: any = {}) { this.device = o.Device ? new o.Device() : new Device(); }
  on(t: string, fn: Fn) { if (!this.h.has(t)) this.h.set(t, new Set()); this.h.get(t)!.add(fn); return () => { this.h.get(t)?.delete(fn); }; }
  private emit(t: string, d: any) { for (const f of this.h.get(t) ?? []) f(d); }
  async join() {
    let caps: any;
    const queued: any[] = [];
    this.offs.push(this.c.on('media:router_capabilities', (d: any) => { caps = d.rtp_capabilities; }));
    this.offs.push(this.c.on('media:new_producer', (d: any) => { if (this.ready) this.ready.then(() => this.consume(d)); else queued.push(d); }));
    this.offs.push(this.c.on('media:producer_closed', (d: any) => { for (const [id, x] of this.consumers) if (x.producerId === d.producer_id) { x.close(); this.consumers.delete(id); this.emit('track_ended', { producerId: d.producer_id, consumerId: id, userId: d.user_id, connectionId: x.appData.connectionId }); } }));
    this.offs.push(this.c.on('media:peer_left', (d: any) => { for (const [id, x] of this.consumers) if (x.appData.connectionId === d.connection_id) { x.close(); this.consumers.delete(id); } this.emit('peer_left', { userId: d.user_id, connectionId: d.connection_id }); }));
    this.offs.push(this.c.on('media:active_speaker', (d: any) => this.emit('active_speaker', { producerId: d.producer_id, userId: d.user_id, connectionId: d.connection_id })));
    this.offs.push(this.c.on('media:room_closed', () => this.emit('closed', {})));
    let resolveReady!: () => void; this.ready = new Promise((r) => { resolveReady = r; });
    const tc = (await this.c.request('media:join', { room_id: this.roomId })).data;
    if (!this.device.loaded) await this.device.load({ routerRtpCapabilities: caps });
    const common = { iceServers: tc.ice_servers, iceTransportPolicy: tc.force_relay ? 'relay' : 'all' };
    this.send = this.device.createSendTransport({ ...tc.send_transport, ...common });
    this.recv = this.device.createRecvTransport({ ...tc.recv_transport, ...common });
    for (const t of [this.send, this.recv]) t.on('connect', ({ dtlsParameters }: any, cb: any, eb: any) => this.c.request('media:connect_transport', { room_id: this.roomId, transport_id: t.id, dtls_parameters: dtlsParameters }).then(() => cb(), eb));
    this.send.on('produce', ({ kind, rtpParameters, appData }: any, cb: any, eb: any) => this.c.request('media:produce', { room_id: this.roomId, transport_id: this.send.id, kind, rtp_parameters: rtpParameters, source: appData.source }).then((r: any) => cb({ id: r.data.id }), eb));
    resolveReady();
    for (const d of queued) this.consume(d);
  }
  private async consume(d: any) {
    const r = (await this.c.request('media:consume', { room_id: this.roomId, producer_id: d.producer_id, rtp_capabilities: this.device.rtpCapabilities })).data;
    const x = await this.recv.consume({ id: r.id, producerId: r.producer_id, kind: r.kind, rtpParameters: r.rtp_parameters, appData: { connectionId: d.connection_id } });
    this.consumers.set(x.id, x);
    this.emit('track', { track: x.track, kind: x.kind, source: d.source, userId: d.user_id, connectionId: d.connection_id, producerId: d.producer_id, consumerId: x.id });
  }
  async produce(track: MediaStreamTrack, o: any = {}) {
    const p = await this.send.produce({ track, encodings: o.encodings, appData: { source: o.source } });
    return { id: p.id, pause: () => p.pause(), resume: () => p.resume(), close: () => { p.close(); this.c.request('media:producer_close', { room_id: this.roomId, producer_id: p.id }).catch(() => {}); } };
  }
  async leave() { try { await this.c.request('media:leave', { room_id: this.roomId }); } finally { this.send?.close(); this.recv?.close(); for (const o of this.offs) o(); } }
}
