package media

import (
	"testing"
)

// vp9Pkt builds a VP9 payload descriptor (RFC 9628 4.2, non-flexible
// mode): I with a 15-bit picture id, L with TID/SID, TL0PICIDX.
func vp9Pkt(pid uint16, sid, tid uint8, inter, begin, end bool) []byte {
	b := make([]byte, 12)
	b[0] = 0x80 | 0x20 // I, L
	if inter {
		b[0] |= 0x40
	}
	if begin {
		b[0] |= 0x08
	}
	if end {
		b[0] |= 0x04
	}
	b[1] = 0x80 | byte(pid>>8&0x7f)
	b[2] = byte(pid)
	b[3] = tid<<5 | sid<<1
	b[4] = 7 // TL0PICIDX
	return b
}

func TestParseVP9(t *testing.T) {
	var in pktInfo
	parseVP9(vp9Pkt(300, 0, 0, false, true, false), &in, true)
	if !in.keyframe || !in.frameStart || in.layer != 0 || in.tid != 0 || in.inter || in.layerEnd {
		t.Fatalf("key picture start: %+v", in)
	}
	in = pktInfo{layer: 5}
	parseVP9(vp9Pkt(300, 2, 1, true, false, true), &in, true)
	if in.keyframe || in.frameStart || in.layer != 2 || in.tid != 1 || !in.inter || !in.layerEnd {
		t.Fatalf("layer 2 end: %+v", in)
	}
	// Not SVC: the spatial layer stays the encoding's.
	in = pktInfo{layer: 1}
	parseVP9(vp9Pkt(1, 2, 0, true, true, true), &in, false)
	if in.layer != 1 {
		t.Fatalf("non-SVC layer = %d", in.layer)
	}
	// Short and hostile descriptors give no information and do not panic.
	for _, b := range [][]byte{nil, {0x80}, {0x80, 0x80}, {0xa0, 0x01}, {0x20}, {0x20, 0xff}} {
		in = pktInfo{}
		parseVP9(b, &in, true)
		if in.keyframe || in.frameStart || in.layer != 0 {
			t.Fatalf("%x: %+v", b, in)
		}
	}
	in = pktInfo{}
	parseVP9([]byte{0x28, 0xff, 0}, &in, true) // TID 7
	if in.tid != maxTemporal-1 || in.layer != 7 {
		t.Fatalf("tid clamp: %+v", in)
	}
}

// svcPicture feeds one picture of a 3-layer SVC stream (one packet per
// spatial layer, the last one ending the picture) and returns the packets
// sent and whether the marker went on the last one sent.
type svcOut struct {
	sid    int
	seq    uint16
	marker bool
}

// base puts the tests' clock past the first key-frame retry.
const base = int64(2e9)

func feedPicture(f *forwarder, seq *uint16, pid uint16, tid uint8, key bool, now int64) (out []svcOut, askKey int) {
	askKey = -1
	for sid := range 3 {
		in := &pktInfo{tid: -1}
		parseVP9(vp9Pkt(pid, uint8(sid), tid, !key, true, true), in, true)
		if sid > 0 {
			in.frameStart = false // only layer 0 starts a picture
		}
		in.maxTID = 2
		*seq++
		o := f.translateSVC(*seq, uint32(pid)*3000, in, base+now)
		if o.askKey >= 0 {
			askKey = o.askKey
		}
		if o.send {
			out = append(out, svcOut{sid, o.seq, o.marker})
		}
	}
	return out, askKey
}

func checkSVC(t *testing.T, what string, out []svcOut, sids []int, lastSeq *uint16) {
	t.Helper()
	if len(out) != len(sids) {
		t.Fatalf("%s: sent %+v, want layers %v", what, out, sids)
	}
	for i, o := range out {
		if o.sid != sids[i] {
			t.Fatalf("%s: sent %+v, want layers %v", what, out, sids)
		}
		if o.seq != *lastSeq+1 {
			t.Fatalf("%s: seq %d after %d: not continuous", what, o.seq, *lastSeq)
		}
		*lastSeq = o.seq
		if o.marker != (i == len(out)-1) {
			t.Fatalf("%s: marker on %+v (want it on the last packet only)", what, out)
		}
	}
}

// Full SVC (L3T3): a consumer gets every layer up to its target, with one
// continuous sequence and the marker on the highest layer it gets; going
// down happens within a picture, going up waits for a key picture.
func TestForwarderSVCFull(t *testing.T) {
	f := &forwarder{}
	*f = *newForwarder(true, 1, 90000)
	f.svc, f.target = true, 2
	var seq uint16 = 65530 // wraps inside the test
	out, key := feedPicture(f, &seq, 1, 0, false, 0)
	if len(out) != 0 || key != 2 {
		t.Fatalf("before a key picture: sent %+v, key request %d", out, key)
	}
	out, _ = feedPicture(f, &seq, 2, 0, true, 1e6)
	last := out[0].seq - 1
	checkSVC(t, "key picture", out, []int{0, 1, 2}, &last)
	if k := f.setTarget(0, 2, base+2e6); k != -1 {
		t.Fatalf("full SVC down asked for key frame of %d", k)
	}
	out, _ = feedPicture(f, &seq, 3, 0, false, 3e6)
	checkSVC(t, "down to 0", out, []int{0}, &last)
	out, _ = feedPicture(f, &seq, 4, 0, false, 4e6)
	checkSVC(t, "at 0", out, []int{0}, &last)
	if f.layer != (layerState{0, 2}) {
		t.Fatalf("layers reported %+v", f.layer)
	}
	if k := f.setTarget(1, 2, base+5e6); k != 1 {
		t.Fatalf("up asks for key frame of %d, want 1", k)
	}
	out, _ = feedPicture(f, &seq, 5, 0, false, 6e6)
	checkSVC(t, "up waits for a key picture", out, []int{0}, &last)
	out, _ = feedPicture(f, &seq, 6, 0, true, 7e6)
	checkSVC(t, "up on the key picture", out, []int{0, 1}, &last)
	// Temporal ceiling: TID 1 pictures dropped, numbering continues.
	f.setTarget(1, 0, base+8e6)
	out, _ = feedPicture(f, &seq, 7, 1, false, 9e6)
	checkSVC(t, "TID 1 above the ceiling", out, nil, &last)
	out, _ = feedPicture(f, &seq, 8, 0, false, 10e6)
	checkSVC(t, "TID 0", out, []int{0, 1}, &last)
}

