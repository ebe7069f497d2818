package media

import (
	"errors"
	"io"
	"net"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/pion/datachannel"
	"github.com/pion/sctp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleyhq/parley/internal/safe"
)

// Data channels (PROTOCOL.md section 6, mediasoup's DataProducer and
// DataConsumer): SCTP (pion/sctp) runs inside each transport's DTLS
// connection. A data producer is one SCTP stream the client sends on over
// its send transport (the client picks the stream id, negotiated
// DataChannels as mediasoup-client creates them); a data consumer is one
// stream the SFU sends on over the consumer's recv transport (the SFU picks
// the id). Messages are relayed whole, with their PPID (string or binary,
// empty included), from a data producer to each of its data consumers.

const (
	// sctpPort is the SCTP port of both ends (RFC 8841 default, mediasoup's).
	sctpPort = 5000
	// sctpNumStreams is OS and MIS of sctpParameters (mediasoup's defaults):
	// stream ids are 0..sctpNumStreams-1.
	sctpNumStreams = 1024
	// dataReadBuffer is a data producer's initial read buffer; it grows to
	// the size of the largest message up to the configured maximum.
	dataReadBuffer  = 16 << 10
	maxDataLabelLen = 256
)

// SctpParameters is mediasoup's SctpParameters, carried by each transport
// of media:transport_created when data channels are on.
type SctpParameters struct {
	Port           int `json:"port"`
	OS             int `json:"OS"`
	MIS            int `json:"MIS"`
	MaxMessageSize int `json:"maxMessageSize"`
}

// SctpStreamParameters is mediasoup's SctpStreamParameters as the server
// sends it (media:data_consumer_created).
type SctpStreamParameters struct {
	StreamID          uint16  `json:"streamId"`
	Ordered           bool    `json:"ordered"`
	MaxPacketLifeTime *uint16 `json:"maxPacketLifeTime,omitempty"`
	MaxRetransmits    *uint16 `json:"maxRetransmits,omitempty"`
}

// channelType is the DataChannel type (RFC 8832) of these parameters.
func (p SctpStreamParameters) channelType() (datachannel.ChannelType, uint32) {
	switch {
	case p.MaxPacketLifeTime != nil && p.Ordered:
		return datachannel.ChannelTypePartialReliableTimed, uint32(*p.MaxPacketLifeTime)
	case p.MaxPacketLifeTime != nil:
		return datachannel.ChannelTypePartialReliableTimedUnordered, uint32(*p.MaxPacketLifeTime)
	case p.MaxRetransmits != nil && p.Ordered:
		return datachannel.ChannelTypePartialReliableRexmit, uint32(*p.MaxRetransmits)
	case p.MaxRetransmits != nil:
		return datachannel.ChannelTypePartialReliableRexmitUnordered, uint32(*p.MaxRetransmits)
	case p.Ordered:
		return datachannel.ChannelTypeReliable, 0
	}
	return datachannel.ChannelTypeReliableUnordered, 0
}

// dataProducer is one client-to-SFU SCTP stream on a send transport.
type dataProducer struct {
	id              string
	owner           *participant
	t               *transport
	params          SctpStreamParameters // the client's stream
	label, protocol string
	seqNo           uint64

	consumers atomic.Pointer[[]*dataConsumer] // copy-on-write; writers hold the router lock
	closed    atomic.Bool

	stream *sctp.Stream // set once the association is up; t.data.mu
}

var dataProducerSeq atomicCounter

// newDataProducer makes a data producer for the client's SCTP stream
// params.StreamID on send transport t (not yet added to it).
func newDataProducer(t *transport, params SctpStreamParameters, label, proto string) *dataProducer {
	dp := &dataProducer{
		id: newID(), owner: t.owner, t: t, params: params, label: label, protocol: proto, seqNo: dataProducerSeq.next(),
	}
	empty := []*dataConsumer{}
	dp.consumers.Store(&empty)
	return dp
}

func (p *dataProducer) setConsumers(fn func([]*dataConsumer) []*dataConsumer) {
	old := *p.consumers.Load()
	next := fn(append([]*dataConsumer(nil), old...))
	p.consumers.Store(&next)
}

