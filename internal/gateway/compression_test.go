package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"

	"github.com/parleyhq/parley/internal/gateway"
	"github.com/parleyhq/parley/internal/protocol"
)

// wireConn records the bytes a client reads and writes, to check RSV1 on
// the frames that crossed the wire (gorilla inflates transparently).
type wireConn struct {
	net.Conn
	mu      sync.Mutex
	in, out bytes.Buffer
}

func (w *wireConn) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	w.mu.Lock()
	w.in.Write(p[:n])
	w.mu.Unlock()
	return n, err
}

func (w *wireConn) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.out.Write(p)
	w.mu.Unlock()
	return w.Conn.Write(p)
}

// wireFrame is one frame seen on the wire.
type wireFrame struct {
	op         ws.OpCode
	compressed bool // RSV1
	length     int64
}

// frames parses the recorded bytes of one direction: the HTTP head, then
// frames (a partly received last frame is left out).
func (w *wireConn) frames(t *testing.T, in bool) []wireFrame {
	t.Helper()
	w.mu.Lock()
	b := w.out.Bytes()
	if in {
		b = w.in.Bytes()
	}
	b = bytes.Clone(b)
	w.mu.Unlock()
	i := bytes.Index(b, []byte("\r\n\r\n"))
	if i < 0 {
		t.Fatal("no HTTP head recorded")
	}
	r := bytes.NewReader(b[i+4:])
	var out []wireFrame
	for {
		h, err := ws.ReadHeader(r)
		if err != nil {
			return out
		}
		if _, err := io.CopyN(io.Discard, r, h.Length); err != nil {
			return out
		}
		out = append(out, wireFrame{op: h.OpCode, compressed: h.Rsv&0x4 != 0, length: h.Length})
	}
}

// dialCompressed dials with gorilla offering permessage-deflate
// (gorilla offers client_no_context_takeover and
// server_no_context_takeover) and recording the wire.
func dialCompressed(t *testing.T, e *env) (*client, *wireConn, string) {
	t.Helper()
	var wc *wireConn
	d := websocket.Dialer{
		EnableCompression: true,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			wc = &wireConn{Conn: nc}
			return wc, nil
		},
	}
	conn, resp, err := d.Dial(e.wsURL+"?token="+e.token("u1", time.Hour), nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return e.connected(conn), wc, resp.Header.Get("Sec-WebSocket-Extensions")
}

