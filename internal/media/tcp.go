package media

import (
	"encoding/binary"
	"errors"
	"net"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/logging"
)

// ICE over TCP (RFC 6544), passive side only: with Config.TCPPort every
// transport also offers a passive TCP host candidate on one shared listening
// port, served by pion's ice.TCPMuxDefault. The mux routes each accepted
// connection by the local ufrag in the USERNAME of its first RFC 4571-framed
// STUN message (2-byte length prefix), so that first message is also where
// the client's ufrag is learnt: the listener handed to the mux wraps every
// accepted net.Conn in a sniffingConn, which runs the first framed message
// through the same ufragWaiters logic as the UDP path.

// tcpEndpoint is the shared ICE-TCP listener with its mux and waiters.
type tcpEndpoint struct {
	waiters *ufragWaiters
	mux     *ice.TCPMuxDefault
	port    int
}

func openTCPEndpoint(ip string, port int, lf logging.LoggerFactory) (*tcpEndpoint, error) {
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.ParseIP(ip), Port: port})
	if err != nil {
		return nil, err
	}
	w := newUfragWaiters(lf)
	mux := ice.NewTCPMuxDefault(ice.TCPMuxParams{
		Listener:       &sniffingListener{Listener: ln, waiters: w},
		Logger:         lf.NewLogger("tcpmux"),
		ReadBufferSize: 64, // packets queued per ufrag before the agent reads them
		// Writes go to a per-connection queue of up to this many bytes
		// (pion's bufferedConn, written by its own goroutine) instead of
		// blocking the forwarding goroutine on a slow TCP peer; when it is
		// full whole packets are dropped, as they would be on UDP.
		WriteBufferSize: 1 << 20,
	})
	return &tcpEndpoint{waiters: w, mux: mux, port: ln.Addr().(*net.TCPAddr).Port}, nil
}

// close closes the listener and every connection, and waits for the mux's
// goroutines.
func (e *tcpEndpoint) close() error {
	return e.mux.Close()
}

// sniffingListener wraps the listener given to the TCP mux.
type sniffingListener struct {
	net.Listener
	waiters *ufragWaiters
}

// Accept retries failed accepts (EMFILE and the like) with a backoff, as
// net/http does: pion's mux stops accepting for good at the first error.
// Only a closed listener (TCPMuxDefault.Close) ends it.
func (l *sniffingListener) Accept() (net.Conn, error) {
	delay := 5 * time.Millisecond
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			return &sniffingConn{Conn: c, waiters: l.waiters}, nil
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		time.Sleep(delay)
		delay = min(2*delay, time.Second)
	}
}

// maxSniffedFrame bounds what is buffered for the first message (the mux
// itself refuses a first message over 512 bytes).
const maxSniffedFrame = 1500

// sniffingConn copies what is read from the connection until the first
// RFC 4571 frame is complete, and hands that frame to the waiters. Reads
// are sequential (first the mux's handleConn goroutine, then the
// tcpPacketConn's reader, started after it), so no lock is needed.
type sniffingConn struct {
	net.Conn
	waiters *ufragWaiters
	done    bool
	buf     []byte
}

func (c *sniffingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && !c.done {
		c.buf = append(c.buf, b[:n]...)
		if len(c.buf) >= 2 {
			l := int(binary.BigEndian.Uint16(c.buf))
			switch {
			case l > maxSniffedFrame:
				c.done, c.buf = true, nil
			case len(c.buf) >= 2+l:
				frame := c.buf[2 : 2+l]
				c.done, c.buf = true, nil
				c.waiters.inspect(frame)
			}
		}
	}
	return n, err
}
