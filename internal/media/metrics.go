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
//   - parley_media_transports_by_state{state}: transports by ICE/DTLS
//     connection state (new, connecting, connected, disconnected, failed,
//     closed) (gauge)
//   - parley_media_paused_producers, parley_media_paused_consumers: gauges
//   - parley_media_nacks_total{direction}: NACKs received from consumers
//     ("received", answered from the packet history) and sent to producers
//     for sequence gaps ("sent")
//   - parley_media_key_frame_requests_total{direction}: PLI/FIR received
//     from consumers ("received") and PLIs sent to producers after the
//     300 ms throttle ("sent")
//   - parley_media_transport_timeouts_total: transports closed after
//     staying disconnected or failed for the transport timeout
//   - parley_media_idle_calls_ended_total: calls ended after the idle
//     timeout without participants
//   - parley_media_active_speaker_changes_total: media:active_speaker
//     changes sent
//   - the data channel metrics (describeData in datachannel.go)
//
// Labels take only the fixed values above: kind "audio" or "video",
// state, direction "received" or "sent". Gauges are read under the
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
	descTransportSt  = prometheus.NewDesc("parley_media_transports_by_state", "WebRTC transports by ICE/DTLS connection state.", []string{"state"}, nil)
	descPausedProd   = prometheus.NewDesc("parley_media_paused_producers", "Producers paused by their owner.", nil, nil)
	descPausedCons   = prometheus.NewDesc("parley_media_paused_consumers", "Consumers paused by their owner.", nil, nil)
	descNACKs        = prometheus.NewDesc("parley_media_nacks_total", "RTCP NACKs received from consumers (received) and sent to producers (sent).", []string{"direction"}, nil)
	descKeyFrames    = prometheus.NewDesc("parley_media_key_frame_requests_total", "Key frame requests: PLI/FIR from consumers (received), PLIs to producers (sent).", []string{"direction"}, nil)
	descTimeouts     = prometheus.NewDesc("parley_media_transport_timeouts_total", "Transports closed after staying disconnected or failed for the transport timeout (their participant left the call).", nil, nil)
	descIdleEnded    = prometheus.NewDesc("parley_media_idle_calls_ended_total", "Calls ended after the idle timeout without participants.", nil, nil)
	descSpeaker      = prometheus.NewDesc("parley_media_active_speaker_changes_total", "Dominant speaker changes sent (media:active_speaker).", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCalls, descParticipants, descTransports, descProducers,
		descConsumers, descFwdPackets, descFwdBytes, descFailures, descTransportSt, descPausedProd,
		descPausedCons, descNACKs, descKeyFrames, descTimeouts, descIdleEnded, descSpeaker} {
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
	for i, name := range connStateNames {
		gauge(descTransportSt, st.TransportsByState[i], name)
	}
	gauge(descPausedProd, st.PausedProducers)
	gauge(descPausedCons, st.PausedConsumers)
	ctr := &c.s.ctr
	counter(descNACKs, ctr.nacksReceived.Load(), "received")
	counter(descNACKs, ctr.nacksSent.Load(), "sent")
	counter(descKeyFrames, ctr.keyFramesReceived.Load(), "received")
	counter(descKeyFrames, ctr.keyFramesSent.Load(), "sent")
	counter(descTimeouts, ctr.transportTimeouts.Load())
	counter(descIdleEnded, ctr.idleCallsEnded.Load())
	counter(descSpeaker, ctr.speakerChanges.Load())
	collectData(ch, st)
}
