package media

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
)

// Transport ICE/DTLS state tracking. The ICE agent reports its connection
// state (ice.Agent.OnConnectionStateChange: pion marks a connected pair
// disconnected after Config.iceDisconnectedTimeout without a packet from
// the client, 15 s, and failed 40 s later); the transport's setup goroutine
// reports DTLS. The two give one mediasoup-client-like connection state.
// A transport that stays disconnected or failed for Config.TransportTimeout
// is closed by its worker (periodic.go) and its participant leaves the
// call. An ICE restart puts ICE back to checking, which stops the clock.

type dtlsState int32

const (
	dtlsNew dtlsState = iota
	dtlsConnecting
	dtlsConnected
	dtlsFailed
	dtlsClosed
)

var dtlsStateNames = [...]string{"new", "connecting", "connected", "failed", "closed"}

func (d dtlsState) String() string { return dtlsStateNames[d] }

// connState is a transport's connection state (metrics label, stats).
type connState int

const (
	connNew connState = iota
	connConnecting
	connConnected
	connDisconnected
	connFailed
	connClosed
	numConnStates
)

var connStateNames = [numConnStates]string{"new", "connecting", "connected", "disconnected", "failed", "closed"}

func (c connState) String() string { return connStateNames[c] }

// streamState is the lifecycle of a producer or a consumer (mediasoup's
// Producer and Consumer: paused, closed): active ⇄ paused → closed.
type streamState int32

const (
	streamActive streamState = iota
	streamPaused
	streamClosed
)

var streamStateNames = [...]string{"active", "paused", "closed"}

func (s streamState) String() string { return streamStateNames[s] }

// streamLifecycle holds a streamState: the packet path loads it once per
// packet, signalling changes it (router lock held). The zero value is
// active.
type streamLifecycle struct{ v atomic.Int32 }

func (l *streamLifecycle) load() streamState { return streamState(l.v.Load()) }

// setPaused goes from active to paused (pause) or back and reports
// whether the state changed; a closed stream stays closed.
func (l *streamLifecycle) setPaused(pause bool) bool {
	from, to := streamActive, streamPaused
	if !pause {
		from, to = to, from
	}
	return l.v.CompareAndSwap(int32(from), int32(to))
}

// close makes the stream closed and reports whether it was open.
func (l *streamLifecycle) close() bool {
	return streamState(l.v.Swap(int32(streamClosed))) != streamClosed
}

// transportStateTracker holds a transport's ICE and DTLS states and since
// when the transport has been disconnected or failed.
type transportStateTracker struct {
	mu       sync.Mutex
	ice      ice.ConnectionState
	dtls     dtlsState
	badSince time.Time // zero unless disconnected or failed
	timedOut bool      // expired reported it
}

// setICE is the agent's OnConnectionStateChange callback (pion's handler
// goroutine); it takes no other lock.
func (s *transportStateTracker) setICE(st ice.ConnectionState) {
	s.mu.Lock()
	s.ice = st
	s.updateLocked()
	s.mu.Unlock()
}

func (s *transportStateTracker) setDTLS(st dtlsState) {
	s.mu.Lock()
	s.dtls = st
	s.updateLocked()
	s.mu.Unlock()
}

// restarted: an ICE restart was requested; until the agent reports again,
// the transport counts as connecting (no timeout).
func (s *transportStateTracker) restarted() {
	s.mu.Lock()
	if s.ice != ice.ConnectionStateUnknown && s.ice != ice.ConnectionStateNew && s.ice != ice.ConnectionStateClosed {
		s.ice = ice.ConnectionStateChecking
	}
	s.updateLocked()
	s.mu.Unlock()
}

func (s *transportStateTracker) updateLocked() {
	switch s.stateLocked() {
	case connDisconnected, connFailed:
		if s.badSince.IsZero() {
			s.badSince = time.Now()
		}
	default:
		s.badSince = time.Time{}
	}
}

func (s *transportStateTracker) stateLocked() connState {
	switch {
	case s.ice == ice.ConnectionStateClosed || s.dtls == dtlsClosed:
		return connClosed
	case s.dtls == dtlsFailed || s.ice == ice.ConnectionStateFailed:
		return connFailed
	case s.ice == ice.ConnectionStateDisconnected:
		return connDisconnected
	case (s.ice == ice.ConnectionStateConnected || s.ice == ice.ConnectionStateCompleted) && s.dtls == dtlsConnected:
		return connConnected
	case (s.ice == ice.ConnectionStateUnknown || s.ice == ice.ConnectionStateNew) && s.dtls == dtlsNew:
		return connNew
	}
	return connConnecting
}

// snapshot returns the connection state, the ICE and DTLS states in
// mediasoup's words, and since when the transport is disconnected or
// failed (zero otherwise).
func (s *transportStateTracker) snapshot() (st connState, iceState, dtls string, badSince time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stateLocked(), iceStateName(s.ice), s.dtls.String(), s.badSince
}

// iceStateName maps pion's states to mediasoup's iceState words (new,
// connected, completed, disconnected, closed), with pion's checking and
// failed kept as they are.
func iceStateName(st ice.ConnectionState) string {
	switch st {
	case ice.ConnectionStateChecking:
		return "checking"
	case ice.ConnectionStateConnected:
		return "connected"
	case ice.ConnectionStateCompleted:
		return "completed"
	case ice.ConnectionStateDisconnected:
		return "disconnected"
	case ice.ConnectionStateFailed:
		return "failed"
	case ice.ConnectionStateClosed:
		return "closed"
	}
	return "new"
}