// dataMessage is one relayed message.
type dataMessage struct {
	b        []byte
	isString bool
}

// dataConsumer is one SFU-to-client SCTP stream on a recv transport.
type dataConsumer struct {
	id     string
	dp     *dataProducer
	owner  *participant
	t      *transport
	params SctpStreamParameters // our stream id, the producer's reliability

	mu           sync.Mutex
	closed       bool
	dc           *datachannel.DataChannel // nil until the association is up
	pending      []dataMessage            // messages waiting for dc
	pendingBytes int
}

// dataTransport is the SCTP side of one transport (nil when data channels
// are off). Lock order: router lock, then mu, then a consumer's mu.
type dataTransport struct {
	t *transport

	mu        sync.Mutex
	closed    bool
	assoc     *sctp.Association
	producers map[uint16]*dataProducer // send transport, by the client's stream id
	consumers map[uint16]*dataConsumer // recv transport, by our stream id
	nextID    uint16                   // recv transport: next stream id to try
}

func newDataTransport(t *transport) *dataTransport {
	return &dataTransport{t: t, producers: map[uint16]*dataProducer{}, consumers: map[uint16]*dataConsumer{}}
}

// sctpParameters is what the transport announces (nil: data channels off).
func (t *transport) sctpParameters() *SctpParameters {
	if t.data == nil {
		return nil
	}
	return &SctpParameters{Port: sctpPort, OS: sctpNumStreams, MIS: sctpNumStreams, MaxMessageSize: t.sfu.cfg.MaxDataMessageSize}
}

// dataCounters are the node-wide data channel counters (metrics).
type dataCounters struct {
	messages atomic.Uint64 // relayed to data consumers
	bytes    atomic.Uint64
	dropped  atomic.Uint64 // not relayed: a consumer's send buffer was full
	tooLarge atomic.Uint64 // data producers closed for a message over the maximum
}

// replayConn hands the first DTLS application record, already read, to
// the SCTP association, then reads from the DTLS connection itself.
type replayConn struct {
	net.Conn
	mu    sync.Mutex
	first []byte
}

func (c *replayConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if f := c.first; f != nil {
		c.first = nil
		c.mu.Unlock()
		if len(b) < len(f) {
			return 0, io.ErrShortBuffer
		}
		return copy(b, f), nil
	}
	c.mu.Unlock()
	return c.Conn.Read(b)
}

// serve runs on the transport's setup goroutine once DTLS is up. The SFU
// is the passive SCTP end: it waits for the client's first SCTP packet (an
// INIT: browsers always initiate the association, as pion and usrsctp do),
// so a transport whose client never negotiates SCTP costs nothing more
// than this wait. Then it runs the association and accepts the streams
// the client opens by sending on them, until the transport closes.
func (d *dataTransport) serve(conn net.Conn) {
	t := d.t
	buf := make([]byte, 8192)
	n, err := conn.Read(buf)
	if err != nil {
		return
	}
	maxMsg := uint32(t.sfu.cfg.MaxDataMessageSize)
	rbuf := uint32(1 << 20)
	if 2*maxMsg > rbuf {
		rbuf = 2 * maxMsg
	}
	assoc, err := sctp.ServerWithOptions(sctp.Config{
		NetConn: &replayConn{Conn: conn, first: buf[:n]}, Name: t.id,
		MaxMessageSize: maxMsg, MaxReceiveBufferSize: rbuf, LoggerFactory: t.sfu.lf,
	})
	if err != nil {
		t.log.Debug("sctp association failed", "err", err)
		return
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		_ = assoc.Close()
		return
	}
	d.assoc = assoc
	for _, id := range sortedStreamIDs(d.producers) {
		d.startProducerLocked(d.producers[id])
	}
	for _, id := range sortedStreamIDs(d.consumers) {
		d.openConsumerLocked(d.consumers[id])
	}
	d.mu.Unlock()
	t.log.Debug("sctp association up")
	for {
		s, err := assoc.AcceptStream()
		if err != nil {
			return
		}
		// A stream the client sent on first. A data producer's is bound
		// here; any other stays unread (only this client's association
		// fills up) until a media:produce_data names it.
		d.mu.Lock()
		if p := d.producers[s.StreamIdentifier()]; p != nil && p.stream == nil {
			d.startProducerLocked(p)
		}
		d.mu.Unlock()
	}
}

