package gateway_test

import (
	"bufio"
	"fmt"
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
func TestReviewMalformedExtensionsHeaderNeverFailsUpgrade(t *testing.T) {
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
