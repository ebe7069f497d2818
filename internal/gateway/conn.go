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
	"unicode/utf8"

	"github.com/gobwas/ws"
	"golang.org/x/time/rate"

	"github.com/parleyhq/parley/internal/auth"
	"github.com/parleyhq/parley/internal/protocol"
	"github.com/parleyhq/parley/internal/safe"
	"github.com/parleyhq/parley/internal/wsdeflate"
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

	// deflate: permessage-deflate was negotiated (wsdeflate): shared
	// frames of at least Options.CompressionThreshold bytes are written
	// compressed, and client messages may arrive compressed.
	deflate bool

	mu        sync.Mutex
	queue     []outFrame
	spare     []outFrame
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
	deadline  int64 // unix ns of the current write deadline (under mu)

	lastRead atomic.Int64 // unix ns of the last frame received
	lastPing atomic.Int64

	writerDone chan struct{}
	writerOnce sync.Once
	expiry     *time.Timer

	// read-goroutine-only state (handle runs on a hook worker while the
	// reader waits on handled)
	handled chan struct{}
	limiter *rate.Limiter
	// bytesLimiter: Options.MsgBytesRate (nil: off). A compressed message
	// costs its inflated size: compression makes the bytes cheap to send,
	// not to handle.
	bytesLimiter *rate.Limiter
	winStart     time.Time
	violations   int
	strikes      int
}

// outFrame is one queued frame: its bytes, and when they are shared by
// many connections, the Shared that holds their compressed form.
type outFrame struct {
	raw    []byte
	shared *wsdeflate.Shared
}

