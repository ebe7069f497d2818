// Bundle entry for the calls test page (calls.html): the SDK's calls layer
// (web/client/src/calls.ts) over a tiny CallSignaling on a raw WebSocket,
// and a driver (window.parleyCalls) that test/browser/calls.mjs calls
// through page.evaluate.
import { Call, RTP_STREAM_ID_URI, supportsSimulcast, videoEncodings } from '../client/src/calls.ts';

// The smallest CallSignaling: the Parley envelope over one WebSocket.
// Every inbound frame type and every request's outcome is logged in order.
class WsSignaling {
  static open(url, log) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      const sig = new WsSignaling(ws, log);
      ws.addEventListener('error', () => reject(new Error(`WebSocket to ${url} failed`)));
      sig.on('connected', () => resolve(sig));
    });
  }

  constructor(ws, log) {
    this.ws = ws;
    this.log = log;
    this.connectionId = null;
    this.nextId = 0;
    this.pending = new Map();
    this.handlers = new Map();
    ws.addEventListener('message', (ev) => this.onFrame(ev.data));
    ws.addEventListener('close', (ev) => {
      for (const p of this.pending.values()) {
        clearTimeout(p.timer);
        p.reject(Object.assign(new Error('disconnected'), { code: 'disconnected' }));
      }
      this.pending.clear();
      this.dispatch('disconnected', { code: ev.code, reason: ev.reason, willReconnect: false });
    });
  }

  onFrame(raw) {
    let msg;
    try { msg = JSON.parse(raw); } catch { return; }
    if (msg.type === 'connected') this.connectionId = msg.data.connection_id;
    this.log.push({ frame: msg.type, id: msg.id, producer_id: msg.data?.producer_id, connection_id: msg.data?.connection_id, paused: msg.data?.paused });
    const p = msg.id ? this.pending.get(msg.id) : undefined;
    if (p) {
      this.pending.delete(msg.id);
      clearTimeout(p.timer);
      this.log.push({ reply: p.type, type: msg.type, code: msg.data?.code });
      if (msg.type === 'error') {
        p.reject(Object.assign(new Error(`${msg.data?.code}: ${msg.data?.message}`), { code: msg.data?.code }));
      } else {
        p.resolve(msg);
      }
    }
    this.dispatch(msg.type, msg.data);
  }

  dispatch(type, data) {
    for (const fn of [...(this.handlers.get(type) ?? [])]) {
      try { fn(data); } catch (e) { console.error('handler', type, e); }
    }
  }

  request(type, data, { timeoutMs = 15000 } = {}) {
    const id = `c${++this.nextId}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(Object.assign(new Error(`${type}: timeout`), { code: 'timeout' }));
      }, timeoutMs);
      this.pending.set(id, { type, resolve, reject, timer });
      this.ws.send(JSON.stringify({ type, id, data }));
    });
  }

  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(fn);
    return () => this.handlers.get(type)?.delete(fn);
  }
}

const state = { sig: null, call: null, log: [], events: [], errors: [], producers: {}, dataProducers: {}, data: [] };
const tiles = () => document.getElementById('tiles');
const short = (s) => (s ?? '').slice(0, 8);

async function connect({ wsUrl, name }) {
  document.title = `Parley calls: ${name}`;
  document.getElementById('status').textContent = `page ${name}`;
  state.sig = await WsSignaling.open(wsUrl, state.log);
  return state.sig.connectionId;
}

// join({roomId, slowLoadMs}): slowLoadMs delays device.load so that the
// media:new_producer frames that follow the join reply surely arrive before
// the receive transport exists (they must be buffered, not lost).
async function join({ roomId, iceTransportPolicy, slowLoadMs = 0, consumePaused = false }) {
  const call = new Call(state.sig, roomId, { iceTransportPolicy, consumePaused });
  if (slowLoadMs > 0) {
    const load = call.device.load.bind(call.device);
    call.device.load = async (o) => { await new Promise((r) => setTimeout(r, slowLoadMs)); return load(o); };
  }
  state.call = call;
  const record = (ev, d) => state.events.push({
    ev, producerId: d.producerId, consumerId: d.consumerId, connectionId: d.connectionId, userId: d.userId,
    kind: d.kind, source: d.source, reason: d.reason, state: d.state, direction: d.direction, local: d.local, automatic: d.automatic,
    dataProducerId: d.dataProducerId, label: d.label, protocol: d.protocol,
    spatialLayer: d.spatialLayer, temporalLayer: d.temporalLayer,
  });
  for (const ev of ['track_ended', 'peer_left', 'active_speaker', 'paused', 'resumed', 'closed', 'local_track_ended', 'connection_state',
    'data_producer', 'data_producer_ended', 'ice_restarted', 'layers_changed']) {
    call.on(ev, (d) => record(ev, d));
  }
  call.on('error', (d) => state.errors.push(`${d.op} ${d.producerId}: ${d.error.message}`));
  // Data messages: strings kept as they are, binary as size + checksum.
  call.on('data', (d) => state.data.push({
    dataProducerId: d.dataProducerId, userId: d.userId, connectionId: d.connectionId, label: d.label, protocol: d.protocol,
    ...(typeof d.data === 'string' ? { type: 'string', text: d.data } : { type: 'binary', ...digest(new Uint8Array(d.data)) }),
  }));
  call.on('track', (d) => {
    record('track', d);
    const fig = document.createElement('figure');
    fig.dataset.producerId = d.producerId;
    const el = document.createElement(d.kind === 'video' ? 'video' : 'audio');
    el.autoplay = true; el.muted = true; el.playsInline = true; el.controls = d.kind === 'audio';
    el.srcObject = new MediaStream([d.track]);
    el.dataset.producerId = d.producerId;
    el.dataset.connectionId = d.connectionId;
    fig.appendChild(el);
    const cap = document.createElement('figcaption');
    cap.textContent = `${d.kind} ${d.source} from ${d.userId} (${short(d.connectionId)})`;
    fig.appendChild(cap);
    tiles().appendChild(fig);
  });
  call.on('track_ended', (d) => tiles().querySelector(`figure[data-producer-id="${d.producerId}"]`)?.remove());
  state.log.push({ mark: 'join_called' });
  await call.join();
  state.log.push({ mark: 'join_resolved' });
  return { connectionId: state.sig.connectionId, simulcast: call.simulcast };
}

// produce({audio, video, codec, encodings, width, height}): codec and
// encodings (e.g. VP9 SVC) apply to the video track.
async function produce({ audio = true, video = true, codec, encodings, width = 640, height = 360 } = {}) {
  const stream = await navigator.mediaDevices.getUserMedia({ audio, video: video && { width, height } });
  for (const track of stream.getTracks()) {
    const extra = track.kind === 'video' ? { ...(codec ? { codec } : {}), ...(encodings ? { encodings } : {}) } : {};
    const p = await state.call.produce(track, { source: track.kind === 'audio' ? 'mic' : 'webcam', ...extra });
    state.producers[track.kind] = p;
  }
  const out = Object.fromEntries(Object.entries(state.producers).map(([k, p]) => [k, p.id]));
  // How many encodings the video producer sends: >1 only with router rid support.
  if (state.producers.video) out.videoLayers = state.producers.video.producer.rtpParameters.encodings.length;
  return out;
}

// What this page receives: one entry per remote track, with playback and
// decoder evidence for video.
async function inspect() {
  const call = state.call;
  let inboundVideoFrames = 0;
  if (call?.recvTransport && !call.recvTransport.closed) {
    const report = await call.recvTransport.getStats();
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') inboundVideoFrames += s.framesDecoded ?? 0;
    });
  }
  const tracks = [];
  for (const t of call?.remoteTracks ?? []) {
    const el = document.querySelector(`[data-producer-id="${t.producerId}"]:is(video,audio)`);
    const entry = { kind: t.kind, source: t.source, userId: t.userId, connectionId: t.connectionId,
      producerId: t.producerId, readyState: t.track.readyState };
    if (t.kind === 'video' && el) {
      entry.videoWidth = el.videoWidth;
      entry.videoHeight = el.videoHeight;
      entry.framesShown = el.getVideoPlaybackQuality?.().totalVideoFrames ?? 0;
      entry.currentTime = el.currentTime;
    }
    tracks.push(entry);
  }
  return {
    state: call?.state, tracks, inboundVideoFrames, errors: state.errors,
    sendClosed: call?.sendTransport ? call.sendTransport.closed : null,
    recvClosed: call?.recvTransport ? call.recvTransport.closed : null,
    localProducers: (call?.localProducers ?? []).map((p) => ({ id: p.id, kind: p.kind, paused: p.paused, closed: p.closed })),
  };
}

// produceTone({gain, video}): an audio producer from a WebAudio oscillator
// whose loudness setGain() changes (0: silence), plus the fake camera when
// video. The audio level header extension then follows the gain.
async function produceTone({ gain = 0.5, video = false } = {}) {
  const ctx = new AudioContext();
  await ctx.resume();
  const osc = ctx.createOscillator();
  osc.frequency.value = 440;
  const g = ctx.createGain();
  g.gain.value = gain;
  const dest = ctx.createMediaStreamDestination();
  osc.connect(g).connect(dest);
  osc.start();
  state.tone = { ctx, gain: g };
  const out = {};
  const audio = await state.call.produce(dest.stream.getAudioTracks()[0], { source: 'mic' });
  state.producers.audio = audio;
  out.audio = audio.id;
  if (video) {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360 } });
    const cam = await state.call.produce(stream.getVideoTracks()[0], { source: 'webcam' });
    state.producers.video = cam;
    out.video = cam.id;
  }
  return out;
}

function setGain(gain) {
  state.tone.gain.gain.value = gain;
  return gain;
}

// The inbound stream of the remote track of producerId: decoder and byte counts.
async function inbound(producerId) {
  const call = state.call;
  const t = call.remoteTracks.find((r) => r.producerId === producerId);
  if (!t || !call.recvTransport) return null;
  const report = await call.recvTransport.getStats();
  let out = null;
  report.forEach((s) => {
    if (s.type === 'inbound-rtp' && s.trackIdentifier === t.track.id) {
      out = { framesDecoded: s.framesDecoded ?? 0, bytesReceived: s.bytesReceived ?? 0, packetsReceived: s.packetsReceived ?? 0 };
    }
  });
  return out && { ...out, producerPaused: t.producerPaused, pausedByMe: t.pausedByMe, enabled: t.track.enabled };
}

async function remoteOp({ producerId, op }) {
  if (op === 'pause') await state.call.pauseRemote(producerId);
  else await state.call.resumeRemote(producerId);
  const t = state.call.remoteTracks.find((r) => r.producerId === producerId);
  return { pausedByMe: t.pausedByMe, producerPaused: t.producerPaused };
}

// The browser's ICE view of one transport: its local ufrag (the selected
// pair's local candidate) and connection state.
async function iceInfo(direction) {
  const t = direction === 'send' ? state.call.sendTransport : state.call.recvTransport;
  const report = await t.getStats();
  let pairId = null;
  let ufrag = null;
  report.forEach((s) => {
    if (s.type === 'transport') {
      pairId = s.selectedCandidatePairId ?? pairId;
      ufrag = s.iceLocalUsernameFragment ?? ufrag;
    }
  });
  if (!ufrag && pairId) {
    const pair = report.get(pairId);
    const local = pair && report.get(pair.localCandidateId);
    ufrag = local?.usernameFragment ?? null;
  }
  return { ufrag, state: t.connectionState };
}

async function restartIce(direction) {
  await state.call.restartIce(direction);
  return iceInfo(direction);
}

async function serverStats(filter = {}) {
  return state.call.getStats(filter);
}

async function producerOp({ kind, op }) {
  const p = state.producers[kind];
  await p[op]();
  return { id: p.id, paused: p.paused, closed: p.closed };
}

// Binary test payloads: byte i is (i * 7 + seed) & 255; digest() checks them.
function pattern(size, seed) {
  const b = new Uint8Array(size);
  for (let i = 0; i < size; i++) b[i] = (i * 7 + seed) & 255;
  return b;
}

function digest(b) {
  let sum = 0;
  for (let i = 0; i < b.length; i++) sum = (sum * 31 + b[i]) >>> 0;
  return { size: b.length, sum };
}

async function produceData(opts) {
  const p = await state.call.produceData(opts);
  state.dataProducers[opts.label] = p;
  return { id: p.id, label: p.label, protocol: p.protocol, readyState: p.readyState, sctpStreamParameters: p.sctpStreamParameters };
}

// sendData({label, text}) sends a string; sendData({label, size, seed}) a
// binary pattern (as an ArrayBuffer or, view: true, a Uint8Array). It
// returns the binary's digest, or the error code when send() throws.
function sendData({ label, text, size, seed = 0, view = false }) {
  const p = state.dataProducers[label];
  try {
    if (text !== undefined) {
      p.send(text);
      return { ok: true };
    }
    const b = pattern(size, seed);
    p.send(view ? b : b.buffer);
    return { ok: true, ...digest(b) };
  } catch (e) {
    return { ok: false, code: e.code, message: e.message };
  }
}

function closeData(label) {
  state.dataProducers[label].close();
  return state.call.localDataProducers.map((p) => p.id);
}

function dataState() {
  const call = state.call;
  return {
    dataChannels: call?.dataChannels, remote: call?.remoteDataProducers ?? [], received: state.data,
    local: (call?.localDataProducers ?? []).map((p) => ({ id: p.id, label: p.label, readyState: p.readyState })),
    errors: state.errors,
  };
}

async function leave() {
  await state.call.leave();
  return state.call.state;
}

// The simulcast choice for a router with / without the rtp-stream-id extension.
function encodingsFor(height, withRid) {
  const headerExtensions = [{ kind: 'video', uri: 'urn:ietf:params:rtp-hdrext:sdes:mid', preferredId: 1 }];
  if (withRid) headerExtensions.push({ kind: 'video', uri: RTP_STREAM_ID_URI, preferredId: 10 });
  const caps = { codecs: [], headerExtensions };
  return { simulcast: supportsSimulcast(caps), encodings: videoEncodings(caps, height) ?? null };
}

window.parleyCalls = {
  Call, supportsSimulcast, encodingsFor, videoEncodings, connect, join, produce, inspect, producerOp, leave, state,
  produceTone, setGain, inbound, remoteOp, iceInfo, restartIce, serverStats,
  produceData, sendData, closeData, dataState,
};
