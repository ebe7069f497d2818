package gateway

import (
	"bytes"
	stdflate "compress/flate"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/wsdeflate"
)

// Frame bits (RFC 6455 §5.2).
const (
	bitFin  = 0x80
	bitRsv1 = 0x40
	bitRsv2 = 0x20
	bitRsv3 = 0x10
)

// testMask is the masking key of every test frame.
var testMask = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// rawFrame builds one client frame byte for byte. first is FIN|RSV|opcode;
// declared, unless it is auto, is the length written in the header (the payload is
// appended as it is, so the two may disagree); lenBytes forces the 7-bit
// (0), 16-bit (2) or 64-bit (8) length form, or -1 for the minimal one.
func rawFrame(first byte, masked bool, payload []byte, declared uint64, lenBytes int) []byte {
	n := uint64(len(payload))
	if declared != auto {
		n = declared
	}
	if lenBytes < 0 {
		switch {
		case n < 126:
			lenBytes = 0
		case n <= 0xffff:
			lenBytes = 2
		default:
			lenBytes = 8
		}
	}
	b := []byte{first, 0}
	if masked {
		b[1] = 0x80
	}
	switch lenBytes {
	case 0:
		b[1] |= byte(n)
	case 2:
		b[1] |= 126
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b[1] |= 127
		b = binary.BigEndian.AppendUint64(b, n)
	}
	p := bytes.Clone(payload)
	if masked {
		b = append(b, testMask[:]...)
		ws.Cipher(p, testMask, 0)
	}
	return append(b, p...)
}

// auto: rawFrame writes the payload's own length.
const auto = math.MaxUint64

// mf is a masked frame with the minimal length form.
func mf(first byte, payload string) []byte { return rawFrame(first, true, []byte(payload), auto, -1) }

// closeBody is a Close frame body: a code and a reason.
func closeBody(code uint16, reason string) string {
	return string(binary.BigEndian.AppendUint16(nil, code)) + reason
}

// framingCase is one RFC 6455 rule: the frames a client sends after the
// handshake and the close code the server must answer with.
type framingCase struct {
	name   string
	rule   string // RFC 6455 section
	frames [][]byte
	want   int
}

const pingMsg = `{"type":"ping","id":"p"}`