func newConn(g *Gateway, nc net.Conn, br *bufio.Reader, claims *auth.Claims, deflate bool) *Conn {
	c := &Conn{
		g: g, nc: nc, id: newConnID(), userID: claims.UserID, claims: claims, deflate: deflate,
		writerDone: make(chan struct{}),
		limiter:    rate.NewLimiter(rate.Limit(g.opts.MsgRate), g.opts.MsgBurst),
	}
	if r := g.opts.MsgBytesRate; r > 0 {
		c.bytesLimiter = rate.NewLimiter(rate.Limit(r), max(4*r, g.opts.MaxMessageBytes))
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

// Send enqueues one text frame (a broadcast or any frame not answering
// this connection's own request). It returns false when the connection is
// closing. The strict rule: a frame is admitted only if the bytes queued
// plus the frame stay within Options.QueueMaxBytes; otherwise the
// connection is closed with 4008 (slow consumer) and what was queued is
// dropped.
func (c *Conn) Send(frame []byte) bool { return c.enqueue(outFrame{raw: frame}, false) }

// SendShared is Send for a frame delivered to many connections
// (wsdeflate.SharedSender): a connection that negotiated permessage-deflate
// writes the frame's compressed form, made once for all of them.
func (c *Conn) SendShared(s *wsdeflate.Shared) bool {
	return c.enqueue(outFrame{raw: s.Raw(), shared: s}, false)
}

// Reply encodes and sends a reply to this connection's own request (or the
// connected frame). The reply rule: it is admitted whenever the bytes
// queued BEFORE it are under Options.QueueMaxBytes, whatever its own size,
// so a join reply (room:state) is never refused for its size (PROTOCOL.md
// §3); a client that has let its queue fill up is still cut with 4008.
func (c *Conn) Reply(typ, id string, data any) {
	c.enqueue(outFrame{raw: protocol.Encode(typ, id, data)}, true)
}

// slowConsumerGrace is how long the writer may still take, once a
// connection's queue has overflowed, to get the 4008 close frame out.
const slowConsumerGrace = time.Second

// enqueue admits frame by the Send rule, or by the Reply rule when reply.
func (c *Conn) enqueue(frame outFrame, reply bool) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	max := c.g.opts.QueueMaxBytes
	// c.queued ≤ max holds after every admission but a reply's, and the
	// frame is a server-built byte slice: no overflow in either sum.
	over := c.queued+len(frame.raw) > max
	if reply {
		over = c.queued >= max
	}
	if over {
		c.closing, c.dropQueue = true, true
		c.closeCode, c.closeMsg = protocol.CloseSlowConsumer, "slow consumer: outbound queue full"
		c.queue, c.queued = nil, 0
		// A write already blocked on this client's full socket gets only
		// slowConsumerGrace more, not the rest of the write timeout: the
		// close frame goes out if the socket drains by then, else the
		// connection is dropped (the client then sees 1006).
		// A deadline already past (an idle connection's, never re-armed)
		// would fail the close frame at once: it gets the grace too.
		now := time.Now().UnixNano()
		if by := now + int64(slowConsumerGrace); c.deadline <= now || c.deadline > by {
			c.deadline = by
			_ = c.nc.SetWriteDeadline(time.Unix(0, by))
		}
		c.kickLocked()
		c.mu.Unlock()
		c.g.metrics.QueueOverflows.Inc()
		c.g.log.Warn("slow consumer", "conn", c.id, "user", c.userID)
		return false
	}
	c.queue = append(c.queue, frame)
	c.queued += len(frame.raw)
	c.kickLocked()
	c.mu.Unlock()
	return true
}

// ReplyError sends an error frame carrying the request id (the Reply
// admission rule).
func (c *Conn) ReplyError(id string, e *protocol.Error) {
	c.g.metrics.Error(e.Code)
	c.enqueue(outFrame{raw: protocol.EncodeError(id, e)}, true)
}

// Close starts closing with code: what is queued is flushed, then the close
// frame is sent. Later calls do nothing.
func (c *Conn) Close(code int, msg string) { c.StartClose(code, msg) }

// StartClose is Close reporting whether this call started the close
// (false when the connection was already closing: the server API counts
// only the connections it closed).
func (c *Conn) StartClose(code int, msg string) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	c.closing, c.closeCode, c.closeMsg = true, code, msg
	c.kickLocked()
	c.mu.Unlock()
	return true
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
//
// Order matters: connected is queued before the connection is registered
// in the hub, so nothing another goroutine delivers can be queued ahead of
// it (PROTOCOL.md §1: the first frame is always connected).
//
// A panic in a message handler or in a connect hook closes only this
// connection with 1011 (the hook's or reader's recovery does it); the
// cleanup below runs in every case: hub removal, every lifecycle's
// Disconnected (each contained on its own), and waiting for the writer.
func (c *Conn) serve() {
	g := c.g
	c.Reply(protocol.TypeConnected, "", connectedData{
		UserID: c.userID, ConnectionID: c.id,
		HeartbeatIntervalMs: g.opts.HeartbeatInterval.Milliseconds(), ServerTime: protocol.Now(),
	})
	first := g.hub.Add(c)
	if g.draining.Load() {
		// Shutdown set draining before closing what the hub held: a
		// connection added after that pass is closed here, or it would
		// hold Shutdown until its context ends.
		c.Close(protocol.CloseGoingAway, "server shutting down")
	}
	if !c.claims.ExpiresAt.IsZero() {
		// The verifier accepted the token up to its leeway past exp; the
		// connection lives exactly as long (issue 9 §6).
		ttl := time.Until(c.claims.ExpiresAt) + g.verifier.Leeway()
		c.expiry = time.AfterFunc(ttl, func() { c.Close(protocol.CloseTokenExpired, "token expired") })
	}
	// The hooks may go deep (store queries); run them elsewhere so this
	// goroutine, which then waits in the read loop for the life of the
	// connection, keeps a small stack.
	hooksDone := make(chan struct{})
	g.runHook(func() {
		defer close(hooksDone)
		defer safe.Recover(g.log, g.metrics, safe.ConnectHook, c.internalError)
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
		c.disconnected(g.lifecycles[i], last)
	}
	<-c.writerDone
	_ = c.nc.Close()
	g.log.Debug("disconnected", "conn", c.id, "user", c.userID)
}

// disconnected tells l, containing a panic so that the other lifecycles
// and the connection's cleanup still run.
func (c *Conn) disconnected(l Lifecycle, last bool) {
	defer safe.Recover(c.g.log, c.g.metrics, safe.ConnectHook, nil)
	l.Disconnected(c, last)
}

// internalError closes the connection with 1011 after a contained panic
// (the argument is the panic value, already logged).
func (c *Conn) internalError(any) {
	c.Close(protocol.CloseInternalError, "internal error")
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
// frames stay one message each, and each frame written is counted in
// parley_messages_out_total by its type (the one place frames are counted).
// A panic here is contained: see writerPanicked.
func (c *Conn) writeLoop() {
	defer safe.Recover(c.g.log, c.g.metrics, safe.WSWriter, c.writerPanicked)
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
		} else if now := time.Now().UnixNano(); c.deadline-now < int64(c.g.opts.WriteTimeout)/2 {
			// Re-arm the write deadline only when less than half of it is
			// left: arming a timer for every batch costs more than the
			// write itself on a busy connection. Under mu, so that a
			// slow consumer's shorter deadline (enqueue) is never undone.
			c.deadline = now + int64(c.g.opts.WriteTimeout)
			_ = c.nc.SetWriteDeadline(time.Unix(0, c.deadline))
		}
		if len(batch) == 0 && !ping && !pongDue && !closing {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()

		if c.g.writerTestHook != nil {
			c.g.writerTestHook(c)
		}
		err := c.writeBatch(hdr[:], batch, ping, pongDue, pong, closing, code, msg)
		if err == nil {
			for _, f := range batch {
				c.g.metrics.OutFrame(f.raw)
			}
		}
		for i := range batch {
			batch[i] = outFrame{}
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
			c.writerFinished()
			return
		}
		if closing {
			c.g.metrics.Close(code)
			c.halfClose()
			c.writerFinished()
			return
		}
	}
}

// writerFinished closes writerDone, once.
func (c *Conn) writerFinished() { c.writerOnce.Do(func() { close(c.writerDone) }) }

// halfClose shuts the write side and gives the peer a moment to answer
// with its close frame; the reader ends on EOF or this deadline.
func (c *Conn) halfClose() {
	if tc, ok := c.nc.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(c.g.opts.closeWait()))
}

// writerPanicked ends a writer that panicked: no more frames are accepted,
// a 1011 close frame is written directly (best effort: if the panic came
// in the middle of a frame the peer sees a broken frame instead), and the
// reader and serve are released as after any close.
func (c *Conn) writerPanicked(any) {
	c.mu.Lock()
	c.closing, c.dropQueue = true, true
	c.closeCode, c.closeMsg = protocol.CloseInternalError, "internal error"
	c.queue, c.queued = nil, 0
	c.writing, c.finished = false, true
	c.mu.Unlock()
	var hdr [ws.MaxHeaderSize]byte
	payload := closePayload(protocol.CloseInternalError, "internal error")
	n := putHeader(hdr[:], ws.OpClose, len(payload))
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.g.opts.WriteTimeout))
	if _, err := c.nc.Write(append(hdr[:n:n], payload...)); err != nil {
		_ = c.nc.Close()
	} else {
		c.g.metrics.Close(protocol.CloseInternalError)
		c.halfClose()
	}
	c.writerFinished()
}