func sortedStreamIDs[V any](m map[uint16]V) []uint16 {
	out := make([]uint16, 0, len(m))
	for id := range m {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// close ends the association (the transport is closing).
func (d *dataTransport) close() {
	d.mu.Lock()
	d.closed = true
	assoc := d.assoc
	d.mu.Unlock()
	if assoc != nil {
		_ = assoc.Close()
	}
}

// startProducerLocked opens p's stream (or takes the one the client
// already sent on) and starts its reader.
func (d *dataTransport) startProducerLocked(p *dataProducer) {
	if d.closed || d.assoc == nil || p.stream != nil || p.closed.Load() {
		return
	}
	s, err := d.assoc.OpenStream(p.params.StreamID, sctp.PayloadTypeWebRTCBinary)
	if err != nil {
		return
	}
	p.stream = s
	d.t.wg.Add(1)
	go p.read(s)
}

// openConsumerLocked opens c's stream with the producer's reliability and
// sends what waited for it.
func (d *dataTransport) openConsumerLocked(c *dataConsumer) {
	if d.closed || d.assoc == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.dc != nil {
		return
	}
	s, err := d.assoc.OpenStream(c.params.StreamID, sctp.PayloadTypeWebRTCBinary)
	if err != nil {
		return
	}
	ct, rel := c.params.channelType()
	dc, err := datachannel.Client(s, &datachannel.Config{
		ChannelType: ct, ReliabilityParameter: rel, Negotiated: true,
		Label: c.dp.label, Protocol: c.dp.protocol, LoggerFactory: d.t.sfu.lf,
	})
	if err != nil {
		return
	}
	c.dc = dc
	for _, m := range c.pending {
		c.writeLocked(m)
	}
	c.pending, c.pendingBytes = nil, 0
	d.t.wg.Add(1)
	go c.watch(dc)
}

// watch reads the consumer's stream until it ends: the client closed its
// DataConsumer (a stream reset, which ReadDataChannel answers by resetting
// ours), the association ended, or the client sent a message larger than
// the read buffer. Then the data consumer is closed, so that nothing more
// is relayed to it. Messages a client sends on a data consumer are
// discarded. Counted in the transport's WaitGroup; a panic fails the
// transport.
func (c *dataConsumer) watch(dc *datachannel.DataChannel) {
	t := c.t
	defer t.wg.Done()
	defer t.recovered(safe.MediaPacket)
	buf := make([]byte, 2048)
	for {
		if _, _, err := dc.ReadDataChannel(buf); err != nil {
			break
		}
	}
	c.ended()
}

// addProducer registers a data producer on this send transport; false
// when its stream id is taken.
func (d *dataTransport) addProducer(p *dataProducer) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, dup := d.producers[p.params.StreamID]; dup {
		return false
	}
	d.producers[p.params.StreamID] = p
	d.startProducerLocked(p)
	return true
}

// removeProducer forgets p and resets its stream (the client's DataChannel
// closes).
func (d *dataTransport) removeProducer(p *dataProducer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.producers[p.params.StreamID] == p {
		delete(d.producers, p.params.StreamID)
	}
	if p.stream != nil && !d.closed {
		_ = p.stream.Close()
	}
}

// addConsumer gives c a free stream id of this recv transport (round robin
// over 0..1023, so that an id just reset is not reused at once) and opens
// it when the association is up; false when every id is taken.
func (d *dataTransport) addConsumer(c *dataConsumer) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := 0; i < sctpNumStreams; i++ {
		id := uint16((int(d.nextID) + i) % sctpNumStreams)
		if _, used := d.consumers[id]; used {
			continue
		}
		d.nextID = uint16((int(id) + 1) % sctpNumStreams)
		c.params.StreamID = id
		d.consumers[id] = c
		d.openConsumerLocked(c)
		return true
	}
	return false
}

