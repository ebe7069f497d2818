package media

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"

	"github.com/parleyhq/parley/internal/safe"
)

// IceParameters is mediasoup's IceParameters.
type IceParameters struct {
	UsernameFragment string `json:"usernameFragment"`
	Password         string `json:"password"`
	IceLite          bool   `json:"iceLite"`
}

// IceCandidate is mediasoup's IceCandidate.
type IceCandidate struct {
	Foundation string `json:"foundation"`
	Priority   uint32 `json:"priority"`
	IP         string `json:"ip"`
	Address    string `json:"address"`
	Protocol   string `json:"protocol"`
	Port       int    `json:"port"`
	Type       string `json:"type"`
	TCPType    string `json:"tcpType,omitempty"` // "passive" for our TCP candidates
}

// TransportInfo is what media:transport_created carries for each transport;
// mediasoup-client's createSendTransport/createRecvTransport take it as is.
type TransportInfo struct {
	ID             string         `json:"id"`
	IceParameters  IceParameters  `json:"iceParameters"`
	IceCandidates  []IceCandidate `json:"iceCandidates"`
	DtlsParameters DtlsParameters `json:"dtlsParameters"`
	// SctpParameters is set when data channels are on (mediasoup's shape).
	SctpParameters *SctpParameters `json:"sctpParameters,omitempty"`
}

type direction int

const (
	dirSend direction = iota // the client sends: producers live here
	dirRecv                  // the client receives: consumers live here
)

// remotePwdPlaceholder is given to the ICE agent as the client's password.
// An ICE-lite agent never sends checks, so the client's password is never
// used; mediasoup-client does not signal it anyway.
const remotePwdPlaceholder = "parley-ice-lite-remote-password-unused"

// producerRoute maps an incoming SSRC to its producer and layer.
type producerRoute struct {
	p     *producer
	layer uint8
	isRTX bool
}

// transport is one WebRTC transport in mediasoup's model: ICE-lite + DTLS +
// SRTP over one UDP 5-tuple, carrying either a connection's producers (send)
// or its consumers (recv).
type transport struct {
	id     string
	roomID string
	dir    direction
	owner  *participant
	sfu    *SFU
	log    *slog.Logger

	ufrag, pwd string // the current ICE generation's (mu; restartICE changes them)
	ep         *udpEndpoint
	agent      *ice.Agent
	candidates []IceCandidate

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu          sync.Mutex
	closed      bool
	started     bool
	iceGen      int    // ICE generation: 0, then +1 per restartICE
	remoteUfrag string // the client's ufrag of the current generation, once seen
	remoteDTLS  *DtlsParameters
	dtlsSet     chan struct{}
	dtlsEP      *dtlsEndpoint
	dtlsConn    *dtls.Conn

	iceConn atomic.Pointer[ice.Conn]
	ready   atomic.Bool
	decrypt *srtp.Context // read loop only, set before ready

	encMu   sync.Mutex
	encrypt *srtp.Context
	encBuf  []byte
	plain   []byte

	// Routing tables, copy-on-write; writers hold the router's lock
	// (consumers) or routesMu (producers: SSRCs of rid-based layers are
	// also learned on the read goroutine).
	producers atomic.Pointer[map[uint32]producerRoute]
	consumers atomic.Pointer[map[uint32]*consumer]
	routesMu  sync.Mutex
	// ridProducers are the send transport's producers with rid-based
	// layers, whose SSRCs are learned from the packets (learnSSRC).
	ridProducers atomic.Pointer[[]*producer]

	bwe bwe // recv transport: bandwidth estimate and layer allocation

	twccExtID  atomic.Int32 // send transport: client's transport-cc id
	twccMu     sync.Mutex
	twccRec    *twcc.Recorder
	twccSeq    atomic.Uint32 // recv transport: our transport-wide sequence
	start      time.Time
	nextMid    int // recv transport, router lock
	onReady    func(*transport)
	rtpIn      atomic.Uint64
	rtpOut     atomic.Uint64
	lastRTCPIn atomic.Int64
	failed     atomic.Bool // a panic was contained: transportFailed runs once

	st   transportStateTracker // ICE/DTLS state (state.go)
	data *dataTransport        // SCTP (data channels); nil when they are off
}

