// Package media is Parley's SFU: audio/video calls that speak
// mediasoup-client's signalling (PROTOCOL.md section 6), built on pion
// without a C++ worker.
//
// # Model
//
// One call per room is one router. Routers are handed round-robin to a pool
// of Config.Workers workers; a worker is a goroutine that runs the periodic
// media work of its routers (transport-wide-cc feedback every 50 ms).
// Signalling runs on the caller's goroutine (SFU.Handle) under the router's
// lock; packets never take that lock.
//
// Each participant is a connection (two tabs of a user are two
// participants) with two transports, as mediasoup-client expects: a send
// transport carrying its producers and a recv transport carrying its
// consumers. A transport is ICE-lite + DTLS + SRTP on one UDP 5-tuple (or
// one TCP connection, see ICE-TCP below):
//
//   - ICE: a pion ice.Agent in lite mode on an ice.UDPMuxDefault, either one
//     shared socket (Config.UDPMuxPort) or one socket per transport (from
//     RTCMinPort..RTCMaxPort, or ephemeral).
//   - The ufrag trick: pion's agent drops binding requests whose USERNAME
//     is not "localUfrag:remoteUfrag", and mediasoup-client never signals
//     its ufrag. A wrapping PacketConn under the mux (ufragSniffer) reads
//     the USERNAME of the first binding request for a waiting transport,
//     and only then starts the agent (Accept) with the client's ufrag. The
//     client retransmits its check, which then succeeds.
//   - ICE restart (media:restart_ice, transport.restartICE): new local
//     credentials, agent.Restart + GatherCandidates (a new muxed conn for
//     the new ufrag on the same socket, so the candidates stay), and the
//     sniffers told to expect the new ufrag: the first check of the new
//     generation hands the client's new ufrag to the running agent
//     (SetRemoteCredentials). The ice.Conn survives the restart, so DTLS and
//     SRTP carry on once the new pair is selected. Each generation's waiter
//     is tagged, so a late check of an old generation changes nothing.
//   - ICE-TCP (Config.TCPPort > 0): every transport also offers a passive
//     TCP host candidate (RFC 6544, tcpType "passive", priority below the
//     UDP ones) on one shared listening port, served by an ice.TCPMuxDefault
//     (agent NetworkTypes UDP4+TCP4, WithTCPMux). The mux routes an accepted
//     connection by the local ufrag in the USERNAME of its first STUN
//     message (RFC 4571 framing: 2-byte length prefix); the listener given
//     to the mux wraps each connection (sniffingConn) so that first frame
//     also goes through the same ufrag logic as UDP (ufragWaiters) and
//     starts the agent. pion's candidates only read once their agent has
//     started, so that first request waits in the mux's queue meanwhile.
//   - DTLS: pion/dtls over the ICE connection (a small demuxer splits DTLS
//     records from SRTP/SRTCP by first byte). The role is the opposite of
//     the client's signalled role; mediasoup-client answers "client" to our
//     "auto", so the SFU is normally the DTLS server. The peer certificate
//     must match a signalled fingerprint.
//   - SRTP: keys exported from DTLS, raw srtp.Context for each direction;
//     encryption is serialised per transport.
//
// media:transport_connected is sent as soon as the DTLS parameters are
// stored; ICE and DTLS run in the transport's goroutine whenever the client
// starts them. Each transport tracks its ICE (agent callbacks) and DTLS
// state (state.go); one disconnected or failed for Config.TransportTimeout
// is closed by its worker and its participant leaves the call.
//
// # Forwarding
//
// A producer is found by SSRC (media and RTX from its encodings). Its
// packets are forwarded on the send transport's read goroutine to each
// consumer: SSRC becomes the consumer's, the payload type the router's
// preferred one, header extensions are rewritten from the client's ids
// (read from each produce's rtp_parameters) to the router's (audio level,
// video orientation, toffset copied; abs-send-time and transport-wide-cc
// written fresh per consumer transport; mid and the rest dropped).
// Sequence numbers and timestamps are kept, so NACKs map directly.
//
// Pause (control.go): the packet path reads one atomic flag per packet,
// producer.paused at the top of producer.receive and consumer.paused at the
// top of consumer.forward; the rest (notifications, key-frame requests on
// resume) is signalling. Statistics and the active speaker (stats.go,
// speaker.go) read each packet through one hook in producer.receive
// (producer.observe: RFC 3550 receive statistics and the audio level
// extension, under the producer's own stats lock); consumers' loss, jitter
// and RTT come from the receivers' RTCP reports. The worker samples
// bitrates, loss and audio levels and decides the active speaker
// (periodic.go), and ends calls left without participants for
// Config.CallIdleTimeout (through Events' CallIdler when implemented, so
// that the server releases the call's cluster lease).
//
// RTCP: consumer PLI/FIR become a PLI to the producer (throttled to one per
// 300 ms); a PLI is also sent for every new video consumer and when a recv
// transport finishes connecting. Consumer NACKs are answered from the
// producer's 1024-packet history, as RTX when the consumer negotiated it.
// Gaps in a producer's sequence trigger a NACK to its client; incoming RTX
// is unwrapped. Producer SRs are forwarded to consumers (lip sync).
// transport-wide-cc feedback is generated for each send transport with
// pion/interceptor's twcc.Recorder, so Chrome's send-side bandwidth
// estimation works; consumer-side REMB/TWCC feedback is read and ignored.
//
// # Data channels
//
// Unless Config.DisableDataChannels, each transport announces mediasoup's
// sctpParameters ({port 5000, OS 1024, MIS 1024, maxMessageSize}) and runs
// SCTP (pion/sctp) inside its DTLS connection (datachannel.go). The SFU is
// the passive end: after the DTLS handshake the transport's setup goroutine
// waits for the first DTLS application record (the client's INIT; browsers,
// pion and usrsctp always initiate), replays it into sctp.Server, then
// accepts the streams the client sends on. A transport whose client never
// negotiates SCTP costs that one waiting goroutine.
//
// A data producer (media:produce_data) is the client's stream streamId on
// its send transport (mediasoup-client's negotiated DataChannels); one
// goroutine per data producer reads whole messages (ReadSCTP, buffer grown
// up to Config.MaxDataMessageSize; a larger message closes the data
// producer) and hands each to every data consumer. A data consumer
// (media:consume_data) is a stream the SFU opens on the consumer's recv
// transport, with an id it picks (round robin over 0..1023) and the
// producer's reliability (pion/datachannel, negotiated, no DCEP); messages
// keep their PPID. Writes never block the reader: pion/sctp queues them,
// and a message that would take one consumer's buffered bytes (queued
// before its association is up, or unacknowledged) over
// Config.DataSendBuffer is dropped for that consumer and counted. Closing
// is by SCTP stream reset both ways: the client closing its DataChannel
// ends the reader, which closes the data producer and resets each data
// consumer's stream (the consumer's DataChannel closes); leaving, a second
// join and a closing transport do the same. Each data consumer's stream is
// also read (one goroutine each, what arrives is discarded) so that a
// client closing its DataConsumer, a reset, closes it on the server.
//
// # Hardening
//
// Panics are contained (internal/safe, counted in parley_panics_total):
// each transport goroutine (ICE accept + DTLS setup, read loop, the
// worker's per-transport TWCC flush) recovers and fails only that
// transport: its participant leaves the call as on a closed connection
// (media:peer_left to the others; parley_media_transport_failures_total).
// Forwarding to each consumer recovers on its own, so a panic there fails
// the consumer's transport, not the publisher's; the same holds for data
// channels (each data producer's reader recovers and fails its transport,
// handing a message to each data consumer recovers on its own).
// The ufrag sniffers run on pion's node-wide mux readers (shared UDP
// socket, TCP listener) and recover per packet, so the reader keeps going;
// the embedded TURN server's credential check recovers too. Handle
// recovers to an internal error; every router lock in signalling is
// released by defers.
//
// Requests PROTOCOL.md v1.1 names but this SFU does not implement
// (unsupportedTypes) answer protocol.CodeUnsupported, which the gateway
// does not count as a violation. New returns ErrNoAnnouncedIP when no IPv4
// address can be announced; the server then runs Disabled, whose StartCall
// and known media:* requests answer unsupported ("calls are disabled on
// this server: ...").
//
// Metrics: SFU.Collector (calls, participants, transports and transports
// by state, producers and consumers by kind, paused ones, forwarded packets
// and bytes by kind, NACKs and key-frame requests, transport failures and
// timeouts, idle calls ended, active speaker changes); the packet path does
// two atomic adds per forwarded packet.
//
// Fuzz targets (fuzz_test.go, and datachannel_test.go for
// sctp_stream_parameters and the data requests) cover Handle and the data decoders, rtp_parameters,
// rtp_capabilities, dtls_parameters, STUN sniffing (UDP and the first
// RFC 4571 frame on TCP), the RTP path (transport.onRTP, consumer.rewrite)
// and the RTCP path (transport.onRTCP), all without sockets.
//
// # Not done
//
// Simulcast/SVC (rid-only encodings are refused; only the first encoding of
// an ssrc simulcast is forwarded), active/simultaneous-open TCP candidates
// and IPv6, layers, receiver-side bandwidth estimation and
// pacing, receiver reports to publishers.
package media