// K-SVC (L3T3_KEY): only the layer received goes out between key
// pictures (lower layers' inter frames are not referenced); going down
// waits for a key picture.
func TestForwarderSVCKey(t *testing.T) {
	f := newForwarder(true, 1, 90000)
	f.svc, f.ksvc, f.target = true, true, 2
	var seq uint16 = 100
	feedPicture(f, &seq, 1, 0, false, 0)
	out, _ := feedPicture(f, &seq, 2, 0, true, 1e6)
	last := out[0].seq - 1
	checkSVC(t, "key picture", out, []int{0, 1, 2}, &last)
	out, _ = feedPicture(f, &seq, 3, 0, false, 2e6)
	checkSVC(t, "inter picture", out, []int{2}, &last)
	if k := f.setTarget(0, 2, base+3e6); k != 0 {
		t.Fatalf("K-SVC down asks for a key frame of %d, want 0", k)
	}
	out, _ = feedPicture(f, &seq, 4, 0, false, 4e6)
	checkSVC(t, "down waits for a key picture", out, []int{2}, &last)
	out, _ = feedPicture(f, &seq, 5, 0, true, 5e6)
	checkSVC(t, "down on the key picture", out, []int{0}, &last)
	out, _ = feedPicture(f, &seq, 6, 0, false, 6e6)
	checkSVC(t, "at 0", out, []int{0}, &last)
	// A late packet (a retransmission from the producer) of a dropped layer
	// is not sent; one of the layer received is, with its place's number.
	in := &pktInfo{tid: -1}
	parseVP9(vp9Pkt(6, 2, 0, true, true, true), in, true)
	if o := f.translateSVC(seq, 6*3000, in, base+6e6); o.send {
		t.Fatalf("late packet of a dropped layer sent: %+v", o)
	}
	in = &pktInfo{tid: -1}
	parseVP9(vp9Pkt(6, 0, 0, true, true, true), in, true)
	if o := f.translateSVC(seq-2, 6*3000, in, base+6e6); !o.send || o.seq != last {
		t.Fatalf("late packet of layer 0: %+v, want seq %d", o, last)
	}
	// NACK mapping records the stream (encoding 0) and the marker.
	if e, ok := f.lookup(last); !ok || e.layer != 0 || !e.marker {
		t.Fatalf("sequencer entry %+v %v", e, ok)
	}
}

func TestSVCOf(t *testing.T) {
	for _, c := range []struct {
		mime   string
		modes  []string
		layers int
		ksvc   bool
	}{
		{"video/VP9", []string{"L3T3_KEY"}, 3, true},
		{"video/vp9", []string{"L3T3"}, 3, false},
		{"video/VP9", []string{"L2T1"}, 2, false},
		{"video/VP9", []string{"S3T3"}, 3, true},
		{"video/VP9", []string{"L1T3"}, 0, false},
		{"video/VP9", []string{"L4T3"}, 0, false},
		{"video/VP9", []string{"L3"}, 0, false},
		{"video/VP9", []string{""}, 0, false},
		{"video/VP9", []string{"L3T3", "L3T3"}, 0, false},
		{"video/VP8", []string{"L3T3"}, 0, false},
	} {
		var encs []RtpEncodingParameters
		for _, m := range c.modes {
			encs = append(encs, RtpEncodingParameters{SSRC: 1, ScalabilityMode: m})
		}
		l, k := svcOf(c.mime, encs)
		if l != c.layers || k != c.ksvc {
			t.Errorf("svcOf(%s, %v) = %d %v, want %d %v", c.mime, c.modes, l, k, c.layers, c.ksvc)
		}
	}
}

// vp9SVCProduceParams is what mediasoup-client sends for a VP9 track
// produced with encodings [{scalabilityMode}] (one SSRC and its RTX).
func vp9SVCProduceParams(ssrc, rtxSSRC uint32, mode string) map[string]any {
	p := vp8ProduceParams(ssrc, rtxSSRC)
	p["codecs"] = []map[string]any{
		{"mimeType": "video/VP9", "payloadType": 98, "clockRate": 90000, "parameters": map[string]any{"profile-id": 0},
			"rtcpFeedback": []map[string]any{{"type": "nack"}, {"type": "nack", "parameter": "pli"}, {"type": "transport-cc"}}},
		{"mimeType": "video/rtx", "payloadType": 99, "clockRate": 90000, "parameters": map[string]any{"apt": 98}, "rtcpFeedback": []any{}},
	}
	p["encodings"] = []map[string]any{{"ssrc": ssrc, "rtx": map[string]any{"ssrc": rtxSSRC}, "scalabilityMode": mode, "active": true}}
	return p
}
