package media

import (
	"time"

	"github.com/parleyhq/parley/internal/safe"
)

// The worker's control work, after each tick's transport-wide-cc flush:
//
//   - every 100 ms: an audio level sample of each audio producer, and every
//     300 ms the active speaker decision (speaker.go);
//   - every second: bitrates and per-interval loss (stats.go), transports
//     disconnected or failed for Config.TransportTimeout (state.go), and
//     calls without participants for Config.CallIdleTimeout.
//
// Each router is handled under its lock, recovering on its own (a panic
// counts as safe.MediaPacket and the worker goes on). What takes longer
// (a participant leaving, a call ending: webhooks, member look-ups, the
// cluster lease) runs on its own goroutine, outside the router's lock.

const statsTicks = 20 // worker ticks per second

type workerControl struct {
	ticks   uint64
	routers []*router // reused
}

func (w *worker) control(now time.Time) {
	w.ctl.ticks++
	n := w.ctl.ticks
	audio, decide, second := n%speakerSampleTicks == 0, n%speakerDecideTicks == 0, n%statsTicks == 0
	if !audio && !second {
		return
	}
	rs := w.ctl.routers[:0]
	w.mu.Lock()
	for r := range w.routers {
		rs = append(rs, r)
	}
	w.mu.Unlock()
	for _, r := range rs {
		w.controlRouter(r, now, audio, decide, second)
	}
	clear(rs)
	w.ctl.routers = rs[:0]
}

func (w *worker) controlRouter(r *router, now time.Time, audio, decide, second bool) {
	s := w.sfu
	defer safe.Recover(s.log, s.cfg.Panics, safe.MediaPacket, nil)
	var expired []*transport
	idle := false
	func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.closed {
			return
		}
		if audio {
			r.sampleSpeakersLocked()
			if decide {
				r.decideSpeakerLocked()
			}
		}
		if !second {
			return
		}
		r.sampleStatsLocked(now)
		if to := s.cfg.TransportTimeout; to > 0 {
			for _, t := range r.transports {
				if t.st.expired(now, to) {
					expired = append(expired, t)
				}
			}
		}
		if to := s.cfg.CallIdleTimeout; to > 0 && len(r.participants) == 0 && !r.emptySince.IsZero() &&
			now.Sub(r.emptySince) >= to && !r.idleFired.Equal(r.emptySince) {
			r.idleFired = r.emptySince
			idle = true
		}
	}()
	for _, t := range expired {
		safe.Go(s.log, s.cfg.Panics, safe.MediaTransport, func() { s.transportTimedOut(t) }, nil)
	}
	if idle {
		roomID := r.roomID
		safe.Go(s.log, s.cfg.Panics, safe.Background, func() { s.callIdle(roomID) }, nil)
	}
}

// expired reports, once, that the transport has been disconnected or
// failed for at least timeout.
func (s *transportStateTracker) expired(now time.Time, timeout time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timedOut || s.badSince.IsZero() || now.Sub(s.badSince) < timeout {
		return false
	}
	s.timedOut = true
	return true
}

// transportTimedOut closes a transport that stayed disconnected or failed
// for Config.TransportTimeout: when it is still one of its participant's
// transports, the participant leaves the call (media:peer_left to the
// others, as on a closed connection) and its own connection gets
// media:room_closed {room_id}, as when it is removed from the room.
func (s *SFU) transportTimedOut(t *transport) {
	s.ctr.transportTimeouts.Add(1)
	_, iceState, dtls, _ := t.st.snapshot()
	s.log.Info("transport timed out: participant leaves the call", "room", t.roomID, "transport", t.id,
		"connection", t.owner.connID, "ice", iceState, "dtls", dtls)
	r, err := s.routerFor(t.roomID)
	if err != nil {
		t.close()
		return
	}
	r.mu.Lock()
	p := r.participants[t.owner.connID]
	current := p != nil && (p.send == t || p.recv == t)
	r.mu.Unlock()
	if current && s.leave(t.roomID, t.owner.connID, "") == nil {
		s.notify.roomClosed(t.owner.connID, t.roomID)
	}
	t.close() // no-op when leave closed it
}

// CallIdler, when the Events given to New also implement it, is asked to
// end a call that has had no participant for Config.CallIdleTimeout (the
// server does it through its call relay, which also releases the call's
// cluster lease) by calling EndIdleCall. Without it the SFU calls
// EndIdleCall itself. Called on its own goroutine, without the SFU's locks.
type CallIdler interface {
	CallIdle(roomID string)
}

func (s *SFU) callIdle(roomID string) {
	if ci, ok := s.events.(CallIdler); ok {
		ci.CallIdle(roomID)
		return
	}
	s.EndIdleCall(roomID)
}

// EndIdleCall ends the room's call as EndCall does (members get
// Events.CallEnded), but only when it still has no participant and has had
// none for Config.CallIdleTimeout. It reports whether it ended the call.
func (s *SFU) EndIdleCall(roomID string) bool {
	to := s.cfg.CallIdleTimeout
	if to <= 0 {
		return false
	}
	ended := s.endCall(roomID, func(r *router) bool {
		return len(r.participants) == 0 && !r.emptySince.IsZero() && time.Since(r.emptySince) >= to
	})
	if ended {
		s.ctr.idleCallsEnded.Add(1)
		s.log.Info("idle call ended", "room", roomID, "idle_timeout", to)
	}
	return ended
}
