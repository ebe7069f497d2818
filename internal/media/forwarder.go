package media

// forwarder is one consumer's view of its producer: which layer it
// forwards (one spatial layer at a time, and a temporal ceiling for VP8)
// and the rewriting ("munging") of sequence numbers, timestamps and VP8
// picture ids/TL0PICIDX so that the consumer sees one continuous stream
// across layer switches, dropped temporal layers and resyncs (resume):
//
//   - out seq = src seq − snOffset, out ts = src ts − tsOffset, out picture
//     id = src picture id − pidOffset, out TL0PICIDX = src − tl0Offset.
//   - On a switch (always on a key frame of the new layer) or a resync the
//     offsets are re-anchored so that the first packet gets last seq + 1,
//     the next picture id and TL0PICIDX, and a timestamp that continues from
//     the last one sent by the time that passed: mapped through both
//     layers' sender reports (NTP ↔ RTP) when the producer sent them, else
//     by the wall-clock time since the last packet forwarded.
//   - A dropped packet (temporal layer above the ceiling) shifts the later
//     packets down by one (snOffset+1, and pidOffset+1 per dropped frame).
//     offs keeps the offsets in force from each source seq on, so a late
//     packet (the producer's retransmission of a loss) is rewritten with the
//     offsets of its place in the stream.
//   - Every packet sent is recorded in a ring by out seq (sequencer): a
//     consumer NACK is mapped back to (layer, source seq) and answered from
//     that layer's packet history with the same rewritten fields.
//
// Guarded by consumer.fmu; translate runs on the producer's read
// goroutine, setTarget on the allocator's, retransmit on the consumer
// transport's.
type forwarder struct {
	video     bool
	simulcast bool // more than one spatial layer: start and switch on key frames
	svc       bool // VP9 SVC: the spatial layers share one stream (translateSVC)
	ksvc      bool // K-SVC: layers depend on each other only at key frames
	clock     uint32

	started  bool
	resync   bool  // re-anchor on the next key frame (video) or packet (audio)
	resyncAt int64 // when resync was asked (mono ns)
	cur      int   // spatial layer forwarded; -1: none yet
	target   int   // spatial layer wanted (allocator)
	curT     int   // temporal ceiling in force
	targetT  int   // temporal ceiling wanted
	askedAt  int64 // last key-frame request for a pending switch (mono ns)

	highest   uint16 // highest source seq of cur seen in order
	snOffset  uint16
	tsOffset  uint32
	pidOffset uint16 // 15-bit arithmetic
	tl0Offset uint8
	lastSN    uint16
	lastTS    uint32
	lastAt    int64 // mono ns of the last packet forwarded in order
	lastPID   uint16
	lastTL0   uint8
	havePID   bool
	haveTL0   bool
	dropPID   int32 // picture id of the frame being dropped; -1: none

	offs  [offHistory]offEntry // ring, newest at offN-1
	offN  int
	seqr  []seqEntry // nil for audio (no NACK)
	layer layerState // last reported to the client (simulcast or temporal layers)
}

const (
	offHistory = 32
	seqrSize   = 1024
	// A pending switch re-asks the producer for a key frame this often.
	keyRetry = int64(1000e6)
	// A single-layer stream that waits for a key frame after a resync
	// (resume) starts anyway after this long (key frame detection is best
	// effort for H264).
	resyncGiveUp = int64(1500e6)
	// maxTemporal is the number of temporal layers tracked (VP8 TID 0..3).
	maxTemporal = 4
)

type offEntry struct {
	from uint16 // first source seq these offsets apply to
	sn   uint16
	pid  uint16
}

type seqEntry struct {
	valid  bool
	layer  int8 // the producer's stream (encoding) it came from
	patch  bool // VP8 fields to rewrite
	marker bool // sent with the marker bit set (VP9 SVC: ends the picture for this consumer)
	tl0    uint8
	out    uint16
	src    uint16
	pid    uint16
	rtxN   uint8 // retransmissions so far
	ts     uint32
	at     uint32 // ms (monoNow) it was sent
	rtxAt  uint32 // ms of the last retransmission
}

// Retransmission limits (per packet and consumer): NACKed packets are
// resent at most maxRTX times, not twice within rtxGap, and not when older
// than rtxMaxAge; a congested receiver's NACKs would otherwise multiply
// what its link has to carry.
const (
	maxRTX    = 3
	rtxGap    = 100  // ms
	rtxMaxAge = 1500 // ms
)

// layerState is what media:consumer_layers_changed reports.
type layerState struct{ spatial, temporal int }