// framingCases has one row per rule the frame reader enforces.
var framingCases = []framingCase{
	{"rsv1 set", "§5.2", [][]byte{mf(bitFin|bitRsv1|byte(ws.OpText), pingMsg)}, protocol.CloseProtocolError},
	{"rsv2 set", "§5.2", [][]byte{mf(bitFin|bitRsv2|byte(ws.OpText), pingMsg)}, protocol.CloseProtocolError},
	{"rsv3 set on a ping", "§5.2", [][]byte{mf(bitFin|bitRsv3|byte(ws.OpPing), "")}, protocol.CloseProtocolError},
	{"reserved data opcode 0x3", "§5.2", [][]byte{mf(bitFin|0x3, pingMsg)}, protocol.CloseProtocolError},
	{"reserved data opcode 0x7", "§5.2", [][]byte{mf(bitFin|0x7, "")}, protocol.CloseProtocolError},
	{"reserved control opcode 0xB", "§5.2", [][]byte{mf(bitFin|0xB, "")}, protocol.CloseProtocolError},
	{"reserved control opcode 0xF", "§5.2", [][]byte{mf(bitFin|0xF, "x")}, protocol.CloseProtocolError},
	{"64-bit length with the top bit set", "§5.2", [][]byte{rawFrame(bitFin|byte(ws.OpText), true, nil, 1<<63+5, 8)}, protocol.CloseProtocolError},
	{"unmasked frame", "§5.1, §5.3", [][]byte{rawFrame(bitFin|byte(ws.OpText), false, []byte(pingMsg), auto, -1)}, protocol.CloseProtocolError},
	{"continuation without a message", "§5.4", [][]byte{mf(bitFin|byte(ws.OpContinuation), pingMsg)}, protocol.CloseProtocolError},
	{"new text frame inside a fragmented message", "§5.4", [][]byte{mf(byte(ws.OpText), `{"type":`), mf(bitFin|byte(ws.OpText), pingMsg)}, protocol.CloseProtocolError},
	{"new binary frame inside a fragmented message", "§5.4", [][]byte{mf(byte(ws.OpText), `{"type":`), mf(bitFin|byte(ws.OpBinary), "x")}, protocol.CloseProtocolError},
	{"fragmented ping", "§5.5", [][]byte{mf(byte(ws.OpPing), "a"), mf(bitFin|byte(ws.OpContinuation), "b")}, protocol.CloseProtocolError},
	{"fragmented close", "§5.5", [][]byte{mf(byte(ws.OpClose), closeBody(1000, ""))}, protocol.CloseProtocolError},
	{"ping of 126 bytes", "§5.5", [][]byte{mf(bitFin|byte(ws.OpPing), string(bytes.Repeat([]byte("a"), 126)))}, protocol.CloseProtocolError},
	{"close of 126 bytes", "§5.5", [][]byte{mf(bitFin|byte(ws.OpClose), closeBody(1000, string(bytes.Repeat([]byte("a"), 124))))}, protocol.CloseProtocolError},
	{"control frame announcing 2^63-1 bytes", "§5.5", [][]byte{rawFrame(bitFin|byte(ws.OpPing), true, nil, math.MaxInt64, 8)}, protocol.CloseProtocolError},
	{"close with a 1-byte body", "§5.5.1", [][]byte{mf(bitFin|byte(ws.OpClose), "\x03")}, protocol.CloseProtocolError},
	{"close 1005 (no status, reserved)", "§7.4.1", [][]byte{mf(bitFin|byte(ws.OpClose), closeBody(1005, ""))}, protocol.CloseProtocolError},
	{"close 1006 (abnormal, reserved)", "§7.4.1", [][]byte{mf(bitFin|byte(ws.OpClose), closeBody(1006, ""))}, protocol.CloseProtocolError},
	{"close 1015 (TLS, reserved)", "§7.4.1", [][]byte{mf(bitFin|byte(ws.OpClose), closeBody(1015, ""))}, protocol.CloseProtocolError},
	{"close 1004 (reserved)", "§7.4.1", [][]byte{mf(bitFin|byte(ws.OpClose), closeBody(1004, ""))}, protocol.CloseProtocolError},
	{"close 0", "§7.4.2", [][]byte{mf(bitFin|byte(ws.OpClose), closeBody(0, ""))}, protocol.CloseProtocolError},
	{"close 999", "§7.4.2", [][]byte{mf(bitFin|byte(ws.OpClose), closeBody(999, ""))}, protocol.CloseProtocolError},
	{"close 2000 (unassigned protocol range)", "§7.4.2", [][]byte{mf(bitFin|byte(ws.OpClose), closeBody(2000, ""))}, protocol.CloseProtocolError},
	{"close 5000 (beyond 4999)", "§7.4.2", [][]byte{mf(bitFin|byte(ws.OpClose), closeBody(5000, ""))}, protocol.CloseProtocolError},
	{"close 65535", "§7.4.2", [][]byte{mf(bitFin|byte(ws.OpClose), closeBody(65535, ""))}, protocol.CloseProtocolError},
	{"close reason not UTF-8", "§5.5.1", [][]byte{mf(bitFin|byte(ws.OpClose), closeBody(1000, "bad \xff\xfe"))}, protocol.CloseProtocolError},
	{"close with an empty body is answered 1000", "§5.5.1, §7.1.5", [][]byte{mf(bitFin|byte(ws.OpClose), "")}, protocol.CloseNormal},
	{"close 1000 is echoed", "§5.5.1", [][]byte{mf(bitFin|byte(ws.OpClose), closeBody(1000, "bye"))}, protocol.CloseNormal},
	{"close 1001 is echoed", "§5.5.1", [][]byte{mf(bitFin|byte(ws.OpClose), closeBody(1001, ""))}, protocol.CloseGoingAway},
	{"close 3000 is echoed", "§7.4.2", [][]byte{mf(bitFin|byte(ws.OpClose), closeBody(3000, "app"))}, 3000},
	{"close 4999 is echoed", "§7.4.2", [][]byte{mf(bitFin|byte(ws.OpClose), closeBody(4999, "é"))}, 4999},
	{"continuation announcing 2^63-1 bytes after a text fragment", "§5.2, §5.4 (length)", [][]byte{
		mf(byte(ws.OpText), `{"type":"ping"`),
		rawFrame(bitFin|byte(ws.OpContinuation), true, nil, math.MaxInt64, 8),
	}, protocol.CloseMessageTooBig},
	{"text frame announcing 2^63-1 bytes", "§5.2 (length)", [][]byte{rawFrame(bitFin|byte(ws.OpText), true, nil, math.MaxInt64, 8)}, protocol.CloseMessageTooBig},
}

// TestFrameReaderCases runs every framing case through the frame reader
// alone: the first error is a *frameError with the expected code, or a
// valid close answered with it.
func TestFrameReaderCases(t *testing.T) {
	for _, tc := range framingCases {
		fr := newFrameReader(bytes.NewReader(bytes.Join(tc.frames, nil)), 64<<10)
		got := 0
		for got == 0 {
			f, err := fr.next()
			var fe *frameError
			switch {
			case errors.As(err, &fe):
				got = fe.code
			case err != nil:
				t.Fatalf("%s: error %v, want close %d", tc.name, err, tc.want)
			case f.kind == kindClose:
				got = f.closeCode
			}
		}
		if got != tc.want {
			t.Errorf("%s (%s): close %d, want %d", tc.name, tc.rule, got, tc.want)
		}
	}
}