// newTransport creates one of owner's transports (mediasoup's
// WebRtcTransport, ICE-lite): its UDP socket (Config.UDPMuxPort's shared
// one, or its own from Config.RTCMinPort..RTCMaxPort), a pion ice.Agent in
// lite mode with new local credentials (RFC 8445 section 5.3), host
// candidates for each announced IP (and a passive TCP one, RFC 6544, with
// Config.TCPPort), and data channels unless Config.DisableDataChannels.
// ICE and DTLS start when the client's first binding request arrives.
// Errors: the socket or the agent cannot be made.
func newTransport(s *SFU, owner *participant, dir direction) (*transport, error) {
	ep := s.sharedEP
	if ep == nil {
		var err error
		if ep, err = s.ports.open(s.cfg.ListenIP, s.lf); err != nil {
			return nil, fmt.Errorf("open UDP socket: %w", err)
		}
	}
	t := &transport{
		id: newID(), roomID: owner.roomID, dir: dir, owner: owner, sfu: s, ep: ep,
		ufrag: randString(16), pwd: randString(32),
		dtlsSet: make(chan struct{}),
		start:   time.Now(),
		twccRec: twcc.NewRecorder(randSSRC()),
	}
	t.log = s.log.With("transport", t.id)
	if !s.cfg.DisableDataChannels {
		t.data = newDataTransport(t)
	}
	if dir == dirRecv {
		t.bwe.log = &sentLog{}
	}
	empty := map[uint32]producerRoute{}
	t.producers.Store(&empty)
	emptyC := map[uint32]*consumer{}
	t.consumers.Store(&emptyC)
	t.ctx, t.cancel = context.WithCancel(context.Background())

	networks := []ice.NetworkType{ice.NetworkTypeUDP4}
	if s.tcpEP != nil {
		networks = append(networks, ice.NetworkTypeTCP4)
	}
	opts := []ice.AgentOption{
		ice.WithICELite(true),
		ice.WithUDPMux(ep.mux),
		ice.WithLocalCredentials(t.ufrag, t.pwd),
		ice.WithCandidateTypes([]ice.CandidateType{ice.CandidateTypeHost}),
		ice.WithNetworkTypes(networks),
		ice.WithMulticastDNSMode(ice.MulticastDNSModeDisabled),
		ice.WithKeepaliveInterval(0),
		ice.WithDisconnectedTimeout(s.cfg.iceDisconnectedTimeout),
		ice.WithFailedTimeout(40 * time.Second),
		ice.WithLoggerFactory(s.lf),
	}
	if s.tcpEP != nil {
		opts = append(opts, ice.WithTCPMux(s.tcpEP.mux))
	}
	if s.cfg.IncludeLoopback || s.listenLoopback {
		opts = append(opts, ice.WithIncludeLoopback())
	}
	agent, err := ice.NewAgentWithOptions(opts...)
	if err != nil {
		t.cancel()
		if !ep.shared {
			_ = ep.close()
		}
		return nil, fmt.Errorf("ice agent: %w", err)
	}
	t.agent = agent
	if err = agent.OnCandidate(func(ice.Candidate) {}); err == nil {
		err = agent.OnConnectionStateChange(t.st.setICE)
	}
	if err == nil {
		err = agent.GatherCandidates()
	}
	if err != nil {
		_ = agent.GracefulClose()
		t.cancel()
		if !ep.shared {
			_ = ep.close()
		}
		return nil, fmt.Errorf("ice gather: %w", err)
	}
	for i, ip := range s.candidateIPs {
		t.candidates = append(t.candidates, IceCandidate{
			Foundation: "udpcandidate", Priority: uint32(1076302079 - i*256), IP: ip, Address: ip,
			Protocol: "udp", Port: ep.port, Type: "host",
		})
	}
	if s.tcpEP != nil {
		// Below every UDP candidate: local preference 5000-i instead of 10000-i.
		for i, ip := range s.candidateIPs {
			t.candidates = append(t.candidates, IceCandidate{
				Foundation: "tcpcandidate", Priority: uint32(1075022079 - i*256), IP: ip, Address: ip,
				Protocol: "tcp", Port: s.tcpEP.port, Type: "host", TCPType: "passive",
			})
		}
	}
	t.expectLocked(t.ufrag, t.pwd, 0)
	return t, nil
}

