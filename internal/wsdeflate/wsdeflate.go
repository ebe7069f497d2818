// Package wsdeflate is the server's side of the WebSocket permessage-deflate
// extension (RFC 7692), restricted to what lets one compressed frame be
// shared by many connections: the server accepts an offer only with
// server_no_context_takeover and client_no_context_takeover, so every
// message is compressed and decompressed on its own (no sliding window kept
// between messages, none kept per connection).
//
//   - Negotiate wraps gobwas/ws/wsflate's negotiation (the header parsing is
//     the library's) so that an offer the server cannot honour is declined
//     (a plain connection), never an upgrade failure.
//   - Shared is a frame's bytes as delivered to many connections; its
//     compressed form is made once, on first use, and reused by every
//     connection that negotiated the extension.
//   - Inflate decompresses one client message with a hard bound on the
//     output.
package wsdeflate

import (
	"bytes"
	"errors"
	"io"
	"sync"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws/wsflate"
	"github.com/klauspost/compress/flate"
)

// Level is the compression level: the fastest with LZ77 matching. A
// room:members_changed batch of 150–500 entries compresses to about a
// quarter at this level (docs/performance.md).
const Level = flate.BestSpeed

// tail is what RFC 7692 §7.2.1 strips from the end of a compressed
// message (the empty stored block of a sync flush) and §7.2.2 puts back
// before decompressing.
var tail = []byte{0x00, 0x00, 0xff, 0xff}

// finalBlock is an empty final stored block: appended after tail so that
// the decompressor ends with io.EOF instead of waiting for more input.
var finalBlock = []byte{0x01, 0x00, 0x00, 0xff, 0xff}

// Negotiator negotiates permessage-deflate for one upgrade (it is not safe
// for concurrent use; make one per request).
type Negotiator struct {
	ext wsflate.Extension
}

// NewNegotiator returns a negotiator whose response always carries
// server_no_context_takeover and client_no_context_takeover.
func NewNegotiator() *Negotiator {
	return &Negotiator{ext: wsflate.Extension{Parameters: wsflate.Parameters{
		ServerNoContextTakeover: true,
		ClientNoContextTakeover: true,
	}}}
}

// Negotiate is ws.HTTPUpgrader.Negotiate. An offer the server cannot
// honour (a server_max_window_bits below 15, since frames are compressed
// once for every connection with the full window; or parameters that do
// not parse) is declined: the zero option, no error, so the connection is
// upgraded without the extension. wsflate accepts the first acceptable
// offer of several and ignores the rest.
func (n *Negotiator) Negotiate(opt httphead.Option) (httphead.Option, error) {
	if !bytes.Equal(opt.Name, wsflate.ExtensionNameBytes) {
		return httphead.Option{}, nil
	}
	if _, ok := n.ext.Accepted(); ok {
		return httphead.Option{}, nil
	}
	// RFC 7692 §7: an offer with two parameters of one name is declined
	// (wsflate misses a repeated value-less client_max_window_bits, and
	// the strip below would hide a repeated server_max_window_bits).
	if hasDuplicateParameter(opt) {
		return httphead.Option{}, nil
	}
	// A server_max_window_bits of 15 is the window the server uses: wsflate
	// declines any value, so take it out of a copy of the offer.
	opt = withoutFullServerWindow(opt)
	accept, err := n.ext.Negotiate(opt)
	if err != nil {
		// Malformed or duplicate parameters: decline this offer (the
		// extension's state is reset so a later valid offer may still be
		// taken).
		n.ext.Reset()
		return httphead.Option{}, nil
	}
	return accept, nil
}

// hasDuplicateParameter reports whether opt names a parameter twice.
func hasDuplicateParameter(opt httphead.Option) bool {
	var seen []string
	dup := false
	opt.Parameters.ForEach(func(k, _ []byte) bool {
		for _, n := range seen {
			if n == string(k) {
				dup = true
				return false
			}
		}
		seen = append(seen, string(k))
		return true
	})
	return dup
}

// ValidHeader reports whether a Sec-WebSocket-Extensions header value
// parses as RFC 6455 §9.1 extension offers (httphead's scanner, which
// gobwas/ws's upgrader runs before Negotiate; an upgrade with a header it
// cannot scan fails there, so the gateway drops such a header first and
// upgrades without the extension).
func ValidHeader(v string) bool {
	return httphead.ScanOptions([]byte(v), func(int, []byte, []byte, []byte) httphead.Control {
		return httphead.ControlContinue
	})
}

// withoutFullServerWindow returns opt without a server_max_window_bits=15
// parameter (the server's window is 15 bits: the value asks for nothing).
func withoutFullServerWindow(opt httphead.Option) httphead.Option {
	full := false
	opt.Parameters.ForEach(func(k, v []byte) bool {
		if string(k) == "server_max_window_bits" && string(v) == "15" {
			full = true
			return false
		}
		return true
	})
	if !full {
		return opt
	}
	out := httphead.Option{Name: opt.Name}
	opt.Parameters.ForEach(func(k, v []byte) bool {
		if !(string(k) == "server_max_window_bits" && string(v) == "15") {
			out.Parameters.Set(k, v)
		}
		return true
	})
	return out
}