// TestFrameReaderValid: fragments with a ping between them join into one
// message; pings keep their payload.
func TestFrameReaderValid(t *testing.T) {
	in := bytes.Join([][]byte{
		mf(byte(ws.OpText), `{"type":`),
		mf(bitFin|byte(ws.OpPing), "hi"),
		mf(byte(ws.OpContinuation), `"ping"`),
		mf(bitFin|byte(ws.OpContinuation), `}`),
		rawFrame(bitFin|byte(ws.OpText), true, []byte(`{}`), auto, 8), // non-minimal length form
		mf(bitFin|byte(ws.OpBinary), "\x00"),
		mf(bitFin|byte(ws.OpText), ""),
	}, nil)
	fr := newFrameReader(bytes.NewReader(in), 64)
	want := []frame{
		{kind: kindPing, payload: []byte("hi")},
		{kind: kindMessage, payload: []byte(`{"type":"ping"}`)},
		{kind: kindMessage, payload: []byte(`{}`)},
		{kind: kindMessage, payload: []byte{0}, binary: true},
		{kind: kindMessage, payload: []byte{}},
	}
	for i, w := range want {
		f, err := fr.next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if f.kind != w.kind || !bytes.Equal(f.payload, w.payload) || f.binary != w.binary {
			t.Fatalf("frame %d: got %+v, want %+v", i, f, w)
		}
	}
	if _, err := fr.next(); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
}