// expectLocked registers the ICE generation gen's credentials with the
// sockets' ufrag sniffers (t.mu held, or t not shared yet).
func (t *transport) expectLocked(ufrag, pwd string, gen int) {
	fn := func(remote string) { t.onRemoteUfrag(gen, remote) }
	if t.sfu.tcpEP != nil {
		t.sfu.tcpEP.waiters.expect(ufrag, pwd, fn)
	}
	t.ep.sniffer.expect(ufrag, pwd, fn)
}

func (t *transport) forgetUfrag(ufrag string) {
	t.ep.sniffer.forget(ufrag)
	if t.sfu.tcpEP != nil {
		t.sfu.tcpEP.waiters.forget(ufrag)
	}
}

func (t *transport) info(fp string) TransportInfo {
	t.mu.Lock()
	ufrag, pwd := t.ufrag, t.pwd
	t.mu.Unlock()
	return TransportInfo{
		ID:             t.id,
		IceParameters:  IceParameters{UsernameFragment: ufrag, Password: pwd, IceLite: true},
		IceCandidates:  t.candidates,
		DtlsParameters: DtlsParameters{Role: "auto", Fingerprints: []DtlsFingerprint{{Algorithm: "sha-256", Value: fp}}},
		SctpParameters: t.sctpParameters(),
	}
}

// onRemoteUfrag runs on the mux goroutine when the first binding request
// of ICE generation gen arrives: the first one starts the agent (run); the
// first of a later generation (after restartICE) hands the agent the
// client's new ufrag, off the mux goroutine. A stale generation's is
// ignored.
func (t *transport) onRemoteUfrag(gen int, remote string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || gen != t.iceGen {
		return
	}
	t.remoteUfrag = remote
	t.wg.Add(1)
	if !t.started {
		t.started = true
		go t.run(remote)
		return
	}
	go func() {
		defer t.wg.Done()
		defer t.recovered(safe.MediaTransport)
		if err := t.agent.SetRemoteCredentials(remote, remotePwdPlaceholder); err != nil {
			t.log.Debug("ice restart: remote credentials", "err", err)
		}
	}()
}

// restartICE starts a new ICE generation (media:restart_ice): new local
// credentials, the agent restarted (its ice.Conn, and so DTLS and SRTP,
// carry on once the new generation's checks succeed) and the sniffers told
// to expect the new ufrag, since the client's new one is learnt from its
// first check as at the start. The candidates stay the same.
func (t *transport) restartICE() (IceParameters, error) {
	ufrag, pwd := randString(16), randString(32)
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return IceParameters{}, errTransportClosed
	}
	old := t.ufrag
	t.ufrag, t.pwd = ufrag, pwd
	t.iceGen++
	gen := t.iceGen
	t.remoteUfrag = ""
	t.mu.Unlock()
	t.forgetUfrag(old)
	if err := t.agent.Restart(ufrag, pwd); err != nil {
		return IceParameters{}, err
	}
	if err := t.agent.GatherCandidates(); err != nil {
		return IceParameters{}, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || gen != t.iceGen {
		return IceParameters{}, errTransportClosed
	}
	t.expectLocked(ufrag, pwd, gen)
	t.st.restarted()
	return IceParameters{UsernameFragment: ufrag, Password: pwd, IceLite: true}, nil
}

var errTransportClosed = errors.New("transport closed")

// recovered is deferred first thing by each of the transport's goroutines
// (ICE accept + DTLS setup, read loop): a panic there is logged and counted
// under where, and the transport fails (its participant leaves the call,
// the others get media:peer_left); the node and every other transport keep
// going.
func (t *transport) recovered(where safe.Where) {
	if v := recover(); v != nil {
		safe.Report(t.log, t.sfu.cfg.Panics, where, v, debug.Stack())
		if t.failed.CompareAndSwap(false, true) {
			go t.sfu.transportFailed(t)
		}
	}
}

// packetHook, when set (tests only), sees every RTP/RTCP packet a transport
// reads before it is decrypted; a test makes it panic to check containment.
var packetHook atomic.Pointer[func(t *transport, b []byte)]

// connect records the client's DTLS parameters (mediasoup's
// transport.connect({dtlsParameters}); RFC 8842 role and fingerprints),
// which the DTLS handshake waits for. It reports false when they were
// already given or the transport is closed.
func (t *transport) connect(p *DtlsParameters) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.remoteDTLS != nil || t.closed {
		return false
	}
	t.remoteDTLS = p
	close(t.dtlsSet)
	return true
}

