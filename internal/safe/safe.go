// Package safe contains panics: every goroutine that serves one connection,
// request, room, timer or transport defers Recover, so that a bug reached by
// one client takes down only what serves that client and never the node.
//
// A recovered panic is logged once with its stack, counted in
// parley_panics_total{where} (where is one of the fixed Where values, never
// client input), and handed to the caller's cleanup (close the connection
// with 1011, answer HTTP 500, fail the batch, close the transport).
package safe

import (
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Where names the kind of goroutine a panic was contained in. It is the
// label of parley_panics_total, so the set is fixed: add a constant here (and
// to All) rather than passing free text.
type Where string

// The places that recover. Keep All in sync.
const (
	WSReader       Where = "ws_reader"       // a connection's read loop and message handlers
	WSWriter       Where = "ws_writer"       // a connection's writer
	ConnectHook    Where = "connect_hook"    // Lifecycle.Connected / Disconnected
	HTTP           Where = "http"            // a REST or operations request
	CommitCallback Where = "commit_callback" // the store committer's callbacks
	Room           Where = "room"            // room timers and per-room work
	Chat           Where = "chat"            // typing timers, presence grace
	Broker         Where = "broker"          // cluster deliveries from other nodes
	MediaPacket    Where = "media_packet"    // an SFU RTP/RTCP read or forward loop
	MediaTransport Where = "media_transport" // SFU transport setup, ICE/DTLS callbacks
	Background     Where = "background"      // node-wide loops (heartbeat, sweeps)
	Webhook        Where = "webhook"         // a webhook delivery attempt (internal/webhook)
)

// All is every Where value, for pre-registering the metric's label set.
var All = []Where{WSReader, WSWriter, ConnectHook, HTTP, CommitCallback, Room, Chat,
	Broker, MediaPacket, MediaTransport, Background, Webhook}

// Counter counts recovered panics by place. *metrics.Metrics implements it;
// nil is allowed (tests).
type Counter interface{ Panic(where string) }

// NewCounterVec returns parley_panics_total with every label pre-created so
// that the series exist (at 0) before the first panic.
func NewCounterVec() *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_panics_total",
		Help: "Panics recovered, by the kind of goroutine that contained them (the node kept serving)."}, []string{"where"})
	for _, w := range All {
		v.WithLabelValues(string(w))
	}
	return v
}

// Recover must be deferred directly (defer safe.Recover(...)). When the
// goroutine panics it logs the value and stack at error level, counts it,
// then calls cleanup (may be nil) with the panic value. A panic inside
// cleanup is itself contained and logged. It does nothing when there is no
// panic.
func Recover(log *slog.Logger, c Counter, where Where, cleanup func(v any)) {
	v := recover()
	if v == nil {
		return
	}
	Report(log, c, where, v, debug.Stack())
	if cleanup == nil {
		return
	}
	defer func() {
		if v2 := recover(); v2 != nil {
			Report(log, c, where, v2, debug.Stack())
		}
	}()
	cleanup(v)
}

// Report logs and counts a panic that the caller recovered itself.
func Report(log *slog.Logger, c Counter, where Where, v any, stack []byte) {
	if c != nil {
		c.Panic(string(where))
	}
	if log == nil {
		log = slog.Default()
	}
	log.Error("panic recovered", "where", string(where), "panic", fmt.Sprint(v), "stack", string(stack))
}

// Go runs fn on a new goroutine that recovers (see Recover).
func Go(log *slog.Logger, c Counter, where Where, fn func(), cleanup func(v any)) {
	go func() {
		defer Recover(log, c, where, cleanup)
		fn()
	}()
}