// removeConsumer forgets c and resets its stream (the client's
// DataConsumer closes).
func (d *dataTransport) removeConsumer(c *dataConsumer) {
	d.mu.Lock()
	if d.consumers[c.params.StreamID] == c {
		delete(d.consumers, c.params.StreamID)
	}
	closed := d.closed
	d.mu.Unlock()
	c.mu.Lock()
	c.closed = true
	c.pending, c.pendingBytes = nil, 0
	dc := c.dc
	c.mu.Unlock()
	if dc != nil && !closed {
		_ = dc.Close()
	}
}

// dataForwardHook, when set (tests only), runs before each message is
// handed to one data consumer; a test makes it panic.
var dataForwardHook atomic.Pointer[func(c *dataConsumer)]

// read relays the producer's messages until its stream or the association
// ends, then closes the data producer. It runs on its own goroutine,
// counted in the transport's WaitGroup; a panic fails the transport.
func (p *dataProducer) read(s *sctp.Stream) {
	t := p.t
	defer t.wg.Done()
	defer t.recovered(safe.MediaPacket)
	maxMsg := t.sfu.cfg.MaxDataMessageSize
	buf := make([]byte, dataReadBuffer)
	for {
		n, ppi, err := s.ReadSCTP(buf)
		if errors.Is(err, io.ErrShortBuffer) {
			if n > maxMsg {
				t.sfu.data.tooLarge.Add(1)
				t.log.Info("data producer closed: message larger than the maximum",
					"data_producer", p.id, "size", n, "max", maxMsg)
				break
			}
			buf = make([]byte, n)
			continue
		}
		if err != nil {
			break
		}
		var m dataMessage
		switch ppi {
		case sctp.PayloadTypeWebRTCDCEP:
			continue // negotiated channels: nothing to answer
		case sctp.PayloadTypeWebRTCString:
			m = dataMessage{b: buf[:n], isString: true}
		case sctp.PayloadTypeWebRTCStringEmpty:
			m = dataMessage{b: buf[:0], isString: true}
		case sctp.PayloadTypeWebRTCBinaryEmpty:
			m = dataMessage{b: buf[:0]}
		default:
			m = dataMessage{b: buf[:n]}
		}
		p.relay(m)
	}
	// The client reset its stream (DataChannel closed), sent too much, or
	// the association ended: reset ours too and close the data producer.
	_ = s.Close()
	p.ended()
}

// relay hands one message to every data consumer.
func (p *dataProducer) relay(m dataMessage) {
	if p.closed.Load() {
		return
	}
	for _, c := range *p.consumers.Load() {
		c.send(m)
	}
}