func (t *transport) run(remoteUfrag string) {
	defer t.wg.Done()
	defer t.recovered(safe.MediaTransport)
	conn, err := t.agent.Accept(t.ctx, remoteUfrag, remotePwdPlaceholder)
	if err != nil {
		t.log.Debug("ice accept ended", "err", err)
		return
	}
	t.iceConn.Store(conn)
	ep := newDTLSEndpoint(conn.Write, addrOr(conn.LocalAddr()), addrOr(conn.RemoteAddr()))
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.dtlsEP = ep
	t.wg.Add(1)
	t.mu.Unlock()
	go t.readLoop(conn, ep)

	select {
	case <-t.dtlsSet:
	case <-t.ctx.Done():
		return
	}
	t.mu.Lock()
	params := t.remoteDTLS
	t.mu.Unlock()

	cert := t.sfu.cert.tls
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error { return params.verify(raw) }
	profiles := []dtls.SRTPProtectionProfile{dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AES128_CM_HMAC_SHA1_80}
	isClient := params.Role == "server"
	var dc *dtls.Conn
	if isClient {
		dc, err = dtls.ClientWithOptions(ep, ep.remote,
			dtls.WithCertificates(cert), dtls.WithSRTPProtectionProfiles(profiles...),
			dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret),
			dtls.WithInsecureSkipVerify(true), dtls.WithVerifyPeerCertificate(verify),
			dtls.WithLoggerFactory(t.sfu.lf))
	} else {
		dc, err = dtls.ServerWithOptions(ep, ep.remote,
			dtls.WithCertificates(cert), dtls.WithSRTPProtectionProfiles(profiles...),
			dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret),
			dtls.WithInsecureSkipVerify(true), dtls.WithVerifyPeerCertificate(verify),
			dtls.WithClientAuth(dtls.RequireAnyClientCert),
			dtls.WithLoggerFactory(t.sfu.lf))
	}
	if err != nil {
		t.log.Warn("dtls setup failed", "err", err)
		t.st.setDTLS(dtlsFailed)
		return
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		_ = dc.Close()
		return
	}
	t.dtlsConn = dc
	t.mu.Unlock()

	t.st.setDTLS(dtlsConnecting)
	hctx, cancel := context.WithTimeout(t.ctx, 30*time.Second)
	err = dc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		t.log.Info("dtls handshake failed", "err", err)
		if t.ctx.Err() == nil {
			t.st.setDTLS(dtlsFailed)
		}
		return
	}
	if err := t.startSRTP(dc, isClient); err != nil {
		t.log.Warn("srtp setup failed", "err", err)
		t.st.setDTLS(dtlsFailed)
		return
	}
	t.st.setDTLS(dtlsConnected)
	t.log.Debug("transport connected", "remote", addrOr(conn.RemoteAddr()).String())
	if t.onReady != nil {
		t.onReady(t)
	}
	if t.data != nil {
		// SCTP runs inside the DTLS connection until the transport closes.
		t.data.serve(dc)
	}
}

// addrOr is a, or an empty UDP address when a is nil: an ice.Conn has no
// addresses while it has no selected pair (right after an ICE restart).
func addrOr(a net.Addr) net.Addr {
	if a == nil {
		return &net.UDPAddr{}
	}
	return a
}

// SRTPContexts keys SRTP from a completed DTLS handshake (DTLS-SRTP, RFC
// 5764 section 4.2): the profile the handshake selected (AEAD_AES_128_GCM
// or AES128_CM_HMAC_SHA1_80, else an error), the local keys for enc and
// the remote ones for dec, created with decOpts (e.g. replay protection).
// isClient is the DTLS role. The SFU's transports and the test clients
// (internal/media/mediatest, the package's own) key the same way.
func SRTPContexts(dc *dtls.Conn, isClient bool, decOpts ...srtp.ContextOption) (enc, dec *srtp.Context, err error) {
	state, ok := dc.ConnectionState()
	if !ok {
		return nil, nil, fmt.Errorf("no DTLS state")
	}
	dp, ok := dc.SelectedSRTPProtectionProfile()
	if !ok {
		return nil, nil, fmt.Errorf("no SRTP profile negotiated")
	}
	var profile srtp.ProtectionProfile
	switch dp {
	case dtls.SRTP_AEAD_AES_128_GCM:
		profile = srtp.ProtectionProfileAeadAes128Gcm
	case dtls.SRTP_AES128_CM_HMAC_SHA1_80:
		profile = srtp.ProtectionProfileAes128CmHmacSha1_80
	default:
		return nil, nil, fmt.Errorf("unsupported SRTP profile %v", dp)
	}
	cfg := srtp.Config{Profile: profile}
	if err := cfg.ExtractSessionKeysFromDTLS(&state, isClient); err != nil {
		return nil, nil, err
	}
	if enc, err = srtp.CreateContext(cfg.Keys.LocalMasterKey, cfg.Keys.LocalMasterSalt, profile); err != nil {
		return nil, nil, err
	}
	if dec, err = srtp.CreateContext(cfg.Keys.RemoteMasterKey, cfg.Keys.RemoteMasterSalt, profile, decOpts...); err != nil {
		return nil, nil, err
	}
	return enc, dec, nil
}

