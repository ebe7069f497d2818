package gateway

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/time/rate"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/protocol"
)

// Conn is one WebSocket connection. Send never blocks: frames go into a
// bounded queue (by bytes) that a writer goroutine drains into the socket,
// coalescing everything queued into one buffered write. The writer runs only
// while there is something to write: an idle connection owns no writer
// goroutine, no buffer and no wake-up channel.
type Conn struct {
	g      *Gateway
	nc     net.Conn
	br     *bufio.Reader // may be nil: read nc directly
	id     string
	userID string
	claims *auth.Claims

	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	queue     [][]byte
	spare     [][]byte
	queued    int
	closing   bool // no more frames accepted; writer sends the close frame
	closeCode int
	closeMsg  string
	dropQueue bool // overflow: do not flush what is queued
	pingDue   bool
	pong      []byte
	pongDue   bool
	writing   bool  // a writer goroutine is running
	finished  bool  // the writer is done for good (close sent or socket failed)
	deadline  int64 // unix ns of the current write deadline (writer only)

	lastRead atomic.Int64 // unix ns of the last frame received
	lastPing atomic.Int64

	writerDone chan struct{}
	expiry     *time.Timer

	// read-goroutine-only state
	limiter    *rate.Limiter
	winStart   time.Time
	violations int
	strikes    int
}

func newConn(g *Gateway, nc net.Conn, br *bufio.Reader, claims *auth.Claims) *Conn {
	c := &Conn{
		g: g, nc: nc, id: newConnID(), userID: claims.UserID, claims: claims,
		writerDone: make(chan struct{}),
		limiter:    rate.NewLimiter(rate.Limit(g.opts.MsgRate), g.opts.MsgBurst),
	}
	// Keep the hijacked reader only if the client already sent bytes after
	// the handshake; otherwise read the socket directly and let the 4 KiB
	// buffer go (memory per idle connection matters).
	if br != nil && br.Buffered() > 0 {
		c.br = br
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	now := time.Now().UnixNano()
	c.lastRead.Store(now)
	c.lastPing.Store(now)
	return c
}

// ID is the connection id (also the client id in rooms).
func (c *Conn) ID() string { return c.id }

// UserID is the token's subject.
func (c *Conn) UserID() string { return c.userID }

// Name is the token's display name (may be empty).
func (c *Conn) Name() string { return c.claims.Name }

// Claims are the verified token claims.
func (c *Conn) Claims() *auth.Claims { return c.claims }

// Done is closed when the connection ends.
func (c *Conn) Done() <-chan struct{} { return c.ctx.Done() }

// Send enqueues one text frame. It returns false when the connection is
// closing; a frame that would overflow the queue closes the connection with
// 4008 (slow consumer) and drops what was queued.
func (c *Conn) Send(frame []byte) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	if c.queued+len(frame) > c.g.opts.QueueMaxBytes {
		c.closing, c.dropQueue = true, true
		c.closeCode, c.closeMsg = protocol.CloseSlowConsumer, "slow consumer: outbound queue full"
		c.queue, c.queued = nil, 0
		c.kickLocked()
		c.mu.Unlock()
		c.g.metrics.QueueOverflows.Inc()
		c.g.log.Warn("slow consumer", "conn", c.id, "user", c.userID)
		return false
	}
	c.queue = append(c.queue, frame)
	c.queued += len(frame)
	c.kickLocked()
	c.mu.Unlock()
	return true
}

// Reply encodes and sends a message to this connection.
func (c *Conn) Reply(typ, id string, data any) {
	if c.Send(protocol.Encode(typ, id, data)) {
		c.g.metrics.Out(typ, 1)
	}
}

// ReplyError sends an error frame.
func (c *Conn) ReplyError(id string, e *protocol.Error) {
	c.g.metrics.Error(e.Code)
	c.Send(protocol.EncodeError(id, e))
}

