package gateway

import (
	"errors"
	"io"
	"slices"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"

	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/wsdeflate"
)

// frameKind is what frameReader.next returned.
type frameKind int

const (
	kindMessage frameKind = iota // a complete data message (all fragments joined)
	kindPing                     // a Ping: answer with a Pong carrying payload
	kindPong                     // a Pong: nothing to do
	kindClose                    // a valid Close: answer with closeCode, then stop reading
)

// frame is one result of frameReader.next.
type frame struct {
	kind      frameKind
	payload   []byte // unmasked; a message's bytes, or a Ping/Pong body (≤ 125 bytes)
	binary    bool   // kindMessage: the message was sent as binary (opcode 0x2)
	closeCode int    // kindClose: the code to answer with (RFC 6455 §5.5.1)
}

// frameError is a framing violation: the connection must be closed with
// code (1002 protocol error, 4009 message too big) and nothing more read.
type frameError struct {
	code   int
	reason string
}

func (e *frameError) Error() string { return e.reason }

// frameReader reads client frames from r as a server must (RFC 6455 §5),
// joining fragments into messages of at most max bytes. It trusts nothing
// the peer declares: every header is validated before any payload byte is
// read or any buffer is allocated, and no arithmetic is done on a declared
// length without an overflow-safe bound.
//
// It does no I/O besides reading r, so it can be fuzzed without a socket.
type frameReader struct {
	r   io.Reader
	max int64 // most bytes in one message (all fragments), > 0
	// onFrame, when set, is called after each header is read (liveness
	// for the heartbeat).
	onFrame func()

	// deflate: permessage-deflate was negotiated. RSV1 on the first frame
	// of a data message then marks it compressed; it is inflated to at
	// most max bytes (wsdeflate.Inflate). RSV1 on a control frame or a
	// continuation is a protocol error (RFC 7692 §6.1), and RSV1 at all
	// without the extension stays one (ws.CheckHeader).
	deflate bool
	ms      wsflate.MessageState

	hb     [ws.MaxHeaderSize]byte
	state  ws.State // ws.StateServerSide, plus ws.StateFragmented inside a message
	msg    []byte   // fragments of the message in progress
	binary bool
}

func newFrameReader(r io.Reader, max int) *frameReader {
	return &frameReader{r: r, max: int64(max), state: ws.StateServerSide}
}

// protocolError is a 1002 close (RFC 6455 §7.4.1: "an endpoint is
// terminating the connection due to a protocol error").
func protocolError(reason string) *frameError {
	return &frameError{code: protocol.CloseProtocolError, reason: reason}
}