func (t *transport) startSRTP(dc *dtls.Conn, isClient bool) error {
	enc, dec, err := SRTPContexts(dc, isClient, srtp.SRTPReplayProtection(1024), srtp.SRTCPReplayProtection(256))
	if err != nil {
		return err
	}
	t.encMu.Lock()
	t.encrypt = enc
	t.encMu.Unlock()
	t.decrypt = dec
	t.ready.Store(true)
	return nil
}

func (t *transport) readLoop(conn *ice.Conn, ep *dtlsEndpoint) {
	defer t.wg.Done()
	defer t.recovered(safe.MediaPacket)
	buf := make([]byte, 1500+64)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return
		}
		if n < 2 {
			continue
		}
		b := buf[:n]
		switch {
		case b[0] >= 20 && b[0] <= 63:
			ep.push(b)
		case b[0] >= 128 && b[0] <= 191:
			if !t.ready.Load() {
				continue
			}
			if h := packetHook.Load(); h != nil {
				(*h)(t, b)
			}
			if b[1] >= 192 && b[1] <= 223 {
				t.handleRTCP(b)
			} else {
				t.handleRTP(b)
			}
		}
	}
}

func (t *transport) handleRTP(b []byte) {
	plain, err := t.decrypt.DecryptRTP(b, b, nil)
	if err != nil {
		return
	}
	t.onRTP(plain)
}

// onRTP handles one decrypted RTP packet (RFC 3550 section 5.1) read on a
// send transport: it is routed by SSRC to its producer (media or RTX),
// its transport-wide sequence number (the client's transport-cc extension
// id) is recorded for feedback, and the producer forwards it. Packets of
// unknown SSRCs and malformed packets are dropped. No socket is needed
// when the transport is not ready (fuzzing): writes are then no-ops.
func (t *transport) onRTP(plain []byte) {
	var pkt rtp.Packet
	if err := pkt.Unmarshal(plain); err != nil {
		return
	}
	routes := *t.producers.Load()
	route, ok := routes[pkt.SSRC]
	if !ok {
		if route, ok = t.learnSSRC(&pkt); !ok {
			return
		}
	}
	if id := t.twccExtID.Load(); id > 0 {
		if ext := pkt.GetExtension(uint8(id)); len(ext) >= 2 {
			seq := uint16(ext[0])<<8 | uint16(ext[1])
			t.twccMu.Lock()
			t.twccRec.Record(pkt.SSRC, seq, time.Since(t.start).Microseconds())
			t.twccMu.Unlock()
		}
	}
	t.rtpIn.Add(1)
	route.p.receive(&pkt, int(route.layer), route.isRTX)
}

func (t *transport) handleRTCP(b []byte) {
	plain, err := t.decrypt.DecryptRTCP(b, b, nil)
	if err != nil {
		return
	}
	t.onRTCP(plain)
}