// translated is the outcome of one packet.
type translated struct {
	seq      uint16
	ts       uint32
	pid      uint16
	tl0      uint8
	patch    bool // rewrite the VP8 descriptor
	marker   bool // set the RTP marker bit (VP9 SVC: the last packet of the highest layer forwarded)
	send     bool
	askKey   int // layer to request a key frame of; -1: none
	changed  bool
	layers   layerState
	anchored bool // started, switched or resynced: wantMask changed
}

// wantMask is the set of spatial layers whose packets translate may use:
// every layer up to the target while starting or resyncing, else the
// current and the target one. The consumer keeps a copy (consumer.want) so
// that packets of other layers skip the lock.
func (f *forwarder) wantMask() uint32 {
	if f.svc {
		return ^uint32(0) // one stream: every packet moves the numbering
	}
	if !f.started || f.resync || f.cur < 0 {
		return 1<<(f.target+1) - 1
	}
	return 1<<f.cur | 1<<f.target
}

func newForwarder(video bool, layers int, clock uint32) *forwarder {
	f := &forwarder{video: video, simulcast: layers > 1, clock: clock, cur: -1, target: layers - 1,
		curT: maxTemporal - 1, targetT: maxTemporal - 1, dropPID: -1, layer: layerState{-1, -1}}
	if video {
		f.seqr = make([]seqEntry, seqrSize)
	}
	return f
}

// forwarderFor is a new consumer's forwarder of producer p.
func forwarderFor(p *producer, clock uint32) *forwarder {
	if p.svc > 1 {
		f := newForwarder(p.kind == kindVideo, 1, clock)
		f.svc, f.ksvc, f.target = true, p.ksvc, p.svc-1
		return f
	}
	return newForwarder(p.kind == kindVideo, len(p.layers), clock)
}

// setTarget sets the layers wanted; it returns the layer to request a key
// frame of (a new spatial target), or -1.
func (f *forwarder) setTarget(spatial, temporal int, now int64) int {
	f.targetT = temporal
	if spatial == f.target {
		return -1
	}
	f.target = spatial
	if f.svc && !f.ksvc && f.started && spatial < f.cur {
		return -1 // full SVC goes down at the end of a layer frame (translateSVC)
	}
	if spatial != f.cur {
		f.askedAt = now
		return spatial
	}
	return -1
}

// restart makes the stream re-anchor on the next key frame (video) or
// packet (audio) as after a switch: sequence numbers and timestamps go on
// from the last ones sent. For resume after a pause.
func (f *forwarder) restart(now int64) {
	if f.started {
		f.resync, f.resyncAt, f.askedAt = true, now, now
	}
}

// translate decides whether pkt (source seq, ts) of layer in.layer is
// forwarded and with which rewritten fields. sr maps a layer's RTP time to
// NTP (from its sender reports) for timestamp continuity on switches.
func (f *forwarder) translate(seq uint16, ts uint32, in *pktInfo, now int64, sr srMapper) (o translated) {
	if f.svc {
		return f.translateSVC(seq, ts, in, now)
	}
	o.askKey = -1
	l := int(in.layer)
	switch {
	case !f.started || f.resync || f.cur < 0:
		// Start (or restart) on the first packet of a layer up to the target;
		// a simulcast stream or a resync waits for a key frame.
		if l > f.target {
			return o
		}
		if f.video && (f.simulcast || f.resync) && !in.keyframe {
			if !f.simulcast && f.resync && now-f.resyncAt > resyncGiveUp && (in.frameStart || in.vp8.pidLen == 0) {
				break // give up waiting for a key frame we may not recognise
			}
			f.retryKey(now, &o)
			return o
		}
		f.anchor(seq, ts, l, in, now, sr)
		o.anchored = true
	case l != f.cur:
		if l == f.target && in.keyframe {
			f.anchor(seq, ts, l, in, now, sr)
			o.anchored = true
			break
		}
		if f.target != f.cur {
			f.retryKey(now, &o)
		}
		return o
	}
	d := int16(seq - f.highest)
	if d > 0 {
		if in.frameStart || in.keyframe {
			f.stepTemporal(in)
		}
		f.highest = seq
		if in.tid > int8(f.curT) {
			// Dropped: everything after it moves down by one packet (and one
			// picture id per dropped frame).
			f.snOffset++
			if in.vp8.pidLen > 0 && int32(in.vp8.pid) != f.dropPID {
				f.pidOffset = (f.pidOffset + 1) & 0x7fff
				f.dropPID = int32(in.vp8.pid)
			}
			f.pushOff(seq + 1)
			return o
		}
		o.seq, o.ts = seq-f.snOffset, ts-f.tsOffset
		f.lastSN, f.lastTS, f.lastAt = o.seq, o.ts, now
		f.vp8Out(in, f.pidOffset, &o, true)
	} else {
		if d == 0 || in.tid > int8(f.curT) {
			return o
		}
		e, ok := f.offAt(seq)
		if !ok {
			return o // from before the switch point: another stream for the receiver
		}
		o.seq, o.ts = seq-e.sn, ts-f.tsOffset
		f.vp8Out(in, e.pid, &o, false)
	}
	f.sent(seq, in, &o, now, f.video && (f.simulcast || in.maxTID > 0))
	return o
}

