// Package metrics defines Parley's Prometheus metrics in one registry. Hot
// paths use pre-resolved counters (no label lookup per delivery).
package metrics

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/parleyhq/parley/internal/protocol"
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
	NATSDisconnects   prometheus.Counter
	NATSReconnects    prometheus.Counter
	NATSSlowConsumers prometheus.Counter
	// Webhook deliveries (internal/webhook; no labels).
	WebhooksSent, WebhooksRetried, WebhooksFailed, WebhooksDropped prometheus.Counter

	// Pre-resolved counters for every label of the fixed sets in package
	// protocol; read-only after New, so lookups take no lock and allocate
	// nothing.
	in, out, errs map[string]prometheus.Counter
	closes        map[int]prometheus.Counter
	inUnknown     prometheus.Counter
	outOther      prometheus.Counter
	errOther      prometheus.Counter
	closeOther    prometheus.Counter
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
			Help: "Client messages received, by type (a type no handler accepts is \"unknown\")."}, []string{"type"}),
		MessagesOut: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_messages_out_total",
			Help: "Server messages written to connections, by type (one per target connection)."}, []string{"type"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_errors_total",
			Help: "Error replies sent, by code."}, []string{"code"}),
		StorageCommits: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_storage_commits_total",
			Help: "Durable storage updates committed."}),
		StorageBatches: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "parley_storage_commit_batch_size",
			Help: "Updates per group commit.", Buckets: prometheus.ExponentialBuckets(1, 2, 12)}),
		Panics: safe.NewCounterVec(),
		NATSDisconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_nats_disconnects_total",
			Help: "Times this node's NATS connection was lost (cluster mode)."}),
		NATSReconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_nats_reconnects_total",
			Help: "Times this node's NATS connection was re-established; each is followed by a resync of its rooms."}),
		NATSSlowConsumers: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_nats_slow_consumer_total",
			Help: "Times this node's NATS inbox overflowed and dropped messages; each is followed by a resync of its rooms."}),
		WebhooksSent: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_webhook_sent_total",
			Help: "Webhook deliveries answered 2xx (one per event and URL)."}),
		WebhooksRetried: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_webhook_retried_total",
			Help: "Webhook attempts that failed (non-2xx, timeout, network) and will be retried."}),
		WebhooksFailed: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_webhook_failed_total",
			Help: "Webhook deliveries given up after webhook-retry-for."}),
		WebhooksDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_webhook_dropped_total",
			Help: "Webhook deliveries dropped because their URL's queue was full (the oldest waiting one goes)."}),
	}
	m.in = resolve(m.MessagesIn, protocol.ClientTypes)
	m.inUnknown = m.MessagesIn.WithLabelValues(protocol.LabelUnknown)
	m.out = resolve(m.MessagesOut, protocol.ServerTypes)
	m.outOther = m.MessagesOut.WithLabelValues(protocol.LabelOther)
	m.errs = resolve(m.Errors, protocol.ErrorCodes)
	m.errOther = m.Errors.WithLabelValues(protocol.LabelOther)
	m.closes = make(map[int]prometheus.Counter, len(protocol.CloseCodes))
	for _, code := range protocol.CloseCodes {
		m.closes[code] = m.Closes.WithLabelValues(strconv.Itoa(code))
	}
	m.closeOther = m.Closes.WithLabelValues(protocol.LabelOther)
	r.MustRegister(m.Panics, m.ConnectionsTotal, m.AuthFailures, m.QueueOverflows, m.HeartbeatTimeouts, m.Closes,
		m.MessagesIn, m.MessagesOut, m.Errors, m.StorageCommits, m.StorageBatches,
		m.NATSDisconnects, m.NATSReconnects, m.NATSSlowConsumers,
		m.WebhooksSent, m.WebhooksRetried, m.WebhooksFailed, m.WebhooksDropped)
	for name, fn := range gauges {
		r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: gaugeHelp[name]}, fn))
	}
	return m
}

var gaugeHelp = map[string]string{
	"parley_connections":          "Open WebSocket connections.",
	"parley_users_connected":      "Distinct users with at least one connection.",
	"parley_rooms_live":           "Rooms with at least one client in memory.",
	"parley_typing_active":        "Typing indicators currently active.",
	"parley_storage_inflight":     "Storage updates waiting for their commit.",
	"parley_webhook_queue_length": "Webhook deliveries not finished (waiting, being retried or being sent), all URLs.",
}

// WebhookSent implements webhook.Counters.
func (m *Metrics) WebhookSent() { m.WebhooksSent.Inc() }

// WebhookRetried implements webhook.Counters.
func (m *Metrics) WebhookRetried() { m.WebhooksRetried.Inc() }

// WebhookFailed implements webhook.Counters.
func (m *Metrics) WebhookFailed() { m.WebhooksFailed.Inc() }

// WebhookDropped implements webhook.Counters.
func (m *Metrics) WebhookDropped() { m.WebhooksDropped.Inc() }

func resolve(vec *prometheus.CounterVec, labels []string) map[string]prometheus.Counter {
	m := make(map[string]prometheus.Counter, len(labels))
	for _, l := range labels {
		m[l] = vec.WithLabelValues(l)
	}
	return m
}

// In counts one received message of type typ. known reports whether a
// handler took it; a type outside protocol.ClientTypes is counted as
// "unknown" either way, so a hostile client cannot create label cardinality.
func (m *Metrics) In(typ string, known bool) {
	if c, ok := m.in[typ]; ok && known {
		c.Inc()
		return
	}
	m.inUnknown.Inc()
}

// OutFrame counts one frame written to a connection. The type is read from
// the frame's `{"type":"..."` prefix (protocol.FrameType) and labelled from
// protocol.ServerTypes, else "other". It takes no lock and allocates
// nothing.
func (m *Metrics) OutFrame(frame []byte) {
	if c, ok := m.out[string(protocol.FrameType(frame))]; ok {
		c.Inc()
		return
	}
	m.outOther.Inc()
}

// Close counts one connection closed by the server with code; a code
// outside protocol.CloseCodes (a client's own valid code, echoed) is
// counted as "other".
func (m *Metrics) Close(code int) {
	if c, ok := m.closes[code]; ok {
		c.Inc()
		return
	}
	m.closeOther.Inc()
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

// NATSDisconnect counts a lost NATS connection (implements
// cluster.Metrics).
func (m *Metrics) NATSDisconnect() {
	if m != nil {
		m.NATSDisconnects.Inc()
	}
}

// NATSReconnect counts a re-established NATS connection.
func (m *Metrics) NATSReconnect() {
	if m != nil {
		m.NATSReconnects.Inc()
	}
}

// NATSSlowConsumer counts an overflow of the node's NATS inbox.
func (m *Metrics) NATSSlowConsumer() {
	if m != nil {
		m.NATSSlowConsumers.Inc()
	}
}

// Error counts an error reply; a code outside protocol.ErrorCodes is
// counted as "other".
func (m *Metrics) Error(code string) {
	if c, ok := m.errs[code]; ok {
		c.Inc()
		return
	}
	m.errOther.Inc()
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}