// onRTCP handles one decrypted compound RTCP packet (RFC 3550 section 6,
// feedback RFC 4585): a producer's SR is forwarded to its consumers,
// consumer PLI/FIR (RFC 4585 6.3.1, RFC 5104 4.3.1) become a key-frame
// request to the producer, consumer NACKs (RFC 4585 6.2.1) are answered
// from the producer's history; the rest is ignored. Malformed packets are
// dropped.
func (t *transport) onRTCP(plain []byte) {
	pkts, err := rtcp.Unmarshal(plain)
	if err != nil {
		return
	}
	t.lastRTCPIn.Store(time.Now().UnixNano())
	for _, pkt := range pkts {
		switch p := pkt.(type) {
		case *rtcp.SenderReport:
			if r, ok := (*t.producers.Load())[p.SSRC]; ok && !r.isRTX {
				r.p.onSenderReport(p, int(r.layer))
			}
		case *rtcp.PictureLossIndication:
			if c := (*t.consumers.Load())[p.MediaSSRC]; c != nil {
				c.countKeyFrameRequest(false)
				c.requestKeyFrame(false)
			}
		case *rtcp.FullIntraRequest:
			cs := *t.consumers.Load()
			if c := cs[p.MediaSSRC]; c != nil {
				c.countKeyFrameRequest(true)
				c.requestKeyFrame(false)
			}
			for _, e := range p.FIR {
				if c := cs[e.SSRC]; c != nil {
					c.countKeyFrameRequest(true)
					c.requestKeyFrame(false)
				}
			}
		case *rtcp.TransportLayerNack:
			if c := (*t.consumers.Load())[p.MediaSSRC]; c != nil {
				c.countNACK()
				c.retransmit(p.Nacks)
			}
		case *rtcp.ReceiverReport:
			t.onReceiverReports(p)
		case *rtcp.TransportLayerCC:
			if t.dir == dirRecv {
				t.bwe.feedback(p)
			}
		case *rtcp.ReceiverEstimatedMaximumBitrate:
			if t.dir == dirRecv {
				t.bwe.onREMB(p.Bitrate)
			}
		}
	}
}

// vp8Rewrite is a consumer's picture id and TL0PICIDX to write into its
// copy of a VP8 payload.
type vp8Rewrite struct {
	d   *vp8Desc
	pid uint16
	tl0 uint8
}

// writeRTP encrypts and sends one packet built from h and payload; it
// reports whether the packet was written.
func (t *transport) writeRTP(h *rtp.Header, payload []byte) bool {
	return t.writeRTPRewrite(h, payload, nil, 0)
}

// sendFilter, when set (tests only), sees every RTP packet about to be
// written to a transport; returning false drops it (a lossy link).
var sendFilter atomic.Pointer[func(t *transport, size int) bool]

// writeRTPRewrite is writeRTP with the VP8 fields of rw (when not nil)
// rewritten in the copy of the payload and, when twccID is set, the
// transport-wide sequence number written there under the write lock (so
// that numbers go out in order) and recorded for the bandwidth estimate.
func (t *transport) writeRTPRewrite(h *rtp.Header, payload []byte, rw *vp8Rewrite, twccID uint8) bool {
	conn := t.iceConn.Load()
	if conn == nil || !t.ready.Load() {
		return false
	}
	t.encMu.Lock()
	defer t.encMu.Unlock()
	tw := -1
	if twccID != 0 {
		seq := uint16(t.twccSeq.Add(1))
		_ = h.SetExtension(twccID, []byte{byte(seq >> 8), byte(seq)})
		tw = int(seq)
	}
	hl := h.MarshalSize()
	if tw >= 0 {
		t.bwe.sent(uint16(tw), hl+len(payload), monoNow())
	}
	if f := sendFilter.Load(); f != nil && !(*f)(t, hl+len(payload)) {
		return false
	}
	if cap(t.plain) < hl+len(payload) {
		t.plain = make([]byte, 0, 1600)
	}
	plain := t.plain[:hl+len(payload)]
	if _, err := h.MarshalTo(plain); err != nil {
		return false
	}
	copy(plain[hl:], payload)
	if rw != nil {
		patchVP8(plain[hl:], rw.d, rw.pid, rw.tl0)
	}
	out, err := t.encrypt.EncryptRTP(t.encBuf[:0], plain, nil)
	if err != nil {
		return false
	}
	t.encBuf = out
	if _, err := conn.Write(out); err != nil {
		return false
	}
	t.rtpOut.Add(1)
	return true
}

func (t *transport) writeRTCP(pkts []rtcp.Packet) {
	conn := t.iceConn.Load()
	if conn == nil || !t.ready.Load() {
		return
	}
	raw, err := rtcp.Marshal(pkts)
	if err != nil {
		return
	}
	t.encMu.Lock()
	out, err := t.encrypt.EncryptRTCP(nil, raw, nil)
	t.encMu.Unlock()
	if err == nil {
		_, _ = conn.Write(out)
	}
}

