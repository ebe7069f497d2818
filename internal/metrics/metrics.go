// Package metrics defines Parley's Prometheus metrics in one registry. Hot
// paths use pre-resolved counters (no label lookup per delivery).
package metrics

import (
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/parleyhq/parley/internal/safe"
)

// Metrics is the set of server metrics.
type Metrics struct {
	Registry *prometheus.Registry

	ConnectionsTotal  prometheus.Counter
	AuthFailures      prometheus.Counter
	QueueOverflows    prometheus.Counter
	HeartbeatTimeouts prometheus.Counter
	Closes            *prometheus.CounterVec
	MessagesIn        *prometheus.CounterVec
	MessagesOut       *prometheus.CounterVec
	Errors            *prometheus.CounterVec
	StorageCommits    prometheus.Counter
	StorageBatches    prometheus.Histogram
	Panics            *prometheus.CounterVec // where: a fixed set (internal/safe)

	inCache  sync.Map // type → prometheus.Counter
	outCache sync.Map
	errCache sync.Map
}

// New creates the metrics. gauges supplies live values sampled at scrape
// time (connections, users, rooms).
func New(gauges map[string]func() float64) *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		Registry: r,
		ConnectionsTotal: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_connections_total",
			Help: "WebSocket connections accepted."}),
		AuthFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_auth_failures_total",
			Help: "WebSocket upgrades refused with 401."}),
		QueueOverflows: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_queue_overflows_total",
			Help: "Connections closed with 4008 because their outbound queue overflowed."}),
		HeartbeatTimeouts: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_heartbeat_timeouts_total",
			Help: "Connections closed because nothing arrived within the heartbeat timeout."}),
		Closes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_closes_total",
			Help: "Connections closed by the server, by close code."}, []string{"code"}),
		MessagesIn: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_messages_in_total",
			Help: "Client messages received, by type."}, []string{"type"}),
		MessagesOut: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_messages_out_total",
			Help: "Server messages enqueued to connections, by type (one per target connection)."}, []string{"type"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_errors_total",
			Help: "Error replies sent, by code."}, []string{"code"}),
		StorageCommits: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_storage_commits_total",
			Help: "Durable storage updates committed."}),
		StorageBatches: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "parley_storage_commit_batch_size",
			Help: "Updates per group commit.", Buckets: prometheus.ExponentialBuckets(1, 2, 12)}),
		Panics: safe.NewCounterVec(),
	}
	r.MustRegister(m.Panics, m.ConnectionsTotal, m.AuthFailures, m.QueueOverflows, m.HeartbeatTimeouts, m.Closes,
		m.MessagesIn, m.MessagesOut, m.Errors, m.StorageCommits, m.StorageBatches)
	for name, fn := range gauges {
		r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: gaugeHelp[name]}, fn))
	}
	return m
}

var gaugeHelp = map[string]string{
	"parley_connections":      "Open WebSocket connections.",
	"parley_users_connected":  "Distinct users with at least one connection.",
	"parley_rooms_live":       "Rooms with at least one client in memory.",
	"parley_typing_active":    "Typing indicators currently active.",
	"parley_storage_inflight": "Storage updates waiting for their commit.",
}

func cached(cache *sync.Map, vec *prometheus.CounterVec, label string) prometheus.Counter {
	if c, ok := cache.Load(label); ok {
		return c.(prometheus.Counter)
	}
	c := vec.WithLabelValues(label)
	cache.Store(label, c)
	return c
}

// In counts one received message of type typ. Unknown types are counted
// under "unknown" so a hostile client cannot create label cardinality.
func (m *Metrics) In(typ string, known bool) {
	if !known {
		typ = "unknown"
	}
	cached(&m.inCache, m.MessagesIn, typ).Inc()
}

// Out counts n deliveries of one server message type.
func (m *Metrics) Out(typ string, n int) {
	if n > 0 {
		cached(&m.outCache, m.MessagesOut, typ).Add(float64(n))
	}
}

// Panic counts one recovered panic (implements safe.Counter). where is one
// of safe.All; anything else is counted as "other" so the label set stays
// fixed.
func (m *Metrics) Panic(where string) {
	if m == nil {
		return
	}
	for _, w := range safe.All {
		if string(w) == where {
			m.Panics.WithLabelValues(where).Inc()
			return
		}
	}
	m.Panics.WithLabelValues("other").Inc()
}

// Error counts an error reply.
func (m *Metrics) Error(code string) { cached(&m.errCache, m.Errors, code).Inc() }

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}
