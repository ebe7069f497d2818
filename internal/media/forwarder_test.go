package media

import (
	"testing"
)

// vp8Frame builds a VP8 payload: descriptor with a 15-bit picture id,
// TL0PICIDX and TID, then a payload header whose P bit says key frame.
func vp8Frame(pid uint16, tl0 uint8, tid uint8, key, start bool, size int) []byte {
	b := make([]byte, max(size, 7))
	b[0] = 0x80 // X
	if start {
		b[0] |= 0x10 // S, PID 0
	}
	b[1] = 0x80 | 0x40 | 0x20 // I L T
	b[2] = 0x80 | byte(pid>>8&0x7f)
	b[3] = byte(pid)
	b[4] = tl0
	b[5] = tid<<6 | 0x20 // Y
	if key {
		b[6] = 0x00
	} else {
		b[6] = 0x01
	}
	return b
}

func negU32(v uint32) uint32 { return -v }

func info(layer int, payload []byte) *pktInfo {
	in := &pktInfo{stream: int8(layer), layer: int8(layer), tid: -1}
	parseVP8(payload, in)
	in.maxTID = 2
	return in
}

// fakeSR maps layers with fixed RTP offsets (as sender reports would).
type fakeSR map[[2]int]uint32

func (f fakeSR) layerOffset(from, to int, _ uint32) (uint32, bool) {
	d, ok := f[[2]int{from, to}]
	return d, ok
}

type fwdStep struct {
	layer    int
	seq      uint16
	ts       uint32
	pid      uint16
	tl0      uint8
	tid      uint8
	key      bool
	now      int64
	send     bool
	outSeq   uint16
	outTS    uint32
	outPID   uint16
	outTL0   uint8
	checkOut bool
}

func runSteps(t *testing.T, f *forwarder, sr srMapper, steps []fwdStep) {
	t.Helper()
	for i, s := range steps {
		p := vp8Frame(s.pid, s.tl0, s.tid, s.key, true, 20)
		o := f.translate(s.seq, s.ts, info(s.layer, p), s.now, sr)
		if o.send != s.send {
			t.Fatalf("step %d (layer %d seq %d): send %v, want %v", i, s.layer, s.seq, o.send, s.send)
		}
		if s.send && s.checkOut && (o.seq != s.outSeq || o.ts != s.outTS || o.pid != s.outPID || o.tl0 != s.outTL0) {
			t.Fatalf("step %d: out seq %d ts %d pid %d tl0 %d, want %d %d %d %d", i, o.seq, o.ts, o.pid, o.tl0, s.outSeq, s.outTS, s.outPID, s.outTL0)
		}
	}
}

// A single-layer stream keeps the producer's numbering, gaps included, and
// wraps like it.
func TestForwarderSingleLayerKeepsNumbering(t *testing.T) {
	f := newForwarder(true, 1, 90000)
	f.setTarget(0, 2, 0)
	runSteps(t, f, nil, []fwdStep{
		{seq: 65534, ts: 0xffffff00, pid: 0x7ffe, tl0: 255, key: false, send: true, checkOut: true, outSeq: 65534, outTS: 0xffffff00, outPID: 0x7ffe, outTL0: 255},
		{seq: 65535, ts: 0xffffff00, pid: 0x7ffe, tl0: 255, send: true, checkOut: true, outSeq: 65535, outTS: 0xffffff00, outPID: 0x7ffe, outTL0: 255},
		{seq: 2, ts: 2900, pid: 0x7fff, tl0: 0, send: true, checkOut: true, outSeq: 2, outTS: 2900, outPID: 0x7fff, outTL0: 0}, // gap 0,1 kept
		{seq: 1, ts: 2900, pid: 0x7fff, tl0: 0, send: true, checkOut: true, outSeq: 1, outTS: 2900, outPID: 0x7fff, outTL0: 0}, // late packet
		{seq: 2, ts: 2900, pid: 0x7fff, tl0: 0, send: false}, // duplicate
	})
	if e, ok := f.lookup(1); !ok || e.src != 1 || e.layer != 0 {
		t.Fatalf("lookup(1) = %+v %v", e, ok)
	}
}

