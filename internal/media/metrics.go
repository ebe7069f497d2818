package media

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// fwdCounters counts RTP packets and payload bytes the SFU sent to
// consumers (RTX retransmissions excluded), for one kind.
type fwdCounters struct {
	packets atomic.Uint64
	bytes   atomic.Uint64
}

// kindIndex is the index of fwd for a producer kind ("audio" 0, "video" 1).
func kindIndex(kind string) int {
	if kind == kindVideo {
		return 1
	}
	return 0
}

var kindLabels = [2]string{kindAudio, kindVideo}

// Collector returns the SFU's Prometheus metrics, for the caller to
// register (the server registers it on its registry):
//
//   - parley_media_calls: calls running (gauge)
//   - parley_media_participants: connections in a call (gauge)
//   - parley_media_transports: WebRTC transports open, two per participant
//     that sent media:join (gauge)
//   - parley_media_producers{kind}, parley_media_consumers{kind}: gauges
//   - parley_media_forwarded_packets_total{kind}: RTP packets sent to
//     consumers (RTX retransmissions excluded)
//   - parley_media_forwarded_bytes_total{kind}: their RTP payload bytes
//   - parley_media_transport_failures_total: transports closed because a
//     panic was contained in one of their goroutines (the participant left
//     the call)
//   - the data channel metrics (describeData in datachannel.go)
//
// kind is "audio" or "video", the only label. Gauges are read under the
// routers' locks at scrape time; the packet path only does two atomic adds
// per forwarded packet.
func (s *SFU) Collector() prometheus.Collector { return &collector{s: s} }

type collector struct{ s *SFU }

var (
	descCalls        = prometheus.NewDesc("parley_media_calls", "Active calls.", nil, nil)
	descParticipants = prometheus.NewDesc("parley_media_participants", "Connections in a call.", nil, nil)
	descTransports   = prometheus.NewDesc("parley_media_transports", "Open WebRTC transports (two per joined connection).", nil, nil)
	descProducers    = prometheus.NewDesc("parley_media_producers", "Producers (incoming tracks), by kind.", []string{"kind"}, nil)
	descConsumers    = prometheus.NewDesc("parley_media_consumers", "Consumers (outgoing tracks), by kind.", []string{"kind"}, nil)
	descFwdPackets   = prometheus.NewDesc("parley_media_forwarded_packets_total", "RTP packets forwarded to consumers, by kind (retransmissions excluded).", []string{"kind"}, nil)
	descFwdBytes     = prometheus.NewDesc("parley_media_forwarded_bytes_total", "RTP payload bytes forwarded to consumers, by kind (retransmissions excluded).", []string{"kind"}, nil)
	descFailures     = prometheus.NewDesc("parley_media_transport_failures_total", "Transports closed after a contained panic (their participant left the call).", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCalls, descParticipants, descTransports, descProducers,
		descConsumers, descFwdPackets, descFwdBytes, descFailures} {
		ch <- d
	}
	describeData(ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descCalls, st.Calls)
	gauge(descParticipants, st.Participants)
	gauge(descTransports, st.Transports)
	for i, k := range kindLabels {
		gauge(descProducers, st.ProducersByKind[i], k)
		gauge(descConsumers, st.ConsumersByKind[i], k)
		counter(descFwdPackets, c.s.fwd[i].packets.Load(), k)
		counter(descFwdBytes, c.s.fwd[i].bytes.Load(), k)
	}
	counter(descFailures, c.s.transportFailures.Load())
	collectData(ch, st)
}