// FuzzFrameReader feeds arbitrary bytes to the frame reader (max 1 KiB per
// message). It must never panic, never return a message longer than the
// limit or a control payload over 125 bytes, answer a close only with a
// code that may be sent on the wire, and fail only with a *frameError
// (1002 or 4009) or the reader's own io error.
func FuzzFrameReader(f *testing.F) {
	for _, tc := range framingCases {
		f.Add(bytes.Join(tc.frames, nil), false)
	}
	f.Add(bytes.Join([][]byte{mf(byte(ws.OpText), `{"type":`), mf(bitFin|byte(ws.OpPing), "hi"),
		mf(bitFin|byte(ws.OpContinuation), `"ping"}`)}, nil), false)
	f.Add(mf(bitFin|byte(ws.OpText), pingMsg), false)
	// permessage-deflate negotiated: compressed messages, whole and in
	// fragments, a bomb, RSV1 where it is not allowed.
	z := string(wsdeflate.Compress([]byte(strings.Repeat(pingMsg, 20))))
	f.Add(mf(bitFin|bitRsv1|byte(ws.OpText), z), true)
	f.Add(bytes.Join([][]byte{mf(bitRsv1|byte(ws.OpText), z[:5]), mf(bitFin|byte(ws.OpContinuation), z[5:])}, nil), true)
	f.Add(mf(bitFin|bitRsv1|byte(ws.OpText), string(bomb(4096))), true)
	f.Add(mf(bitFin|bitRsv1|byte(ws.OpPing), ""), true)
	const max = 1024
	f.Fuzz(func(t *testing.T, data []byte, deflate bool) {
		fr := newFrameReader(bytes.NewReader(data), max)
		fr.deflate = deflate
		for range 1000 {
			fm, err := fr.next()
			if err != nil {
				var fe *frameError
				if errors.As(err, &fe) {
					if fe.code != protocol.CloseProtocolError && fe.code != protocol.CloseMessageTooBig {
						t.Fatalf("frame error with code %d", fe.code)
					}
				} else if err != io.EOF && err != io.ErrUnexpectedEOF {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			switch fm.kind {
			case kindMessage:
				if len(fm.payload) > max {
					t.Fatalf("message of %d bytes", len(fm.payload))
				}
			case kindPing, kindPong:
				if len(fm.payload) > 125 {
					t.Fatalf("control payload of %d bytes", len(fm.payload))
				}
			case kindClose:
				c := ws.StatusCode(fm.closeCode)
				if fm.closeCode != protocol.CloseNormal && (ws.CheckCloseFrameData(c, "") != nil || fm.closeCode > 4999) {
					t.Fatalf("answers close with %d", fm.closeCode)
				}
				return
			}
			if fm.kind == kindMessage && !fm.binary && utf8.Valid(fm.payload) {
				_, _ = protocol.Decode(fm.payload)
			}
		}
	})
}

// A close reason is cut to 123 bytes without splitting a character: the
// frame stays within 125 bytes of payload and valid UTF-8 (RFC 6455 §5.5).
func TestClosePayloadReasonCut(t *testing.T) {
	for _, reason := range []string{strings.Repeat("é", 100), strings.Repeat("a", 122) + "€€", "short", strings.Repeat("x", 123)} {
		p := closePayload(4003, reason)
		r := string(p[2:])
		if len(p) > 125 || !utf8.ValidString(r) || !strings.HasPrefix(reason, r) || (len(reason) <= 123 && r != reason) || len(r) < 120 && len(reason) > 123 {
			t.Errorf("reason %q (%d bytes) → %q (%d bytes)", reason, len(reason), r, len(r))
		}
	}
}

// withContext compresses msg as a client using context takeover would
// (back-references into the previous message, msg itself), which
// client_no_context_takeover forbids.
func withContext(t *testing.T, msg string) string {
	var b bytes.Buffer
	w, err := stdflate.NewWriterDict(&b, stdflate.DefaultCompression, []byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write([]byte(msg))
	_ = w.Flush()
	return strings.TrimSuffix(b.String(), "\x00\x00\xff\xff")
}

// bomb is n zero bytes compressed as a permessage-deflate message.
func bomb(n int) []byte { return wsdeflate.Compress(make([]byte, n)) }

// With permessage-deflate negotiated: compressed messages are inflated,
// whole or fragmented, alone or between plain ones; the inflated size is
// bounded like a plain message's (a bomb closes 4009 having allocated no
// more than the bound); RSV1 on a control frame or a continuation, or
// data that is not deflate, closes 1002.
func TestFrameReaderDeflate(t *testing.T) {
	const max = 4096
	msg := strings.Repeat(pingMsg, 60) // > max/2, compresses well
	z := string(wsdeflate.Compress([]byte(msg)))
	if len(z) == 0 || len(z) >= len(msg) {
		t.Fatal("test message does not compress")
	}
	next := func(deflate bool, frames ...[]byte) ([]frame, error) {
		fr := newFrameReader(bytes.NewReader(bytes.Join(frames, nil)), max)
		fr.deflate = deflate
		var out []frame
		for {
			f, err := fr.next()
			if err == io.EOF {
				return out, nil
			}
			if err != nil {
				return out, err
			}
			out = append(out, f)
		}
	}
	got, err := next(true,
		mf(bitFin|bitRsv1|byte(ws.OpText), z),
		mf(bitFin|byte(ws.OpText), pingMsg),
		mf(bitRsv1|byte(ws.OpText), z[:3]), mf(bitFin|byte(ws.OpPing), "p"), mf(byte(ws.OpContinuation), z[3:7]),
		mf(bitFin|byte(ws.OpContinuation), z[7:]))
	if err != nil || len(got) != 4 || string(got[0].payload) != msg || string(got[1].payload) != pingMsg ||
		got[2].kind != kindPing || string(got[3].payload) != msg {
		t.Fatalf("got %d frames, err %v", len(got), err)
	}
	code := func(err error) int {
		var fe *frameError
		if !errors.As(err, &fe) {
			return -1
		}
		return fe.code
	}
	if _, err := next(true, mf(bitFin|bitRsv1|byte(ws.OpText), string(bomb(max+1)))); code(err) != protocol.CloseMessageTooBig {
		t.Fatalf("bomb: %v", err)
	}
	if _, err := next(true, mf(bitFin|bitRsv1|byte(ws.OpText), string(bomb(max)))); err != nil {
		t.Fatalf("exactly max after inflating: %v", err)
	}
	for name, frames := range map[string][][]byte{
		"rsv1 ping":                 {mf(bitFin|bitRsv1|byte(ws.OpPing), "")},
		"rsv1 close":                {mf(bitFin|bitRsv1|byte(ws.OpClose), closeBody(1000, ""))},
		"rsv1 continuation":         {mf(byte(ws.OpText), "ab"), mf(bitFin|bitRsv1|byte(ws.OpContinuation), "c")},
		"rsv2 with deflate":         {mf(bitFin|0x20|byte(ws.OpText), pingMsg)},
		"not deflate":               {mf(bitFin|bitRsv1|byte(ws.OpText), "\xff\xff\xff\xff")},
		"context from last message": {mf(bitFin|bitRsv1|byte(ws.OpText), z), mf(bitFin|bitRsv1|byte(ws.OpText), withContext(t, msg))},
	} {
		if _, err := next(true, frames...); code(err) != protocol.CloseProtocolError {
			t.Fatalf("%s: %v", name, err)
		}
	}
	// Without the extension RSV1 stays a protocol error.
	if _, err := next(false, mf(bitFin|bitRsv1|byte(ws.OpText), z)); code(err) != protocol.CloseProtocolError {
		t.Fatalf("rsv1 without deflate: %v", err)
	}
}