// sent completes o for a packet that goes out: it records it by its
// output sequence number (for NACKs) and, when report, notes a change of
// the layers the consumer receives (media:consumer_layers_changed).
func (f *forwarder) sent(src uint16, in *pktInfo, o *translated, now int64, report bool) {
	o.send = true
	if f.seqr != nil {
		f.seqr[o.seq%seqrSize] = seqEntry{valid: true, layer: in.stream, patch: o.patch, marker: o.marker, tl0: o.tl0,
			out: o.seq, src: src, pid: o.pid, ts: o.ts, at: uint32(now / 1e6)}
	}
	if !report {
		return
	}
	if ls := (layerState{f.cur, min(f.curT, int(max(in.maxTID, 0)))}); ls != f.layer {
		f.layer, o.changed, o.layers = ls, true, ls
	}
}

// retryKey asks (in o) for a key frame of the target layer again when the
// last request is more than keyRetry old.
func (f *forwarder) retryKey(now int64, o *translated) {
	if now-f.askedAt > keyRetry {
		f.askedAt = now
		o.askKey = f.target
	}
}

// translateSVC is translate for a VP9 SVC stream (the model is
// mediasoup's VP9 PayloadDescriptorHandler::Process): the consumer
// receives every spatial layer up to cur (K-SVC: only cur, and the lower
// ones in key pictures) and temporal layers up to curT, from one stream
// whose numbering continues across everything dropped (snOffset, as for
// temporal layers). Start and resync wait for a key picture; going up
// switches at a key picture; going down switches at the next key picture
// in K-SVC, at the end of the target layer's frame in full SVC. The last
// packet of the highest layer forwarded in each picture gets the marker
// bit, as the sender's last packet of the picture has it (RFC 9628 4.1).
func (f *forwarder) translateSVC(seq uint16, ts uint32, in *pktInfo, now int64) (o translated) {
	o.askKey = -1
	l := int(in.layer)
	if !f.started || f.resync || f.cur < 0 {
		if !in.keyframe {
			f.retryKey(now, &o)
			return o
		}
		f.anchor(seq, ts, f.target, in, now, nil)
		o.anchored = true
	}
	d := int16(seq - f.highest)
	if d > 0 {
		switch {
		case f.target > f.cur && in.keyframe:
			f.cur = f.target
		case f.target < f.cur && f.ksvc && in.keyframe:
			f.cur = f.target
		case f.target < f.cur && !f.ksvc && l == f.target && in.layerEnd:
			f.cur = f.target
		case f.target != f.cur && (f.ksvc || f.target > f.cur):
			f.retryKey(now, &o)
		}
		if in.frameStart {
			f.stepTemporal(in)
		}
		f.highest = seq
		if f.svcDrops(in) {
			f.snOffset++
			f.pushOff(seq + 1)
			return o
		}
		o.seq, o.ts = seq-f.snOffset, ts-f.tsOffset
		f.lastSN, f.lastTS, f.lastAt = o.seq, o.ts, now
	} else {
		if d == 0 || f.svcDrops(in) {
			return o
		}
		e, ok := f.offAt(seq)
		if !ok {
			return o
		}
		o.seq, o.ts = seq-e.sn, ts-f.tsOffset
	}
	o.marker = l == f.cur && in.layerEnd
	f.sent(seq, in, &o, now, true)
	return o
}

// svcDrops reports whether an SVC packet is above what the consumer
// receives: a higher spatial layer, a lower one's inter-picture frame in
// K-SVC (the layer received no longer references it), or a temporal
// layer above the ceiling.
func (f *forwarder) svcDrops(in *pktInfo) bool {
	l := int(in.layer)
	return l > f.cur || (f.ksvc && in.inter && l != f.cur) || in.tid > int8(f.curT)
}

// stepTemporal applies a new temporal ceiling at a frame start: down at
// once, up at a base-layer (TID 0) frame, which later frames of every
// layer may reference.
func (f *forwarder) stepTemporal(in *pktInfo) {
	switch {
	case f.targetT < f.curT:
		f.curT = f.targetT
	case f.targetT > f.curT && in.tid <= 0:
		f.curT = f.targetT
	}
}