// Switching layers: only on a key frame of the target; sequence numbers go
// on +1, picture id and TL0PICIDX +1, the timestamp by the wall-clock time
// since the last packet (no sender reports) or through the sender reports.
func TestForwarderSwitchIsSeamless(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sr     srMapper
		wantTS uint32
	}{
		// 100 ms after the last packet: 9000 ticks on from 3000.
		{"wall-clock", nil, 3000 + 9000},
		// Layer 1's ts 500000 is 500000+(-497000+6000)=9000 on layer 0's clock:
		// on the output (tsOffset 0) 9000, ahead of 3000.
		{"sender-reports", fakeSR{{0, 1}: negU32(497000 - 6000)}, 9000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newForwarder(true, 3, 90000)
			f.setTarget(0, 2, 0)
			ms := int64(1e6)
			runSteps(t, f, tc.sr, []fwdStep{
				// Layer 0 starts on a key frame; layer 1 is ignored meanwhile.
				{layer: 1, seq: 900, ts: 400000, pid: 40, tl0: 7, key: true, send: false},
				{layer: 0, seq: 100, ts: 0, pid: 10, tl0: 1, key: false, send: false},
				{layer: 0, seq: 101, ts: 0, pid: 10, tl0: 1, key: true, send: true, checkOut: true, outSeq: 101, outTS: 0, outPID: 10, outTL0: 1},
				{layer: 0, seq: 102, ts: 3000, pid: 11, tl0: 2, now: 33 * ms, send: true, checkOut: true, outSeq: 102, outTS: 3000, outPID: 11, outTL0: 2},
			})
			if k := f.setTarget(1, 2, 40*ms); k != 1 {
				t.Fatalf("setTarget asks a key frame of %d, want 1", k)
			}
			runSteps(t, f, tc.sr, []fwdStep{
				// Not a key frame: layer 0 goes on meanwhile.
				{layer: 1, seq: 1000, ts: 497000, pid: 50, tl0: 9, now: 60 * ms, send: false},
				{layer: 0, seq: 103, ts: 3000, pid: 11, tl0: 2, now: 33 * ms, send: true, checkOut: true, outSeq: 103, outTS: 3000, outPID: 11, outTL0: 2},
				// The key frame of layer 1 switches.
				{layer: 1, seq: 1001, ts: 500000, pid: 51, tl0: 10, key: true, now: 133 * ms, send: true, checkOut: true, outSeq: 104, outTS: tc.wantTS, outPID: 12, outTL0: 3},
				{layer: 1, seq: 1002, ts: 503000, pid: 52, tl0: 11, now: 166 * ms, send: true, checkOut: true, outSeq: 105, outTS: tc.wantTS + 3000, outPID: 13, outTL0: 4},
				// Layer 0 is no longer forwarded.
				{layer: 0, seq: 104, ts: 6000, pid: 12, tl0: 3, now: 166 * ms, send: false},
			})
			if f.layer != (layerState{1, 2}) {
				t.Fatalf("reported layers %+v", f.layer)
			}
			// NACK mapping: 103 was layer 0's 103, 104 layer 1's 1001.
			for out, want := range map[uint16]seqEntry{103: {layer: 0, src: 103}, 104: {layer: 1, src: 1001, pid: 12, tl0: 3}} {
				e, ok := f.lookup(out)
				if !ok || e.layer != want.layer || e.src != want.src || (want.pid != 0 && (e.pid != want.pid || e.tl0 != want.tl0)) {
					t.Fatalf("lookup(%d) = %+v %v, want %+v", out, e, ok, want)
				}
			}
			if _, ok := f.lookup(106); ok {
				t.Fatal("lookup of an unsent seq succeeded")
			}
		})
	}
}

// Switches across the wrap of sequence numbers, timestamps and picture
// ids, down and up again.
func TestForwarderSwitchAcrossWraparound(t *testing.T) {
	f := newForwarder(true, 2, 90000)
	f.setTarget(1, 2, 0)
	ms := int64(1e6)
	base := uint32(0xffffffff - 1000)
	runSteps(t, f, nil, []fwdStep{
		{layer: 1, seq: 65535, ts: base, pid: 0x7fff, tl0: 255, key: true, send: true, checkOut: true, outSeq: 65535, outTS: base, outPID: 0x7fff, outTL0: 255},
	})
	f.setTarget(0, 2, ms)
	runSteps(t, f, nil, []fwdStep{
		{layer: 0, seq: 30000, ts: 12345, pid: 300, tl0: 30, key: true, now: 10 * ms, send: true, checkOut: true,
			outSeq: 0, outTS: base + 900, outPID: 0, outTL0: 0},
		{layer: 0, seq: 30001, ts: 12345 + 3000, pid: 301, tl0: 31, now: 43 * ms, send: true, checkOut: true,
			outSeq: 1, outTS: base + 900 + 3000, outPID: 1, outTL0: 1}, // the timestamp wraps here
	})
	f.setTarget(1, 2, 50*ms)
	runSteps(t, f, nil, []fwdStep{
		{layer: 1, seq: 2, ts: 100, pid: 5, tl0: 3, key: true, now: 76 * ms, send: true, checkOut: true,
			outSeq: 2, outTS: base + 900 + 3000 + 2970, outPID: 2, outTL0: 2},
	})
}

