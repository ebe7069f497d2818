package gateway_test

import (
	"bufio"
	"fmt"
	"github.com/parleyhq/parley/internal/protocol"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawUpgrade sends a WebSocket upgrade request carrying ext as its
// Sec-WebSocket-Extensions header and returns the response status.
func rawUpgrade(t *testing.T, e *env, ext string) int {
	t.Helper()
	nc, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(nc, "GET /ws?token=%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"+
		"Sec-WebSocket-Extensions: %s\r\n\r\n", e.token("u1", time.Hour), ext)
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode
}

// docs/protocol.md "Compression": an offer the server cannot honour,
// including "parameters that do not parse", is declined and the
// connection goes on uncompressed, "never an upgrade failure". With
// --ws-compression=false every one of these headers upgrades (gobwas/ws
// does not parse the header then); with compression on (the default) the
// upgrader's own header scan (ws.ErrMalformedRequest) answers 400 before
// the Negotiate callback is ever called, so turning compression on
// refuses clients that connected before.
func TestMalformedExtensionsHeaderNeverFailsUpgrade(t *testing.T) {
	headers := []string{
		"",                                    // an empty header line
		"permessage-deflate;;",                // empty parameter
		"permessage-deflate; =",               // parameter without a name
		`permessage-deflate; a="unterminated`, // bad quoted-string
		"@@@",                                 // not a token at all
		`"permessage-deflate"`,                // quoted extension name
		"permessage-deflate; client_max_window_bits=\u00e9", // non-ASCII value
	}
	for _, compression := range []bool{false, true} {
		opts := defaultOpts()
		opts.Compression, opts.CompressionThreshold = compression, 1024
		e := start(t, opts)
		for _, h := range headers {
			if got := rawUpgrade(t, e, h); got != http.StatusSwitchingProtocols {
				t.Errorf("compression=%v, Sec-WebSocket-Extensions %q: status %d, want 101 (declined, plain connection)", compression, h, got)
			}
		}
	}
}

// A connection whose queue overflows while its writer is idle must still
// get the 4008 close frame when its socket is fine (docs/protocol.md: a
// slow consumer is closed with 4008; slowConsumerGrace: "the close frame
// goes out if the socket drains by then"). Since a099333 the overflow
// path only lowers the write deadline (c.deadline > by), and the writer
// no longer re-arms it when dropping the queue. On a connection that has
// written nothing for longer than the write timeout (the default
// heartbeat, 30 s, is three write timeouts, 10 s) c.deadline is in the
// past: it is kept, the close frame's write fails at once with a timeout,
// and a client that reads everything sees the TCP connection dropped
// (1006) instead of 4008. Here the single frame is larger than the queue
// (queue-max-bytes set low), the simplest way to overflow an idle
// connection; a burst that piles up before the writer goroutine runs does
// the same.
func TestOverflowOnIdleConnectionStillSends4008(t *testing.T) {
	opts := defaultOpts()
	opts.WriteTimeout = 200 * time.Millisecond
	opts.QueueMaxBytes = 4096
	e := start(t, opts)
	c := e.dial("u1")
	// Idle for longer than the write timeout: the deadline armed for the
	// connected frame has passed.
	time.Sleep(3 * opts.WriteTimeout)
	big := protocol.Encode("test:big", "", map[string]string{"p": strings.Repeat("x", 8000)})
	e.hub.SendAll(big, "")
	c.expectClose(protocol.CloseSlowConsumer, 3*time.Second)
}