// flushTWCC sends transport-wide-cc feedback for what arrived since the
// last call (worker tick).
func (t *transport) flushTWCC() {
	if t.dir != dirSend || !t.ready.Load() || t.twccExtID.Load() == 0 {
		return
	}
	t.twccMu.Lock()
	pkts := t.twccRec.BuildFeedbackPacket()
	t.twccMu.Unlock()
	if len(pkts) > 0 {
		t.writeRTCP(pkts)
	}
}

// close tears the transport down and waits for its goroutines.
func (t *transport) close() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	dc, ep, ufrag := t.dtlsConn, t.dtlsEP, t.ufrag
	t.mu.Unlock()

	t.ready.Store(false)
	t.cancel()
	t.forgetUfrag(ufrag)
	if t.data != nil {
		t.data.close()
	}
	if dc != nil {
		_ = dc.Close()
	}
	if ep != nil {
		_ = ep.Close()
	}
	_ = t.agent.GracefulClose()
	if !t.ep.shared {
		_ = t.ep.close()
	}
	t.wg.Wait()
}

// setProducerRoutes/setConsumerRoutes: callers hold the router lock.
func (t *transport) setProducerRoutes(fn func(m map[uint32]producerRoute)) {
	t.routesMu.Lock()
	defer t.routesMu.Unlock()
	old := *t.producers.Load()
	m := make(map[uint32]producerRoute, len(old)+2)
	for k, v := range old {
		m[k] = v
	}
	fn(m)
	t.producers.Store(&m)
}

// admitProducer checks that a new producer fits on send transport t: its
// signalled SSRCs (and RTX SSRCs) are not routed yet, and its
// transport-wide-cc extension id (draft-holmer-rmcat-transport-wide-cc-
// extensions-01: one sequence per transport) is the one t's other
// producers use.
func (t *transport) admitProducer(pp *parsedProduce) error {
	routes := *t.producers.Load()
	for _, l := range pp.layers {
		for _, ssrc := range []uint32{l.ssrc, l.rtxSSRC} {
			if _, dup := routes[ssrc]; dup && ssrc != 0 {
				return fmt.Errorf("ssrc %d is already in use", ssrc)
			}
		}
	}
	if tw := t.twccExtID.Load(); tw != 0 && pp.twccID != 0 && uint8(tw) != pp.twccID {
		return errors.New("transport-wide-cc id differs from the transport's other producers")
	}
	return nil
}

// addProducer routes pr's SSRCs on t (and, rid-based, lets t learn them:
// learnSSRC), with twcc (0: none) the transport-wide-cc extension id of
// its packets.
func (t *transport) addProducer(pr *producer, twcc uint8) {
	if twcc != 0 {
		t.twccExtID.Store(int32(twcc))
	}
	t.setProducerRoutes(func(mm map[uint32]producerRoute) {
		for ssrc, r := range pr.routes() {
			mm[ssrc] = r
		}
	})
	if pr.ridBased {
		t.setRIDProducers(func(l []*producer) []*producer { return append(l, pr) })
	}
}

// removeProducer stops routing pr's packets on t.
func (t *transport) removeProducer(pr *producer) {
	t.setProducerRoutes(func(m map[uint32]producerRoute) {
		for ssrc := range pr.routes() {
			delete(m, ssrc)
		}
	})
	if pr.ridBased {
		t.setRIDProducers(func(l []*producer) []*producer {
			out := l[:0]
			for _, x := range l {
				if x != pr {
					out = append(out, x)
				}
			}
			return out
		})
	}
}

// addConsumer routes the receiver's RTCP for c's SSRC and RTX SSRC on
// recv transport t to c (router lock held).
func (t *transport) addConsumer(c *consumer) {
	t.setConsumerRoutes(func(m map[uint32]*consumer) {
		m[c.ssrc] = c
		if c.rtxSSRC != 0 {
			m[c.rtxSSRC] = c
		}
	})
}

// removeConsumer stops routing c's RTCP on t (router lock held).
func (t *transport) removeConsumer(c *consumer) {
	t.setConsumerRoutes(func(m map[uint32]*consumer) {
		delete(m, c.ssrc)
		if c.rtxSSRC != 0 {
			delete(m, c.rtxSSRC)
		}
	})
}

func (t *transport) setConsumerRoutes(fn func(m map[uint32]*consumer)) {
	old := *t.consumers.Load()
	m := make(map[uint32]*consumer, len(old)+2)
	for k, v := range old {
		m[k] = v
	}
	fn(m)
	t.consumers.Store(&m)
}