// Accepted reports whether the extension was negotiated.
func (n *Negotiator) Accepted() bool {
	_, ok := n.ext.Accepted()
	return ok
}

var writers = sync.Pool{New: func() any {
	w, err := flate.NewWriter(nil, Level)
	if err != nil {
		panic(err) // Level is a valid constant
	}
	return w
}}

// Compress returns src compressed as one permessage-deflate message
// (RFC 7692 §7.2.1: a sync flush with its trailing 0x00 0x00 0xff 0xff
// removed), or nil when the result would not be smaller than src.
func Compress(src []byte) []byte {
	var buf bytes.Buffer
	buf.Grow(len(src)/3 + 64)
	w := writers.Get().(*flate.Writer)
	w.Reset(&buf)
	_, err := w.Write(src)
	if err == nil {
		err = w.Flush()
	}
	w.Reset(nil)
	writers.Put(w)
	b := buf.Bytes()
	if err != nil || !bytes.HasSuffix(b, tail) {
		return nil
	}
	b = b[:len(b)-len(tail)]
	if len(b) >= len(src) {
		return nil
	}
	return b
}

// Shared is one encoded frame delivered to many connections: the raw
// bytes, and their compressed form made at most once, by the first
// connection that wants it.
type Shared struct {
	raw  []byte
	once sync.Once
	z    []byte
}

// NewShared wraps raw (which must not change afterwards).
func NewShared(raw []byte) *Shared { return &Shared{raw: raw} }

// Raw is the uncompressed frame.
func (s *Shared) Raw() []byte { return s.raw }

// Compressed is the frame compressed (Compress), made on the first call
// and shared by every later one; nil when compressing does not make it
// smaller.
func (s *Shared) Compressed() []byte {
	s.once.Do(func() { s.z = Compress(s.raw) })
	return s.z
}

// SharedSender is implemented by connections that can take a Shared frame
// (the gateway's): they write its compressed form when they negotiated
// the extension.
type SharedSender interface {
	SendShared(s *Shared) bool
}

// Sender is anything that takes raw frames (hub.Conn, rooms.Sink).
type Sender interface {
	Send(frame []byte) bool
}

// Send delivers s to to: as a Shared frame when to takes one, else raw.
func Send(to Sender, s *Shared) bool {
	if ss, ok := to.(SharedSender); ok {
		return ss.SendShared(s)
	}
	return to.Send(s.raw)
}

// ErrTooBig is returned by Inflate when the message would be longer than
// its bound.
var ErrTooBig = errors.New("decompressed message too big")

// ErrCorrupt is returned by Inflate for data that is not a valid deflate
// stream.
var ErrCorrupt = errors.New("invalid compressed data")

var readers = sync.Pool{New: func() any { return flate.NewReader(&segments{}) }}

// Inflate decompresses one permessage-deflate message (RFC 7692 §7.2.2)
// and returns at most max bytes: ErrTooBig as soon as the output would
// exceed max, without holding more than max+1 bytes of it (the output
// buffer grows with what has been produced, never with what the input
// claims). Data that is not valid deflate gives ErrCorrupt. The
// decompressor starts empty for every message (client_no_context_takeover
// was negotiated), so a back-reference into an earlier message is corrupt.
func Inflate(src []byte, limit int) ([]byte, error) {
	in := &segments{parts: [3][]byte{src, tail, finalBlock}}
	fr := readers.Get().(io.ReadCloser)
	defer readers.Put(fr)
	if err := fr.(flate.Resetter).Reset(in, nil); err != nil {
		return nil, ErrCorrupt
	}
	// Start with a guess (most messages expand 2–5×) and grow by
	// doubling, never past limit+1.
	out := make([]byte, 0, min(limit+1, max(512, 4*len(src))))
	for {
		if len(out) == cap(out) {
			out = growTo(out, min(limit+1, 2*cap(out)))
		}
		n, err := fr.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		if len(out) > limit {
			return nil, ErrTooBig
		}
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, ErrCorrupt
		}
	}
}

// segments reads its parts one after the other; it is an io.ByteReader so
// the decompressor reads it without a bufio.Reader of its own.
type segments struct {
	parts [3][]byte
	i     int
}

func (s *segments) Read(p []byte) (int, error) {
	for s.i < len(s.parts) && len(s.parts[s.i]) == 0 {
		s.i++
	}
	if s.i == len(s.parts) {
		return 0, io.EOF
	}
	n := copy(p, s.parts[s.i])
	s.parts[s.i] = s.parts[s.i][n:]
	return n, nil
}

func (s *segments) ReadByte() (byte, error) {
	for s.i < len(s.parts) && len(s.parts[s.i]) == 0 {
		s.i++
	}
	if s.i == len(s.parts) {
		return 0, io.EOF
	}
	b := s.parts[s.i][0]
	s.parts[s.i] = s.parts[s.i][1:]
	return b, nil
}

func growTo(b []byte, c int) []byte {
	nb := make([]byte, len(b), c)
	copy(nb, b)
	return nb
}