// Temporal layers: a ceiling of 1 drops the TID 2 frames; the rest goes
// out with contiguous sequence numbers and picture ids; a late packet gets
// the offsets of its place; raising the ceiling waits for a TID 0 frame.
func TestForwarderTemporalLayers(t *testing.T) {
	f := newForwarder(true, 1, 90000)
	f.setTarget(0, 1, 0)
	// L1T3 pattern, one packet per frame except frame 13 (two packets).
	steps := []fwdStep{
		{seq: 10, ts: 0, pid: 100, tl0: 5, tid: 0, key: true, send: true, checkOut: true, outSeq: 10, outPID: 100, outTL0: 5},
		{seq: 11, ts: 3000, pid: 101, tl0: 5, tid: 2, send: false},
		{seq: 12, ts: 6000, pid: 102, tl0: 5, tid: 1, send: true, checkOut: true, outSeq: 11, outTS: 6000, outPID: 101, outTL0: 5},
		// 13 is lost for now
		{seq: 14, ts: 9000, pid: 103, tl0: 5, tid: 2, send: false},
		{seq: 15, ts: 12000, pid: 104, tl0: 6, tid: 0, send: true, checkOut: true, outSeq: 13, outTS: 12000, outPID: 102, outTL0: 6},
		// 13 arrives (retransmitted): it was frame 102's second packet.
		{seq: 13, ts: 6000, pid: 102, tl0: 5, tid: 1, send: true, checkOut: true, outSeq: 12, outTS: 6000, outPID: 101, outTL0: 5},
	}
	runSteps(t, f, nil, steps)
	if f.layer != (layerState{0, 1}) {
		t.Fatalf("reported %+v", f.layer)
	}
	f.setTarget(0, 2, 0)
	runSteps(t, f, nil, []fwdStep{
		{seq: 16, ts: 15000, pid: 105, tl0: 6, tid: 2, send: false}, // not yet: waits for TID 0
		{seq: 17, ts: 18000, pid: 106, tl0: 6, tid: 1, send: true, checkOut: true, outSeq: 14, outTS: 18000, outPID: 103, outTL0: 6},
		{seq: 18, ts: 21000, pid: 107, tl0: 6, tid: 2, send: false},
		{seq: 19, ts: 24000, pid: 108, tl0: 7, tid: 0, send: true, checkOut: true, outSeq: 15, outTS: 24000, outPID: 104, outTL0: 7},
		{seq: 20, ts: 27000, pid: 109, tl0: 7, tid: 2, send: true, checkOut: true, outSeq: 16, outTS: 27000, outPID: 105, outTL0: 7},
	})
	if f.layer != (layerState{0, 2}) {
		t.Fatalf("reported %+v", f.layer)
	}
}