// vp8Out computes the rewritten VP8 fields of an outgoing packet.
func (f *forwarder) vp8Out(in *pktInfo, pidOffset uint16, o *translated, inOrder bool) {
	d := &in.vp8
	if d.pidLen == 0 && d.tl0Off == 0 {
		return
	}
	o.patch = true
	if d.pidLen > 0 {
		o.pid = (d.pid - pidOffset) & 0x7fff
		if d.pidLen == 1 {
			o.pid &= 0x7f
		}
	}
	if d.tl0Off != 0 {
		o.tl0 = d.tl0 - f.tl0Offset
	}
	if inOrder {
		if d.pidLen > 0 {
			f.lastPID, f.havePID = o.pid, true
		}
		if d.tl0Off != 0 {
			f.lastTL0, f.haveTL0 = o.tl0, true
		}
	}
}

// anchor re-bases the offsets on packet (seq, ts) of layer l.
func (f *forwarder) anchor(seq uint16, ts uint32, l int, in *pktInfo, now int64, sr srMapper) {
	if !f.started {
		// The first layer keeps its own numbering.
		f.snOffset, f.tsOffset, f.pidOffset, f.tl0Offset = 0, 0, 0, 0
		f.started = true
	} else {
		f.snOffset = seq - (f.lastSN + 1)
		next := f.nextTS(ts, l, now, sr)
		f.tsOffset = ts - next
		if in.vp8.pidLen > 0 && f.havePID {
			f.pidOffset = (in.vp8.pid - (f.lastPID + 1)) & 0x7fff
		}
		if in.vp8.tl0Off != 0 && f.haveTL0 {
			f.tl0Offset = in.vp8.tl0 - (f.lastTL0 + 1)
		}
	}
	f.cur, f.resync, f.highest, f.dropPID = l, false, seq-1, -1
	f.curT = f.targetT
	f.offN = 0
	f.pushOff(seq)
}

// nextTS is the output timestamp for source timestamp ts of layer l on a
// switch or resync: the last one sent plus the time between the two,
// through the sender reports of both layers when known, else by the wall
// clock; always ahead of the last one.
func (f *forwarder) nextTS(ts uint32, l int, now int64, sr srMapper) uint32 {
	elapsed := now - f.lastAt
	if elapsed < 0 {
		elapsed = 0
	}
	next := f.lastTS + uint32(elapsed*int64(f.clock)/1e9)
	if sr != nil && l != f.cur && f.cur >= 0 {
		// ts on the old layer's RTP clock, then the old layer's output.
		if d, ok := sr.layerOffset(f.cur, l, f.clock); ok {
			cand := ts + d - f.tsOffset
			if diff := int32(cand - f.lastTS); diff > 0 && diff < int32(5*f.clock) {
				next = cand
			}
		}
	}
	if int32(next-f.lastTS) <= 0 {
		next = f.lastTS + 1
	}
	return next
}

func (f *forwarder) pushOff(from uint16) {
	e := offEntry{from: from, sn: f.snOffset, pid: f.pidOffset}
	if f.offN < offHistory {
		f.offs[f.offN] = e
		f.offN++
		return
	}
	copy(f.offs[:], f.offs[1:])
	f.offs[offHistory-1] = e
}

// offAt returns the offsets in force for source seq (the newest entry that
// starts at or before it).
func (f *forwarder) offAt(seq uint16) (offEntry, bool) {
	for i := f.offN - 1; i >= 0; i-- {
		if int16(seq-f.offs[i].from) >= 0 {
			return f.offs[i], true
		}
	}
	return offEntry{}, false
}

// lookup maps a consumer's sequence number back to what was sent.
func (f *forwarder) lookup(out uint16) (seqEntry, bool) {
	if f.seqr == nil {
		return seqEntry{}, false
	}
	e := f.seqr[out%seqrSize]
	return e, e.valid && e.out == out
}

// nacked is lookup for a NACK at now (mono ns): it also applies and counts
// the retransmission limits.
func (f *forwarder) nacked(out uint16, now int64) (seqEntry, bool) {
	e, ok := f.lookup(out)
	ms := uint32(now / 1e6)
	if !ok || e.rtxN >= maxRTX || ms-e.at > rtxMaxAge || (e.rtxN > 0 && ms-e.rtxAt < rtxGap) {
		return seqEntry{}, false
	}
	p := &f.seqr[out%seqrSize]
	p.rtxN++
	p.rtxAt = ms
	return e, true
}

// srMapper gives the RTP timestamp offset between two layers of a
// producer from their sender reports.
type srMapper interface {
	// layerOffset returns d such that a timestamp t of layer to equals
	// t + d on layer from's RTP clock.
	layerOffset(from, to int, clock uint32) (uint32, bool)
}