// send writes m to the consumer's stream, or queues it while the stream is
// not open. Bounded: a message that would take the bytes buffered for this
// consumer (queued here, or in SCTP's send queue not yet acknowledged by
// the client) over Config.DataSendBuffer is dropped for this consumer and
// counted (parley_media_data_dropped_total), as mediasoup drops on a full
// SCTP send buffer. A panic here fails the consumer's transport only.
func (c *dataConsumer) send(m dataMessage) {
	defer c.t.recovered(safe.MediaPacket)
	if h := dataForwardHook.Load(); h != nil {
		(*h)(c)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	limit := c.t.sfu.cfg.DataSendBuffer
	if c.dc == nil {
		if c.pendingBytes+len(m.b) > limit {
			c.t.sfu.data.dropped.Add(1)
			return
		}
		c.pending = append(c.pending, dataMessage{b: append([]byte(nil), m.b...), isString: m.isString})
		c.pendingBytes += len(m.b)
		return
	}
	if int(c.dc.BufferedAmount())+len(m.b) > limit {
		c.t.sfu.data.dropped.Add(1)
		return
	}
	c.writeLocked(m)
}

func (c *dataConsumer) writeLocked(m dataMessage) {
	if _, err := c.dc.WriteDataChannel(m.b, m.isString); err != nil {
		return
	}
	c.t.sfu.data.messages.Add(1)
	c.t.sfu.data.bytes.Add(uint64(len(m.b)))
}

// ended closes p after its reader ended (no-op when signalling closed it
// first). It runs on p's reader goroutine, which holds no lock.
func (p *dataProducer) ended() {
	if p.closed.Load() {
		return
	}
	r, err := p.t.sfu.routerFor(p.t.roomID)
	if err != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closeDataProducerLocked(p)
}

// ended closes c after its stream ended (no-op when signalling closed it
// first). It runs on c's watch goroutine, which holds no lock.
func (c *dataConsumer) ended() {
	c.mu.Lock()
	done := c.closed
	c.mu.Unlock()
	if done {
		return
	}
	r, err := c.t.sfu.routerFor(c.t.roomID)
	if err != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c.owner.dataConsumers[c.id] == c && r.participants[c.owner.connID] == c.owner {
		r.closeDataConsumerLocked(c)
	}
}

// closeDataProducerLocked closes a data producer and its data consumers.
func (r *router) closeDataProducerLocked(p *dataProducer) {
	if p.closed.Swap(true) {
		return
	}
	for _, c := range *p.consumers.Load() {
		r.closeDataConsumerLocked(c)
	}
	if p.t.data != nil {
		p.t.data.removeProducer(p)
	}
	delete(p.owner.dataProducers, p.id)
	delete(r.dataProducers, p.id)
}

// closeDataConsumerLocked detaches a data consumer and resets its stream.
func (r *router) closeDataConsumerLocked(c *dataConsumer) {
	c.mu.Lock()
	done := c.closed
	c.mu.Unlock()
	if done {
		return
	}
	c.dp.setConsumers(func(list []*dataConsumer) []*dataConsumer {
		out := list[:0]
		for _, x := range list {
			if x != c {
				out = append(out, x)
			}
		}
		return out
	})
	if c.t.data != nil {
		c.t.data.removeConsumer(c)
	} else {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
	}
	delete(c.owner.dataConsumers, c.id)
}

// clearDataLocked closes a participant's data producers (and so every data
// consumer of them) and its data consumers.
func (r *router) clearDataLocked(p *participant) {
	for _, dp := range sortedDataProducers(p.dataProducers) {
		r.closeDataProducerLocked(dp)
	}
	for _, c := range p.dataConsumers {
		r.closeDataConsumerLocked(c)
	}
}

func sortedDataProducers(m map[string]*dataProducer) []*dataProducer {
	out := make([]*dataProducer, 0, len(m))
	for _, p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seqNo < out[j].seqNo })
	return out
}

// Data channel metrics (part of SFU.Collector):
//
//   - parley_media_data_producers, parley_media_data_consumers: gauges
//   - parley_media_data_messages_total, parley_media_data_bytes_total:
//     messages (and their bytes) relayed to data consumers
//   - parley_media_data_dropped_total: messages not relayed to a data
//     consumer whose send buffer (Config.DataSendBuffer) was full
//   - parley_media_data_too_large_total: data producers closed for a
//     message over Config.MaxDataMessageSize
var (
	descDataProducers = prometheus.NewDesc("parley_media_data_producers", "Data producers (incoming data channels).", nil, nil)
	descDataConsumers = prometheus.NewDesc("parley_media_data_consumers", "Data consumers (outgoing data channels).", nil, nil)
	descDataMessages  = prometheus.NewDesc("parley_media_data_messages_total", "Data channel messages relayed to data consumers.", nil, nil)
	descDataBytes     = prometheus.NewDesc("parley_media_data_bytes_total", "Bytes of data channel messages relayed to data consumers.", nil, nil)
	descDataDropped   = prometheus.NewDesc("parley_media_data_dropped_total", "Data channel messages dropped for a data consumer whose send buffer was full.", nil, nil)
	descDataTooLarge  = prometheus.NewDesc("parley_media_data_too_large_total", "Data producers closed for a message larger than the maximum.", nil, nil)
)

func describeData(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDataProducers, descDataConsumers, descDataMessages, descDataBytes, descDataDropped, descDataTooLarge} {
		ch <- d
	}
}

func collectData(ch chan<- prometheus.Metric, st Stats) {
	ch <- prometheus.MustNewConstMetric(descDataProducers, prometheus.GaugeValue, float64(st.DataProducers))
	ch <- prometheus.MustNewConstMetric(descDataConsumers, prometheus.GaugeValue, float64(st.DataConsumers))
	for d, v := range map[*prometheus.Desc]uint64{descDataMessages: st.DataMessages, descDataBytes: st.DataBytes,
		descDataDropped: st.DataDropped, descDataTooLarge: st.DataTooLarge} {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
}