// writeBatch writes frames and control frames in one buffered write.
func (c *Conn) writeBatch(hdr []byte, batch []outFrame, ping, pongDue bool, pong []byte, closing bool, code int, msg string) error {
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(c.nc)
	defer func() {
		bw.Reset(nil)
		writerPool.Put(bw)
	}()
	for _, f := range batch {
		p, first := f.raw, byte(0x80|ws.OpText)
		if z := c.compressed(f); z != nil {
			// RSV1: a compressed message (RFC 7692 §6).
			p, first = z, first|0x40
		}
		n := putHeader(hdr, ws.OpText, len(p))
		hdr[0] = first
		if _, err := bw.Write(hdr[:n]); err != nil {
			return err
		}
		if _, err := bw.Write(p); err != nil {
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

// compressed is the bytes to write for f compressed, or nil to write it
// raw: only a shared frame of at least the threshold, on a connection that
// negotiated permessage-deflate, and only if compressing made it smaller.
// Frames for one connection are never compressed (that would cost
// compression per connection).
func (c *Conn) compressed(f outFrame) []byte {
	if !c.deflate || f.shared == nil || len(f.raw) < c.g.opts.CompressionThreshold {
		return nil
	}
	return f.shared.Compressed()
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

// maxCloseReason is the most bytes of reason a close frame holds: its
// payload is at most 125 bytes, 2 of them the code (RFC 6455 §5.5).
const maxCloseReason = 123

// closePayload is a close frame's payload: the code and the reason cut to
// maxCloseReason bytes on a character boundary (the reason must be valid
// UTF-8, RFC 6455 §5.5.1).
func closePayload(code int, msg string) []byte {
	if len(msg) > maxCloseReason {
		n := maxCloseReason
		for n > 0 && !utf8.RuneStart(msg[n]) {
			n--
		}
		msg = msg[:n]
	}
	b := make([]byte, 2+len(msg))
	binary.BigEndian.PutUint16(b, uint16(code))
	copy(b[2:], msg)
	return b
}

// readLoop reads frames until the connection ends. A framing violation
// closes with its frameError code (1002 or 4009); a panic in a handler is
// contained here and closes this connection only, with 1011.
func (c *Conn) readLoop() {
	// A small read buffer: a typical client message (header and payload)
	// then takes one read(2) instead of three, for 512 bytes per connection.
	var r io.Reader = c.br
	if c.br == nil {
		r = bufio.NewReaderSize(c.nc, 512)
	}
	defer safe.Recover(c.g.log, c.g.metrics, safe.WSReader, func(any) {
		c.internalError(nil)
		c.drain(r)
	})
	fr := newFrameReader(r, c.g.opts.MaxMessageBytes)
	fr.deflate = c.deflate
	fr.onFrame = func() { c.lastRead.Store(time.Now().UnixNano()) }
	if c.isClosing() { // a connect hook failed, or Shutdown came first
		c.awaitClose(fr)
		return
	}
	for {
		f, err := fr.next()
		if err != nil {
			var fe *frameError
			if errors.As(err, &fe) {
				if fe.code == protocol.CloseProtocolError {
					c.g.log.Debug("websocket protocol error", "conn", c.id, "user", c.userID, "err", fe.reason)
				}
				c.Close(fe.code, fe.reason)
				c.drain(r)
			}
			return
		}
		switch f.kind {
		case kindPing:
			c.mu.Lock()
			c.pong, c.pongDue = f.payload, true
			c.kickLocked()
			c.mu.Unlock()
			continue
		case kindPong:
			continue
		case kindClose:
			// The peer's close frame ends the closing handshake (ours is
			// queued or already sent): nothing more may follow it, so
			// there is nothing to drain; serve closes the TCP connection
			// once our close frame is written (RFC 6455 §7.1.1: the
			// server closes first). Waiting here for the peer to drop the
			// connection held a drain up to 2 s per client.
			c.Close(f.closeCode, "")
			return
		}
		if f.binary {
			c.violation("", protocol.Errorf(protocol.CodeBadRequest, "binary frames are not supported; send JSON text frames"))
		} else {
			c.handleOffStack(f.payload)
		}
		if c.isClosing() {
			c.awaitClose(fr)
			return
		}
	}
}

// closeDrainBytes bounds what the server reads, and discards, from a peer
// after its own close frame (awaitClose, drain).
const closeDrainBytes = 1 << 20

// awaitClose waits, once this side started closing, for the peer's close
// frame (the end of the closing handshake, RFC 6455 §7.1.1: the server
// then drops the TCP connection at once), discarding any other frame, up
// to Options.CloseWait and closeDrainBytes. Where the stream itself is
// broken (a framing error) drain is used instead.
func (c *Conn) awaitClose(fr *frameReader) {
	_ = c.nc.SetReadDeadline(time.Now().Add(c.g.opts.closeWait()))
	fr.r = io.LimitReader(fr.r, closeDrainBytes)
	fr.onFrame = nil
	for {
		f, err := fr.next()
		if err != nil || f.kind == kindClose {
			return
		}
	}
}

func (c *Conn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// drain discards input until the peer closes or CloseWait passes, so our
// close frame is not lost to a TCP reset: for a stream that cannot be read
// as frames any more (a framing error, a panic in the reader).
func (c *Conn) drain(r io.Reader) {
	_ = c.nc.SetReadDeadline(time.Now().Add(c.g.opts.closeWait()))
	_, _ = io.Copy(io.Discard, io.LimitReader(r, closeDrainBytes))
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

// handleOffStack runs handle on a hook worker (gateway.runHook) and waits
// for it, so messages of one connection are still handled one at a time,
// in order. Handlers go deep (JSON decoding, rooms, the store), and this
// goroutine then waits in the read loop for the life of the connection: a
// stack grown here once stays at 8 KiB, since the GC halves a stack only
// while less than a quarter of it is used, which an idle read loop is
// not. Handling a room:join here made an idle member's stack 8 KiB
// instead of 4 KiB (docs/performance.md, "Join storm"). A panic in a
// handler closes this connection with 1011 as before: the reader sees it
// closing and drains.
func (c *Conn) handleOffStack(frame []byte) {
	if c.handled == nil {
		c.handled = make(chan struct{}, 1)
	}
	c.g.runHook(func() {
		defer func() { c.handled <- struct{}{} }()
		defer safe.Recover(c.g.log, c.g.metrics, safe.WSReader, c.internalError)
		c.handle(frame)
	})
	<-c.handled
}

// handle processes one complete text message.
func (c *Conn) handle(frame []byte) {
	env, perr := protocol.Decode(frame)
	now := time.Now()
	if !c.limiter.AllowN(now, 1) || (c.bytesLimiter != nil && !c.bytesLimiter.AllowN(now, len(frame))) {
		c.g.metrics.In(env.Type, false) // "unknown": refused before validation
		c.ReplyError(env.ID, protocol.Errorf(protocol.CodeRateLimited, "too many messages; slow down"))
		c.windowed(now)
		c.strikes++
		if c.strikes >= c.g.opts.RateLimitStrikes {
			c.g.log.Info("closing for rate abuse", "conn", c.id, "user", c.userID)
			c.Close(protocol.CloseRateLimited, "rate limit exceeded")
		}
		return
	}
	if perr != nil {
		c.g.metrics.In(protocol.LabelUnknown, false)
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