// A pending switch re-asks for a key frame every keyRetry; a resync
// (resume) continues the numbering on the next key frame.
func TestForwarderKeyFrameRetryAndResync(t *testing.T) {
	f := newForwarder(true, 2, 90000)
	f.setTarget(0, 0, 0)
	o := f.translate(1, 0, info(0, vp8Frame(1, 1, 0, false, true, 10)), 2*keyRetry, nil)
	if o.send || o.askKey != 0 {
		t.Fatalf("no key frame yet: %+v", o)
	}
	if o := f.translate(2, 0, info(0, vp8Frame(1, 1, 0, false, true, 10)), 2*keyRetry+1, nil); o.askKey != -1 {
		t.Fatalf("asked again at once: %+v", o)
	}
	if o := f.translate(3, 0, info(0, vp8Frame(2, 2, 0, true, true, 10)), 3*keyRetry, nil); !o.send || o.seq != 3 {
		t.Fatalf("key frame: %+v", o)
	}
	f.restart(3 * keyRetry)
	// After a pause the producer's numbering jumped; the output goes on.
	if o := f.translate(500, 90000, info(0, vp8Frame(40, 20, 0, false, true, 10)), 4*keyRetry, nil); o.send {
		t.Fatalf("forwarded before the key frame after resync: %+v", o)
	}
	o = f.translate(501, 90000, info(0, vp8Frame(40, 20, 0, true, true, 10)), 4*keyRetry, nil)
	if !o.send || o.seq != 4 || o.pid != 3 || o.tl0 != 3 || o.ts != uint32(keyRetry*90000/1e9) {
		t.Fatalf("after resync: %+v", o)
	}
	// Audio: a resync re-anchors on the next packet.
	a := newForwarder(false, 1, 48000)
	a.translate(7, 960, &pktInfo{tid: -1}, 0, nil)
	a.restart(0)
	if o := a.translate(900, 123456, &pktInfo{tid: -1}, 20e6, nil); !o.send || o.seq != 8 || o.ts != 960+960 {
		t.Fatalf("audio after resync: %+v", o)
	}
}

func TestParseVP8AndH264(t *testing.T) {
	in := pktInfo{}
	parseVP8(vp8Frame(0x1234, 9, 2, true, true, 10), &in)
	if !in.keyframe || !in.frameStart || in.tid != 2 || in.vp8.pid != 0x1234 || in.vp8.pidLen != 2 || in.vp8.tl0 != 9 || in.vp8.tl0Off != 4 {
		t.Fatalf("vp8 %+v", in)
	}
	b := vp8Frame(0x1234, 9, 2, true, true, 10)
	patchVP8(b, &in.vp8, 0x0042, 200)
	parseVP8(b, &in)
	if in.vp8.pid != 0x42 || in.vp8.tl0 != 200 || !in.keyframe {
		t.Fatalf("patched %+v", in)
	}
	in = pktInfo{}
	parseVP8([]byte{0x10, 0x00, 0x9d}, &in) // the tests' plain key frame
	if !in.keyframe || in.tid != -1 || in.vp8.pidLen != 0 {
		t.Fatalf("plain %+v", in)
	}
	for _, c := range []struct {
		b   []byte
		key bool
	}{
		{[]byte{0x65, 1}, true}, {[]byte{0x67, 1}, true}, {[]byte{0x41, 1}, false},
		{[]byte{0x78, 0, 2, 0x67, 0, 0, 2, 0x68, 0}, true}, {[]byte{0x78, 0, 2, 0x41, 0}, false},
		{[]byte{0x7c, 0x85, 0}, true}, {[]byte{0x7c, 0x05, 0}, false}, {[]byte{0x7c}, false},
	} {
		in = pktInfo{}
		parseH264(c.b, &in)
		if in.keyframe != c.key {
			t.Fatalf("h264 %x: key %v", c.b, in.keyframe)
		}
	}
}

// NACKs are answered at most maxRTX times per packet, rtxGap apart, for
// packets up to rtxMaxAge old.
func TestForwarderRetransmissionLimits(t *testing.T) {
	f := newForwarder(true, 1, 90000)
	ms := int64(1e6)
	f.translate(10, 0, info(0, vp8Frame(1, 1, 0, true, true, 10)), 1000*ms, nil)
	f.translate(11, 0, info(0, vp8Frame(2, 1, 2, false, true, 10)), 1000*ms, nil)
	for i, c := range []struct {
		at int64
		ok bool
	}{{1010, true}, {1050, false}, {1120, true}, {1230, true}, {1400, false}} {
		if _, ok := f.nacked(10, c.at*ms); ok != c.ok {
			t.Fatalf("NACK %d at %d ms: %v, want %v", i, c.at, ok, c.ok)
		}
	}
	if _, ok := f.nacked(11, 2600*ms); ok {
		t.Fatal("a packet older than rtxMaxAge was resent")
	}
	if _, ok := f.nacked(11, 2400*ms); !ok {
		t.Fatal("a fresh NACK was refused")
	}
	if _, ok := f.nacked(12, 1100*ms); ok {
		t.Fatal("an unsent packet was resent")
	}
}