// bigFrame is an encoded frame of about n bytes that compresses well (a
// member list, as room:members_changed carries).
func bigFrame(typ string, n int) ([]byte, json.RawMessage) {
	var b strings.Builder
	b.WriteString(`{"joined":[`)
	for i := 0; b.Len() < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"client_id":"c-%06d","user_id":"user-%d","presence":{}}`, i, i%97)
	}
	b.WriteString(`]}`)
	data := json.RawMessage(b.String())
	return protocol.Encode(typ, "", data), data
}

// With compression negotiated: a large frame shared by many connections
// arrives compressed (RSV1) and decodes to the same message; a small one
// and a large frame for this connection alone arrive uncompressed; a
// client's compressed message is inflated and handled; a compressed
// message that inflates past max-message-bytes closes with 4009.
func TestCompressionNegotiatedSharedFramesCompressed(t *testing.T) {
	opts := defaultOpts()
	opts.Compression, opts.CompressionThreshold = true, 1024
	e := start(t, opts)
	c, wc, ext := dialCompressed(t, e)
	if !strings.Contains(ext, "permessage-deflate") || !strings.Contains(ext, "server_no_context_takeover") ||
		!strings.Contains(ext, "client_no_context_takeover") {
		t.Fatalf("Sec-WebSocket-Extensions %q", ext)
	}

	big, bigData := bigFrame("room:members_changed", 20000)
	if n := e.hub.SendAll(big, ""); n != 1 {
		t.Fatalf("SendAll reached %d", n)
	}
	if f := c.expect("room:members_changed"); !bytes.Equal(f.Data, bigData) {
		t.Fatal("the compressed frame decoded to something else")
	}
	small := protocol.Encode("room:event", "", map[string]string{"x": strings.Repeat("a", 200)})
	e.hub.SendAll(small, "")
	c.expect("room:event")
	own, _ := bigFrame("room:state", 20000)
	if !e.hub.SendToConn(c.connID, own) {
		t.Fatal("SendToConn")
	}
	c.expect("room:state")

	// Read back what crossed the wire: connected, the shared large frame,
	// the small one, the one-connection large one.
	got := wc.frames(t, true)
	if len(got) < 4 {
		t.Fatalf("%d frames on the wire", len(got))
	}
	want := []bool{false, true, false, false}
	for i, w := range want {
		if got[i].op != ws.OpText || got[i].compressed != w {
			t.Fatalf("frame %d: %+v, want compressed=%v", i, got[i], w)
		}
	}
	if got[1].length*2 > int64(len(big)) {
		t.Fatalf("shared frame of %d bytes went out as %d", len(big), got[1].length)
	}

	// The client compresses what it sends: inflated and handled.
	c.ws.EnableWriteCompression(true)
	payload := strings.Repeat("compressible ", 2000)
	c.send(map[string]any{"type": "test:echo", "id": "z1", "data": map[string]string{"p": payload}})
	f := c.expect("test:echoed")
	var echoed struct{ P string }
	if err := json.Unmarshal(f.Data, &echoed); err != nil || f.ID != "z1" || echoed.P != payload {
		t.Fatalf("echo of a compressed message: %v id %q", err, f.ID)
	}
	sent := wc.frames(t, false)
	if len(sent) == 0 || !sent[len(sent)-1].compressed {
		t.Fatalf("the client's message was not sent compressed: %+v", sent)
	}

	// A bomb: 1 MiB of JSON whitespace in about a kilobyte.
	bomb := append([]byte(`{"type":"test:echo","data":{}`), bytes.Repeat([]byte(" "), 1<<20)...)
	bomb = append(bomb, '}')
	if err := c.ws.WriteMessage(websocket.TextMessage, bomb); err != nil {
		t.Fatal(err)
	}
	c.expectClose(protocol.CloseMessageTooBig, 5*time.Second)
	var last wireFrame
	for _, f := range wc.frames(t, false) {
		if f.op == ws.OpText {
			last = f
		}
	}
	if last.length > 64<<10 || !last.compressed {
		t.Fatalf("the bomb went out as %+v", last)
	}
}

// With --ws-compression=false an offer is declined: a plain connection,
// every frame uncompressed, and RSV1 from the client is a protocol error.
func TestCompressionOffDeclines(t *testing.T) {
	e := start(t, defaultOpts()) // Compression false
	c, wc, ext := dialCompressed(t, e)
	if ext != "" {
		t.Fatalf("Sec-WebSocket-Extensions %q with compression off", ext)
	}
	big, _ := bigFrame("room:members_changed", 20000)
	e.hub.SendAll(big, "")
	c.expect("room:members_changed")
	for i, f := range wc.frames(t, true) {
		if f.compressed {
			t.Fatalf("frame %d compressed", i)
		}
	}
	c.ws.EnableWriteCompression(true) // not negotiated: gorilla sends plain
	c.send(map[string]any{"type": "test:echo", "id": "p1", "data": map[string]int{}})
	c.expect("test:echoed")
}

// A raw client that sets RSV1 without having negotiated the extension is
// closed with 1002, and so is one that negotiated it and sets RSV1 on a
// ping.
func TestCompressionRSV1Rules(t *testing.T) {
	opts := defaultOpts()
	opts.Compression, opts.CompressionThreshold = true, 1024
	e := start(t, opts)
	rc := rawConnect(t, e, "u1") // offers nothing
	if _, err := rc.nc.Write(gateway.MaskedFrame(0x80|0x40|byte(ws.OpText), `{"type":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	if code := rc.closeCode(); code != protocol.CloseProtocolError {
		t.Fatalf("RSV1 without the extension: close %d", code)
	}

	c, _, _ := dialCompressed(t, e)
	nc := c.ws.NetConn()
	if _, err := nc.Write(gateway.MaskedFrame(0x80|0x40|byte(ws.OpPing), "")); err != nil {
		t.Fatal(err)
	}
	c.expectClose(protocol.CloseProtocolError, 5*time.Second)
}

// msg-bytes-rate counts a compressed message at its inflated size: a
// client whose messages are tiny on the wire still gets rate_limited once
// the bytes it makes the server handle exceed the budget (burst: 4 s of a
// 16 KiB/s rate, at least max-message-bytes = 64 KiB).
func TestByteRateCountsInflatedBytes(t *testing.T) {
	opts := defaultOpts()
	opts.Compression = true
	opts.MsgBytesRate = 16 << 10
	opts.MaxMessageBytes = 64 << 10
	opts.QueueMaxBytes = 1 << 20
	e := start(t, opts)
	c, wc, _ := dialCompressed(t, e)
	c.ws.EnableWriteCompression(true)
	pad := strings.Repeat("p", 20<<10)
	for i := range 3 {
		c.send(map[string]any{"type": "ping", "id": fmt.Sprintf("b%d", i), "data": map[string]string{"pad": pad}})
		if f := c.expect(protocol.TypePong); f.ID != fmt.Sprintf("b%d", i) {
			t.Fatalf("pong id %q", f.ID)
		}
	}
	c.send(map[string]any{"type": "ping", "id": "b3", "data": map[string]string{"pad": pad}})
	c.expectError(protocol.CodeRateLimited, "b3")
	var wire int64
	for _, f := range wc.frames(t, false) {
		if !f.compressed && f.op == ws.OpText {
			t.Fatalf("a ping went out uncompressed: %+v", f)
		}
		wire += f.length
	}
	if wire > 4<<10 {
		t.Fatalf("the four pings took %d bytes on the wire: not the case this test is about", wire)
	}
}
