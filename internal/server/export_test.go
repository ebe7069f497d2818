package server

import (
	"net/http"
	"time"
)

// MuxForTest exposes the router so that tests can add a test-only route
// (e.g. one that panics).
func (s *Server) MuxForTest() *http.ServeMux { return s.mux }

// SetSweepForTest sets the refresh-token sweep period and a hook run at the
// start of each sweep; call before Start.
func (s *Server) SetSweepForTest(every time.Duration, hook func()) {
	s.sweepEvery, s.sweepHook = every, hook
}
