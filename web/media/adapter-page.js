// Bundle entry for the test/demo page: exposes the adapter and a small
// driver (window.parleyMedia) that browser tests call through page.evaluate.
import { ParleyMediaClient, ParleyError } from './adapter.js';

const state = { client: null, events: [], consumers: [], producers: {}, errors: [] };

// simulcast: produce video with three rid-based encodings (¼, ½, full
// resolution, lowest first); svc: produce VP9 with this scalabilityMode
// (e.g. 'L3T3_KEY': three spatial layers in one stream); width/height: the camera's; relay: send the
// receive transport through window.parleyRelay (a test's exposed function
// that returns the transport info to use).
async function start({ wsUrl, roomId, iceTransportPolicy, audio = true, video = true, simulcast = false, svc = '',
  width = 640, height = 360, relay = false, produce = true }) {
  const client = await ParleyMediaClient.connect(wsUrl);
  state.client = client;
  client.on('*', (data, msg) => {
    if (msg.type.startsWith('media:') || msg.type.startsWith('room:')) {
      state.events.push({ type: msg.type, data });
    }
  });
  const consumeIt = (producerId) => client.consume(producerId)
    .then((c) => {
      state.consumers.push({ id: c.id, producerId, kind: c.kind });
      const el = document.createElement(c.kind);
      el.autoplay = true; el.muted = true; el.playsInline = true;
      el.srcObject = new MediaStream([c.track]);
      el.dataset.producerId = producerId;
      document.body.appendChild(el);
    })
    .catch((e) => state.errors.push(`consume ${producerId}: ${e.message}`));
  client.on('media:new_producer', (d) => consumeIt(d.producer_id));
  client.on('media:producer_closed', (d) => client.closeConsumersOf(d.producer_id));
  await client.join(roomId, { iceTransportPolicy, mapRecvTransport: relay ? (info) => window.parleyRelay(info) : undefined });
  if (!produce || (!audio && !video)) return { producers: state.producers };
  const stream = await navigator.mediaDevices.getUserMedia({ audio, video: video && { width, height } });
  for (const track of stream.getTracks()) {
    const opts = { source: track.kind === 'audio' ? 'mic' : 'webcam' };
    if (track.kind === 'video' && simulcast) {
      opts.encodings = [
        { scaleResolutionDownBy: 4, maxBitrate: 150_000 },
        { scaleResolutionDownBy: 2, maxBitrate: 500_000 },
        { scaleResolutionDownBy: 1, maxBitrate: 1_200_000 },
      ];
    } else if (track.kind === 'video' && svc) {
      opts.codec = client.device.rtpCapabilities.codecs.find((c) => c.mimeType.toLowerCase() === 'video/vp9');
      if (!opts.codec) throw new Error('the router offers no VP9');
      opts.encodings = [{ scalabilityMode: svc, maxBitrate: 1_500_000 }];
    }
    const p = await client.produce(track, opts);
    state.producers[track.kind] = p.id;
  }
  return { producers: state.producers };
}

// Inbound RTP and selected candidate pair summaries from getStats().
async function stats() {
  const out = { inbound: [], pairs: [], outbound: [] };
  const c = state.client;
  if (!c) return out;
  for (const transport of [c.recvTransport, c.sendTransport]) {
    if (!transport || transport.closed) continue;
    const report = await transport.getStats();
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    report.forEach((s) => {
      if (s.type === 'inbound-rtp') {
        out.inbound.push({ kind: s.kind, ssrc: s.ssrc, bytesReceived: s.bytesReceived ?? 0,
          packetsReceived: s.packetsReceived ?? 0, framesDecoded: s.framesDecoded ?? 0,
          frameWidth: s.frameWidth ?? 0, frameHeight: s.frameHeight ?? 0, freezeCount: s.freezeCount ?? 0,
          packetsLost: s.packetsLost ?? 0, nackCount: s.nackCount ?? 0, packetsDiscarded: s.packetsDiscarded ?? 0,
          trackIdentifier: s.trackIdentifier });
      } else if (s.type === 'outbound-rtp') {
        out.outbound.push({ kind: s.kind, bytesSent: s.bytesSent ?? 0, rid: s.rid, frameWidth: s.frameWidth ?? 0,
          framesEncoded: s.framesEncoded ?? 0, qualityLimitationReason: s.qualityLimitationReason });
      } else if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
        const local = byId.get(s.localCandidateId);
        out.pairs.push({ direction: transport.direction, localType: local?.candidateType, remote: byId.get(s.remoteCandidateId)?.address });
      }
    });
  }
  return out;
}

async function closeProducer(kind) {
  const id = state.producers[kind];
  await state.client.closeProducer(id);
  return id;
}

async function setPreferredLayers(consumerId, spatial, temporal) {
  await state.client.setPreferredLayers(consumerId, spatial, temporal);
}

window.parleyMedia = { ParleyMediaClient, ParleyError, start, stats, closeProducer, setPreferredLayers, state };