// next returns the next complete message or control frame. Errors are a
// *frameError (close with its code; RFC 6455 §7.1.7 "Fail the WebSocket
// Connection"), or the reader's error (io.EOF, a timeout, a reset: the peer
// is gone, nothing to send).
//
// The rules, each checked by gobwas/ws where it has a checker:
//   - §5.2 RSV1-3 must be 0 (RSV1 may be set on a data message's first
//     frame when permessage-deflate was negotiated: RFC 7692 §6), opcodes 0x3-0x7
//     and 0xB-0xF are reserved, the 64-bit length has its top bit clear
//     (ws.ReadHeaderBuffer, ws.CheckHeader);
//   - §5.1 and §5.3 client frames are masked (ws.CheckHeader);
//   - §5.4 a continuation only inside a fragmented message, a new data
//     frame only outside one; control frames may come between fragments
//     (ws.CheckHeader with ws.StateFragmented tracked here);
//   - §5.5 control frames carry at most 125 bytes and are not fragmented
//     (ws.CheckHeader);
//   - §5.5.1 and §7.4 a Close body is empty (answered 1000) or a 2-byte
//     code that may be sent on the wire plus a UTF-8 reason
//     (ws.ParseCloseFrameData, ws.CheckCloseFrameData); a 1-byte body and
//     codes ≥ 5000 are checked by hand, as gobwas/ws does not;
//   - a message longer than max → 4009 (protocol.CloseMessageTooBig).
func (fr *frameReader) next() (frame, error) {
	for {
		h, err := ws.ReadHeaderBuffer(fr.r, fr.hb[:])
		if err != nil {
			if errors.Is(err, ws.ErrHeaderLengthMSB) || errors.Is(err, ws.ErrHeaderLengthUnexpected) {
				return frame{}, protocolError(err.Error())
			}
			return frame{}, err
		}
		if fr.onFrame != nil {
			fr.onFrame()
		}
		if fr.deflate {
			// Clears RSV1 on a data message's first frame and records
			// it; refuses it anywhere else.
			if h, err = fr.ms.UnsetBits(h); err != nil {
				return frame{}, protocolError(err.Error())
			}
		}
		if err := ws.CheckHeader(h, fr.state); err != nil {
			return frame{}, protocolError(err.Error())
		}
		if h.OpCode.IsControl() {
			// ≤ 125 bytes: CheckHeader enforced ws.MaxControlFramePayloadSize.
			payload := make([]byte, h.Length)
			if _, err := io.ReadFull(fr.r, payload); err != nil {
				return frame{}, err
			}
			ws.Cipher(payload, h.Mask, 0)
			switch h.OpCode {
			case ws.OpPing:
				return frame{kind: kindPing, payload: payload}, nil
			case ws.OpPong:
				return frame{kind: kindPong, payload: payload}, nil
			default: // ws.OpClose; CheckHeader refused every other opcode
				code, err := checkClose(payload)
				if err != nil {
					return frame{}, err
				}
				return frame{kind: kindClose, closeCode: code}, nil
			}
		}
		// A data frame. len(fr.msg) ≤ fr.max always holds, so fr.max -
		// len(fr.msg) cannot overflow; the declared length is compared
		// against it, never added to anything. (ReadHeaderBuffer refuses a
		// length with the top bit set, so h.Length < 0 cannot happen; it is
		// checked anyway because the bound must not depend on that.)
		if h.Length < 0 || h.Length > fr.max || h.Length > fr.max-int64(len(fr.msg)) {
			return frame{}, &frameError{code: protocol.CloseMessageTooBig, reason: "message too big"}
		}
		if h.OpCode != ws.OpContinuation {
			fr.binary = h.OpCode == ws.OpBinary
		}
		start := len(fr.msg)
		n := int(h.Length) // ≤ fr.max, which is an int
		fr.msg = slices.Grow(fr.msg, n)[:start+n]
		if _, err := io.ReadFull(fr.r, fr.msg[start:]); err != nil {
			return frame{}, err
		}
		ws.Cipher(fr.msg[start:], h.Mask, 0)
		if !h.Fin {
			fr.state = fr.state.Set(ws.StateFragmented)
			continue
		}
		fr.state = fr.state.Clear(ws.StateFragmented)
		// The message is handed over whole; handlers may keep slices of
		// it (json.RawMessage), so the buffer is not reused.
		msg := fr.msg
		fr.msg = nil
		if msg == nil {
			msg = []byte{}
		}
		if fr.deflate && fr.ms.IsCompressed() {
			// The compressed bytes were bounded by max above; the output
			// is bounded by max here, whatever the input claims: a
			// decompression bomb is refused like an oversized message.
			fr.ms.SetCompressed(false)
			out, err := wsdeflate.Inflate(msg, int(fr.max))
			switch {
			case errors.Is(err, wsdeflate.ErrTooBig):
				return frame{}, &frameError{code: protocol.CloseMessageTooBig, reason: "message too big"}
			case err != nil:
				return frame{}, protocolError(err.Error())
			}
			msg = out
		}
		return frame{kind: kindMessage, payload: msg, binary: fr.binary}, nil
	}
}

// checkClose validates a Close frame's body (RFC 6455 §5.5.1, §7.4) and
// returns the code to answer with: 1000 for an empty body, else the peer's
// code echoed. Anything invalid is a 1002 error and is never echoed.
func checkClose(payload []byte) (int, error) {
	switch len(payload) {
	case 0:
		// §7.1.5: no status code; answer 1000 (normal).
		return protocol.CloseNormal, nil
	case 1:
		// §5.5.1: a body "MUST" start with a 2-byte code; ParseCloseFrameData
		// would silently read one byte as no code at all.
		return 0, protocolError("close frame body of 1 byte")
	}
	code, reason := ws.ParseCloseFrameData(payload)
	if err := ws.CheckCloseFrameData(code, reason); err != nil {
		return 0, protocolError(err.Error())
	}
	// §7.4.2 defines codes up to 4999 only; CheckCloseFrameData lets 5000
	// and above through.
	if code > 4999 {
		return 0, protocolError("status code is not defined in spec")
	}
	return int(code), nil
}
