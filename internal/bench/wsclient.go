package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"

	"github.com/parleyhq/parley/internal/wsdeflate"
)

// wsConn is a minimal, low-allocation WebSocket client connection: frames
// are parsed straight out of a bufio.Reader (no allocation per frame while a
// frame fits in the buffer), and written masked with a zero key (legal, and
// it spares the XOR pass on the client; the server unmasks anyway).
// Reading is single-goroutine; writes are serialised by wmu.
type wsConn struct {
	nc   net.Conn
	br   *bufio.Reader
	buf  []byte // payloads bigger than the read buffer, and fragments
	skip int    // bytes of the previous payload still to discard from br

	wmu  sync.Mutex
	wbuf []byte

	closeCode int

	// deflate: permessage-deflate was negotiated (--compression); a
	// message with RSV1 is inflated.
	deflate bool
}

var errClosedByServer = errors.New("closed by server")

// dialOpts are the client-side knobs shared by every scenario.
type dialOpts struct {
	url     string
	src     net.IP // local (source) address; nil = kernel's choice
	readBuf int    // bufio size for reading; small for idle connections
	timeout time.Duration
	// compression offers permessage-deflate with no context takeover.
	compression bool
}

// dialWS opens an authenticated WebSocket (token in the query string) and
// returns it positioned before the first server frame.
func dialWS(ctx context.Context, o dialOpts, token string) (*wsConn, error) {
	nd := &net.Dialer{Timeout: o.timeout}
	if o.src != nil {
		nd.LocalAddr = &net.TCPAddr{IP: o.src}
	}
	d := ws.Dialer{
		Timeout:         o.timeout,
		ReadBufferSize:  1024,
		WriteBufferSize: 1024,
		NetDial:         nd.DialContext,
	}
	if o.compression {
		d.Extensions = []httphead.Option{wsflate.Parameters{
			ServerNoContextTakeover: true, ClientNoContextTakeover: true,
		}.Option()}
	}
	var status int
	var body bytes.Buffer
	d.OnStatusError = func(st int, _ []byte, resp io.Reader) {
		status = st
		_, _ = io.Copy(&body, io.LimitReader(resp, 512))
	}
	sep := "?"
	if bytes.ContainsRune([]byte(o.url), '?') {
		sep = "&"
	}
	nc, hbr, hs, err := d.Dial(ctx, o.url+sep+"token="+token)
	if err != nil {
		if status != 0 {
			return nil, fmt.Errorf("HTTP %d: %s", status, firstLine(body.Bytes()))
		}
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	var r io.Reader = nc
	if hbr != nil {
		// The server's first frames arrived with the handshake answer.
		r = io.MultiReader(hbr, nc)
	}
	size := o.readBuf
	if size < 64 {
		size = 64
	}
	c := &wsConn{nc: nc, br: bufio.NewReaderSize(r, size)}
	for _, x := range hs.Extensions {
		if bytes.Equal(x.Name, wsflate.ExtensionNameBytes) {
			c.deflate = true
		}
	}
	return c, nil
}

func firstLine(b []byte) string {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	b = bytes.TrimSpace(b)
	if len(b) > 200 {
		b = b[:200]
	}
	return string(b)
}

// next returns the payload of the next text or binary message. Control
// frames are handled here: pings are answered, a close frame ends the
// connection (errClosedByServer; closeCode holds the code). The payload is
// valid until the following call.
func (c *wsConn) next() ([]byte, error) {
	var frag []byte
	inFrag, compressed := false, false
	for {
		if c.skip > 0 {
			if _, err := c.br.Discard(c.skip); err != nil {
				return nil, err
			}
			c.skip = 0
		}
		h, err := c.br.Peek(2)
		if err != nil {
			return nil, err
		}
		fin := h[0]&0x80 != 0
		rsv1 := h[0]&0x40 != 0
		op := ws.OpCode(h[0] & 0x0f)
		masked := h[1]&0x80 != 0
		n := int64(h[1] & 0x7f)
		hl := 2
		switch n {
		case 126:
			hl += 2
		case 127:
			hl += 8
		}
		if masked {
			hl += 4
		}
		if hl > 2 {
			if h, err = c.br.Peek(hl); err != nil {
				return nil, err
			}
			switch n {
			case 126:
				n = int64(binary.BigEndian.Uint16(h[2:4]))
			case 127:
				n = int64(binary.BigEndian.Uint64(h[2:10]))
			}
		}
		var mask [4]byte
		if masked {
			copy(mask[:], h[hl-4:hl])
		}
		if _, err := c.br.Discard(hl); err != nil {
			return nil, err
		}
		if n < 0 || n > 64<<20 {
			return nil, fmt.Errorf("frame of %d bytes", n)
		}
		var p []byte
		if int(n) <= c.br.Size() {
			if p, err = c.br.Peek(int(n)); err != nil {
				return nil, err
			}
			c.skip = int(n)
		} else {
			if cap(c.buf) < int(n) {
				c.buf = make([]byte, n)
			}
			p = c.buf[:n]
			if _, err := io.ReadFull(c.br, p); err != nil {
				return nil, err
			}
		}
		if masked {
			ws.Cipher(p, mask, 0)
		}
		switch op {
		case ws.OpPing:
			pl := append([]byte(nil), p...)
			if err := c.writeFrame(ws.OpPong, pl); err != nil {
				return nil, err
			}
			continue
		case ws.OpPong:
			continue
		case ws.OpClose:
			if len(p) >= 2 {
				c.closeCode = int(binary.BigEndian.Uint16(p))
			} else {
				c.closeCode = 1005
			}
			_ = c.writeFrame(ws.OpClose, p[:min(len(p), 2)])
			return nil, errClosedByServer
		case ws.OpContinuation:
			if !inFrag {
				return nil, errors.New("continuation without a message")
			}
			frag = append(frag, p...)
		default:
			compressed = rsv1
			if rsv1 && !c.deflate {
				return nil, errors.New("compressed frame without permessage-deflate")
			}
			if fin {
				return c.message(p, compressed)
			}
			inFrag = true
			frag = append(frag[:0], p...)
		}
		if fin && inFrag {
			return c.message(frag, compressed)
		}
	}
}

// message returns a whole message's payload, inflated when it was sent
// compressed.
func (c *wsConn) message(p []byte, compressed bool) ([]byte, error) {
	if !compressed {
		return p, nil
	}
	return wsdeflate.Inflate(p, 64<<20)
}

// buffered reports whether another frame's bytes are already read, i.e.
// whether next will not block.
func (c *wsConn) buffered() bool { return c.br.Buffered() > c.skip }

// appendFrame appends one masked client frame (zero mask key).
func appendFrame(dst []byte, op ws.OpCode, p []byte) []byte {
	n := len(p)
	dst = append(dst, 0x80|byte(op))
	switch {
	case n < 126:
		dst = append(dst, 0x80|byte(n))
	case n <= 0xffff:
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	dst = append(dst, 0, 0, 0, 0) // mask key 0: the payload is unchanged
	return append(dst, p...)
}

func (c *wsConn) writeFrame(op ws.OpCode, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = appendFrame(c.wbuf[:0], op, p)
	_, err := c.nc.Write(c.wbuf)
	return err
}

// writeText sends one text message.
func (c *wsConn) writeText(p []byte) error { return c.writeFrame(ws.OpText, p) }

// writeRaw sends bytes that already hold whole frames (see appendFrame).
func (c *wsConn) writeRaw(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.nc.Write(b)
	return err
}

func (c *wsConn) close() { _ = c.nc.Close() }

// closeGracefully sends a close frame and closes the socket.
func (c *wsConn) closeGracefully() {
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_ = c.writeFrame(ws.OpClose, []byte{0x03, 0xe8}) // 1000
	_ = c.nc.Close()
}

// --- tiny JSON helpers for frames the server builds (protocol.Encode puts
// "type" first) ---

var (
	pfxRoomEvent       = []byte(`{"type":"room:event"`)
	pfxAck             = []byte(`{"type":"ack"`)
	pfxError           = []byte(`{"type":"error"`)
	pfxRoomState       = []byte(`{"type":"room:state"`)
	pfxConnected       = []byte(`{"type":"connected"`)
	pfxPresenceUpdated = []byte(`{"type":"room:presence_updated"`)
	pfxPresenceBatch   = []byte(`{"type":"room:presence_batch"`)
	keyPresenceObj     = []byte(`"presence":{`)
	pfxStorageUpdated  = []byte(`{"type":"room:storage_updated"`)
	keyTS              = []byte(`"bts":`)
	keySeq             = []byte(`"bseq":`)
	keyPub             = []byte(`"bpub":`)
)

// intAfter parses the integer that follows key in p (ok false when absent).
func intAfter(p, key []byte) (int64, bool) {
	i := bytes.Index(p, key)
	if i < 0 {
		return 0, false
	}
	return parseInt(p[i+len(key):])
}

func parseInt(p []byte) (int64, bool) {
	var v int64
	i := 0
	for i < len(p) && p[i] == ' ' {
		i++
	}
	neg := false
	if i < len(p) && p[i] == '-' {
		neg = true
		i++
	}
	start := i
	for i < len(p) && p[i] >= '0' && p[i] <= '9' {
		v = v*10 + int64(p[i]-'0')
		i++
	}
	if i == start {
		return 0, false
	}
	if neg {
		v = -v
	}
	return v, true
}

// frameID returns the envelope id when it is the second key (as the server
// writes it: {"type":...,"id":"..."}).
func frameID(p []byte) []byte {
	// skip {"type":"<t>"
	if len(p) < 10 {
		return nil
	}
	i := bytes.IndexByte(p[9:], '"')
	if i < 0 {
		return nil
	}
	rest := p[9+i+1:]
	if !bytes.HasPrefix(rest, []byte(`,"id":"`)) {
		return nil
	}
	rest = rest[7:]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return nil
	}
	return rest[:j]
}

// frameIDInt parses an id of the form <prefix><digits>.
func frameIDInt(p []byte) (int64, bool) {
	id := frameID(p)
	k := 0
	for k < len(id) && (id[k] < '0' || id[k] > '9') {
		k++
	}
	if k == len(id) {
		return 0, false
	}
	return parseInt(id[k:])
}

// errorCode extracts data.code from an error frame.
func errorCode(p []byte) string {
	i := bytes.Index(p, []byte(`"code":"`))
	if i < 0 {
		return "?"
	}
	rest := p[i+8:]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return "?"
	}
	return string(rest[:j])
}

// readConnected reads frames until the "connected" frame.
func (c *wsConn) readConnected(deadline time.Time) error {
	_ = c.nc.SetReadDeadline(deadline)
	defer func() { _ = c.nc.SetReadDeadline(time.Time{}) }()
	for {
		p, err := c.next()
		if err != nil {
			if errors.Is(err, errClosedByServer) {
				return fmt.Errorf("closed by server with code %d", c.closeCode)
			}
			return err
		}
		if bytes.HasPrefix(p, pfxConnected) {
			return nil
		}
	}
}

func newBufReader(r io.Reader, size int) *bufio.Reader { return bufio.NewReaderSize(r, size) }