// Close starts closing with code: what is queued is flushed, then the close
// frame is sent. Later calls do nothing.
func (c *Conn) Close(code int, msg string) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.closing, c.closeCode, c.closeMsg = true, code, msg
	c.kickLocked()
	c.mu.Unlock()
}

// abort drops the TCP connection at once.
func (c *Conn) abort() { _ = c.nc.Close() }

// kickLocked starts the writer unless one is running. Needs c.mu.
func (c *Conn) kickLocked() {
	if !c.writing && !c.finished {
		c.writing = true
		go c.writeLoop()
	}
}

func (c *Conn) requestPing() {
	c.mu.Lock()
	c.pingDue = true
	c.kickLocked()
	c.mu.Unlock()
}

// serve runs the connection on the calling goroutine until it ends.
func (c *Conn) serve() {
	g := c.g
	first := g.hub.Add(c)
	if ttl := time.Until(c.claims.ExpiresAt); !c.claims.ExpiresAt.IsZero() {
		c.expiry = time.AfterFunc(ttl, func() { c.Close(protocol.CloseTokenExpired, "token expired") })
	}
	c.Reply(protocol.TypeConnected, "", connectedData{
		UserID: c.userID, ConnectionID: c.id,
		HeartbeatIntervalMs: g.opts.HeartbeatInterval.Milliseconds(), ServerTime: protocol.Now(),
	})
	// The hooks may go deep (store queries); run them elsewhere so this
	// goroutine, which then waits in the read loop for the life of the
	// connection, keeps a small stack.
	hooksDone := make(chan struct{})
	g.runHook(func() {
		defer close(hooksDone)
		for _, l := range g.lifecycles {
			l.Connected(c, first)
		}
	})
	<-hooksDone
	g.log.Debug("connected", "conn", c.id, "user", c.userID)

	c.readLoop()

	// The connection is over: stop everything it owns.
	c.Close(protocol.CloseNormal, "")
	if c.expiry != nil {
		c.expiry.Stop()
	}
	c.cancel()
	last := g.hub.Remove(c)
	for i := len(g.lifecycles) - 1; i >= 0; i-- {
		g.lifecycles[i].Disconnected(c, last)
	}
	<-c.writerDone
	_ = c.nc.Close()
	g.log.Debug("disconnected", "conn", c.id, "user", c.userID)
}

type connectedData struct {
	UserID              string `json:"user_id"`
	ConnectionID        string `json:"connection_id"`
	HeartbeatIntervalMs int64  `json:"heartbeat_interval_ms"`
	ServerTime          string `json:"server_time"`
}

var writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}

// writeLoop drains the queue until it is empty, then exits (Send starts a
// new one). Everything queued at each turn goes out in one buffered write;
// frames stay one message each.
func (c *Conn) writeLoop() {
	var hdr [ws.MaxHeaderSize]byte
	for {
		c.mu.Lock()
		batch := c.queue
		c.queue, c.spare = c.spare[:0], nil
		c.queued = 0
		ping, pongDue, pong := c.pingDue, c.pongDue, c.pong
		c.pingDue, c.pongDue, c.pong = false, false, nil
		closing, code, msg, drop := c.closing, c.closeCode, c.closeMsg, c.dropQueue
		if drop {
			batch = nil
		}
		if len(batch) == 0 && !ping && !pongDue && !closing {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()

		err := c.writeBatch(hdr[:], batch, ping, pongDue, pong, closing, code, msg)
		for i := range batch {
			batch[i] = nil
		}
		c.mu.Lock()
		if c.spare == nil && cap(batch) <= 1024 {
			c.spare = batch[:0]
		}
		if err != nil || closing {
			c.writing, c.finished = false, true
		}
		c.mu.Unlock()
		if err != nil {
			_ = c.nc.Close() // unblocks the reader
			close(c.writerDone)
			return
		}
		if closing {
			c.g.metrics.Closes.WithLabelValues(closeCodeLabel(code)).Inc()
			// Half-close and give the peer a moment to answer with its
			// close frame; the reader ends on EOF or this deadline.
			if tc, ok := c.nc.(*net.TCPConn); ok {
				_ = tc.CloseWrite()
			}
			_ = c.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
			close(c.writerDone)
			return
		}
	}
}

// writeBatch writes frames and control frames in one buffered write.
func (c *Conn) writeBatch(hdr []byte, batch [][]byte, ping, pongDue bool, pong []byte, closing bool, code int, msg string) error {
	// Re-arm the write deadline only when less than half of it is left:
	// arming a timer for every batch costs more than the write itself on
	// a busy connection.
	now := time.Now().UnixNano()
	if c.deadline-now < int64(c.g.opts.WriteTimeout)/2 {
		c.deadline = now + int64(c.g.opts.WriteTimeout)
		_ = c.nc.SetWriteDeadline(time.Unix(0, c.deadline))
	}
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(c.nc)
	defer func() {
		bw.Reset(nil)
		writerPool.Put(bw)
	}()
	for _, f := range batch {
		n := putHeader(hdr, ws.OpText, len(f))
		if _, err := bw.Write(hdr[:n]); err != nil {
			return err
		}
		if _, err := bw.Write(f); err != nil {
			return err
		}
	}
	if pongDue {
		if err := writeControl(bw, hdr, ws.OpPong, pong); err != nil {
			return err
		}
	}
	if ping {
		if err := writeControl(bw, hdr, ws.OpPing, nil); err != nil {
			return err
		}
	}
	if closing {
		if err := writeControl(bw, hdr, ws.OpClose, closePayload(code, msg)); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func putHeader(b []byte, op ws.OpCode, n int) int {
	b[0] = 0x80 | byte(op)
	switch {
	case n < 126:
		b[1] = byte(n)
		return 2
	case n <= 0xffff:
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
		return 4
	default:
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
		return 10
	}
}

func writeControl(bw *bufio.Writer, hdr []byte, op ws.OpCode, payload []byte) error {
	n := putHeader(hdr, op, len(payload))
	if _, err := bw.Write(hdr[:n]); err != nil {
		return err
	}
	_, err := bw.Write(payload)
	return err
}

func closePayload(code int, msg string) []byte {
	if len(msg) > 120 {
		msg = msg[:120]
	}
	b := make([]byte, 2+len(msg))
	binary.BigEndian.PutUint16(b, uint16(code))
	copy(b[2:], msg)
	return b
}

// readLoop reads frames until the connection ends.
func (c *Conn) readLoop() {
	// A small read buffer: a typical client message (header and payload)
	// then takes one read(2) instead of three, for 512 bytes per connection.
	var r io.Reader = c.br
	if c.br == nil {
		r = bufio.NewReaderSize(c.nc, 512)
	}
	var hb [ws.MaxHeaderSize]byte
	max := int64(c.g.opts.MaxMessageBytes)
	var msg []byte // fragments of a message in progress
	var inMessage, binaryMsg bool
	for {
		h, err := ws.ReadHeaderBuffer(r, hb[:])
		if err != nil {
			return
		}
		c.lastRead.Store(time.Now().UnixNano())
		if !h.Masked {
			c.Close(1002, "client frames must be masked")
			c.drain(r)
			return
		}
		if h.OpCode.IsControl() {
			if h.Length > 125 || !h.Fin {
				c.Close(1002, "invalid control frame")
				c.drain(r)
				return
			}
			payload := make([]byte, h.Length)
			if _, err := io.ReadFull(r, payload); err != nil {
				return
			}
			ws.Cipher(payload, h.Mask, 0)
			switch h.OpCode {
			case ws.OpPing:
				c.mu.Lock()
				c.pong, c.pongDue = payload, true
				c.kickLocked()
				c.mu.Unlock()
			case ws.OpClose:
				code := protocol.CloseNormal
				if len(payload) >= 2 {
					code = int(binary.BigEndian.Uint16(payload))
				}
				c.Close(code, "")
				c.drain(r)
				return
			}
			continue
		}
		if int64(len(msg))+h.Length > max {
			c.Close(protocol.CloseMessageTooBig, "message too big")
			c.drain(r)
			return
		}
		switch h.OpCode {
		case ws.OpText, ws.OpBinary:
			if inMessage {
				c.Close(1002, "new message before the previous one ended")
				c.drain(r)
				return
			}
			inMessage = true
		case ws.OpContinuation:
			if !inMessage {
				c.Close(1002, "continuation without a message")
				c.drain(r)
				return
			}
		}
		start := len(msg)
		msg = append(msg, make([]byte, h.Length)...)
		if _, err := io.ReadFull(r, msg[start:]); err != nil {
			return
		}
		ws.Cipher(msg[start:], h.Mask, 0)
		if h.OpCode != ws.OpContinuation {
			binaryMsg = h.OpCode == ws.OpBinary
		}
		if !h.Fin {
			continue
		}
		inMessage = false
		if binaryMsg {
			c.violation("", protocol.Errorf(protocol.CodeBadRequest, "binary frames are not supported; send JSON text frames"))
		} else {
			c.handle(msg)
		}
		msg = nil
		if c.isClosing() {
			c.drain(r)
			return
		}
	}
}

func (c *Conn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// drain discards input until the peer closes or the deadline set by the
// writer passes, so the close frame is not lost to a TCP reset.
func (c *Conn) drain(r io.Reader) {
	_ = c.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, _ = io.Copy(io.Discard, io.LimitReader(r, 1<<20))
}

// windowed resets the violation and strike counters every window.
func (c *Conn) windowed(now time.Time) {
	if now.Sub(c.winStart) > c.g.opts.ViolationWindow {
		c.winStart, c.violations, c.strikes = now, 0, 0
	}
}

// violation answers a bad message and closes with 4400 when they repeat.
func (c *Conn) violation(id string, e *protocol.Error) {
	c.ReplyError(id, e)
	c.windowed(time.Now())
	c.violations++
	if c.violations >= c.g.opts.ViolationLimit {
		c.g.log.Info("closing for repeated protocol violations", "conn", c.id, "user", c.userID)
		c.Close(protocol.CloseProtocolAbuse, "repeated protocol violations")
	}
}

// handle processes one complete text message.
func (c *Conn) handle(frame []byte) {
	env, perr := protocol.Decode(frame)
	if !c.limiter.Allow() {
		c.g.metrics.In(env.Type, false)
		c.ReplyError(env.ID, protocol.Errorf(protocol.CodeRateLimited, "too many messages; slow down"))
		c.windowed(time.Now())
		c.strikes++
		if c.strikes >= c.g.opts.RateLimitStrikes {
			c.g.log.Info("closing for rate abuse", "conn", c.id, "user", c.userID)
			c.Close(protocol.CloseRateLimited, "rate limit exceeded")
		}
		return
	}
	if perr != nil {
		c.g.metrics.In("", false)
		c.violation(env.ID, perr)
		return
	}
	if env.Type == protocol.TypePing {
		c.g.metrics.In(env.Type, true)
		c.Reply(protocol.TypePong, env.ID, nil)
		return
	}
	prefix, _, ok := strings.Cut(env.Type, ":")
	h := c.g.routes[prefix]
	if !ok || h == nil {
		c.g.metrics.In(env.Type, false)
		c.violation(env.ID, protocol.Errorf(protocol.CodeBadRequest, "unknown message type %q", truncate(env.Type, 64)))
		return
	}
	c.g.metrics.In(env.Type, true)
	if err := h.Handle(c.ctx, c, env); err != nil {
		pe := protocol.AsError(err)
		if pe.Code == protocol.CodeInternal {
			var direct *protocol.Error
			if !errors.As(err, &direct) {
				c.g.log.Error("handler failed", "type", env.Type, "conn", c.id, "err", err)
			}
		}
		if pe.Code == protocol.CodeBadRequest || pe.Code == protocol.CodeTooLarge {
			c.violation(env.ID, pe)
			return
		}
		c.ReplyError(env.ID, pe)
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
