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
// # Layers
//
// The code is split as mediasoup's (and pion's ORTC) objects are, so that
// the packet path can be read without the wire format:
//
//   - SFU (sfu.go): what is node-wide only: Config, sockets (shared UDP,
//     ICE-TCP, TURN), the certificate, the workers, the calls (routers by
//     room), counters and metrics, and the entry points the server calls
//     (StartCall, EndCall, JoinCall, LeaveCall, LeaveUser, Disconnect,
//     Participants, Handle).
//   - The signalling layer (signalling.go, signalling_media.go,
//     signalling_data.go, signalling_events.go) owns mediasoup's JSON:
//     Handle looks the request type up in handlers; each handler decodes
//     and validates the request body, resolves what it names once
//     (resolveID / resolveIn: request.resolve finds the call's router,
//     locked until scope.done, and the caller's participant; then one of
//     scope.transport / sendTransport / ownProducer / producer / consumer /
//     dataProducer; checkID for ids, atMost for the per-connection
//     limits), calls the objects with Go
//     values and encodes the reply. Every message the SFU sends without
//     being asked is encoded by a notifier method (SFU.notify). Nothing
//     below this layer imports encoding/json or internal/protocol; the
//     objects' Go shapes are mediasoup's parameter and stats structs
//     (RtpParameters, DtlsParameters, IceParameters, SctpStreamParameters,
//     TransportStats, RtpStreamStats).
//   - router (router.go): one call: participants, their transports,
//     producers, consumers, data producers; join (creates the two
//     transports), removeParticipant, produce, consume, produceData,
//     consumeData, closeProducerLocked, the active speaker (speaker.go).
//   - transport (transport.go, state.go, dtls.go, udp.go, tcp.go): ICE,
//     DTLS, SRTP, its routes (admitProducer, addProducer, addConsumer),
//     connect, restartICE, close; typed states connState and dtlsState.
//   - producer (producer.go, simulcast.go): layers, packet histories,
//     receive, requestKeyFrame, setPaused, close; its state is a
//     streamState (active, paused, closed; state.go).
//   - consumer (consumer.go, forwarder.go, bwe.go): the forwarder, forward,
//     rewrite, retransmit, start, setPaused, restart, preferLayers, close;
//     its state is a streamState too.
//   - dataProducer, dataConsumer, dataTransport (datachannel.go).
//
// Where each request is handled (all handlers are in signalling*.go and
// run under the router's lock, taken by request.resolve):
//
//	media:join                 handleJoin               router.join → newTransport (×2)
//	media:connect_transport    handleConnectTransport   transport.connect
//	media:produce              handleProduce            router.produce → transport.admitProducer, newProducer, transport.addProducer
//	media:consume              handleConsume            router.consume → buildConsumer, transport.addConsumer; then consumer.start
//	media:producer_close       handleProducerClose      router.closeProducerLocked → producer.close → consumer.close
//	media:set_preferred_layers handleSetPreferredLayers consumer.preferLayers
//	media:producer_pause       handleProducerPause      producer.setPaused
//	media:producer_resume      handleProducerResume     producer.setPaused, producer.restartConsumers
//	media:consumer_pause       handleConsumerPause      consumer.setPaused
//	media:consumer_resume      handleConsumerResume     consumer.setPaused, consumer.restart
//	media:restart_ice          handleRestartICE         transport.restartICE
//	media:get_stats            handleGetStats           transport.stats, producer.stats, consumer.stats
//	media:produce_data         handleProduceData        router.produceData → newDataProducer, dataTransport.addProducer
//	media:consume_data         handleConsumeData        router.consumeData → dataTransport.addConsumer
//	media:leave                handleLeave              SFU.leave → router.removeParticipant
//
// And each message the SFU sends on its own (notifier, signalling_events.go):
//
//	media:new_producer            notifier.newProducerLocked (produce), handleJoin (to the joiner)
//	media:producer_closed         notifier.producerClosedLocked (producer_close, a second join)
//	media:producer_paused/resumed notifier.producerPausedLocked
//	media:consumer_layers_changed notifier.consumerLayersChanged (consumer.layersChanged, packet path and worker)
//	media:active_speaker          notifier.activeSpeakerLocked (router.decideSpeakerLocked, worker)
//	media:new_data_producer       notifier.newDataProducerLocked, handleJoin (to the joiner)
//	media:peer_left               notifier.peerLeftLocked (SFU.leave)
//	media:room_closed             notifier.roomClosed (SFU.EndCall, SFU.transportTimedOut)
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
// A producer has one layer per encoding (up to 3, lowest first: encoding i
// is spatial layer i, as in mediasoup). Its packets are found by SSRC:
// signalled ones (encodings with ssrc and rtx.ssrc), or, for rid-based
// encodings (what mediasoup-client sends from Chromium: a rid and no
// SSRC), learned from the first packets of an unknown SSRC on the send
// transport (simulcast.go: learnSSRC): the RID header extension names the
// layer of a media packet, the RRID one (repaired-rtp-stream-id) that of
// an RTX packet, checked against the MID when both carry one. Each layer
// keeps its own packet history (1024 packets, for NACKs), NACKs gaps in
// its sequence to the client, and measures its bit rate per VP8 temporal
// layer. VP8 payload descriptors are parsed once per packet (codec.go:
// key frame, TID, picture id/TL0PICIDX offsets); H264 key frames are
// recognised (SPS/IDR, STAP-A, FU-A); H264 has no temporal layers here.
//
// VP9 SVC (one encoding with scalabilityMode L2/L3, with or without _KEY:
// simulcast.go svcOf) carries its spatial layers in one SSRC: the spatial
// layer of a packet is the SID of its VP9 payload descriptor (codec.go
// parseVP9), each spatial layer is measured apart (producer.svcMeters),
// and its consumers' forwarders run translateSVC (every layer up to the
// chosen one, only that one between key pictures in K-SVC, the marker bit
// on its last packet of each picture, mediasoup's VP9 handler being the
// model).
//
// Packets are forwarded on the send transport's read goroutine to each
// consumer, whose forwarder (forwarder.go) picks ONE spatial layer at a
// time, and for VP8 a temporal ceiling (frames with a higher TID are
// dropped), and rewrites per consumer: the SSRC, the router's payload
// type, sequence numbers, timestamps and VP8 picture id/TL0PICIDX. The
// first layer keeps its numbering; a switch happens only on a key frame
// of the target layer (requested with a PLI on that layer's SSRC on every
// new target, re-requested every second while waiting), and re-anchors
// the offsets so that the consumer sees seq + 1, the next picture id and
// a timestamp continuing from the last one by the elapsed time (mapped
// through both layers' sender reports when known, else the wall clock).
// Dropped temporal frames shift the later sequence numbers and picture ids
// down, so the consumer sees no gap; a short history of offsets maps late
// packets (the producer's retransmissions) to their place. A raised
// temporal ceiling applies at the next base-layer (TID 0) frame. Every
// packet sent is recorded by its output sequence number, so a consumer
// NACK maps back to (layer, source seq) and is answered from that layer's
// history with the same rewritten fields, as RTX when negotiated (each
// packet at most 3 times, 100 ms apart, up to 1.5 s old, so that a
// congested receiver's NACKs do not multiply its traffic).
// consumer.restart re-anchors on the next key frame after a gap in
// forwarding (resume). Header extensions are rewritten from the client's
// ids (read from each produce's rtp_parameters) to the router's (audio
// level, video orientation, toffset copied; abs-send-time and
// transport-wide-cc written fresh per consumer transport; mid, rid, rrid
// and the rest dropped). Single-layer producers are forwarded from their
// first packet with their own sequence numbers and timestamps.
//
// Layer selection (bwe.go): media:set_preferred_layers caps a consumer's
// layers; within that, every 500 ms each receiver's (recv transport's)
// bandwidth estimate is shared among its video consumers. The estimate
// comes from the receiver's transport-wide-cc feedback on the packets the
// SFU sent it (loss > 10 %: × (1 − loss/2), not below 0.85 × the
// delivered rate, after a 2 s warm-up; loss < 2 %: up 8 % per period, at
// most 4 × delivered + 500 kbit/s), or REMB when the receiver sends only
// that; a receiver that sends neither is not limited. Each consumer climbs
// a ladder of (spatial, temporal) options, spatial then temporal with
// increasing measured rates, while the extra rate fits (× 1.15 to go above
// its current target; going up also waits 2 s since the last change,
// doubled up to 60 s after a step up that loss undid); going down is
// immediate. media:consumer_layers_changed tells the consumer's
// connection every change of the layers it actually receives. Every
// allocation is per receiver: a receiver on a poor link gets lower layers
// without changing anyone else's.
//
// Pause (producer.setPaused, consumer.setPaused): the packet path reads
// one atomic state per packet, producer.state() at the top of
// producer.receive and consumer.state() at the start of consumer.forward
// (before the forwarder); the rest (notifications, key-frame requests on
// resume: consumer.restart for the consumers concerned) is signalling. Statistics and the active speaker (stats.go,
// speaker.go) read each packet through one hook in producer.receive
// (producer.observe: RFC 3550 receive statistics per layer, summed in
// the producer's inbound-rtp item, and the audio level extension, under
// the producer's own stats lock); consumers' loss, jitter
// and RTT come from the receivers' RTCP reports. The worker samples
// bitrates, loss and audio levels and decides the active speaker
// (periodic.go), and ends calls left without participants for
// Config.CallIdleTimeout (through Events' CallIdler when implemented, so
// that the server releases the call's cluster lease).
//
// RTCP: consumer PLI/FIR (counted in stats) become a PLI for the layer that consumer
// receives (throttled to one per 300 ms per layer); a PLI is also sent
// for every new video consumer and when a recv transport finishes
// connecting. Producer SRs are kept per layer and forwarded, with the RTP
// time rewritten, to the consumers receiving that layer (lip sync; the
// NTP time sent is recorded for the consumer's RTT).
// transport-wide-cc feedback is generated for each send transport with
// pion/interceptor's twcc.Recorder, so Chrome's send-side bandwidth
// estimation works. pion/interceptor's NACK responder was not used: it
// keeps one copy of every packet per outgoing stream (per consumer), where
// the layer histories keep one per producer layer for every consumer;
// its GCC estimator was not used either: it owns the write path through
// its pacer (a queue and goroutine per transport).
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
// worker's per-transport TWCC flush, layer-rate measurement and layer
// allocation) recovers and fails only that transport: its participant leaves the call as on a closed connection
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
// two atomic adds per forwarded packet (and, per incoming video packet,
// three for the layer's rate and activity; per outgoing one, a short
// per-consumer lock for the forwarder).
//
// Fuzz targets (fuzz_test.go, and datachannel_test.go for
// sctp_stream_parameters and the data requests) cover Handle and the data decoders, rtp_parameters,
// rtp_capabilities, dtls_parameters, STUN sniffing (UDP and the first
// RFC 4571 frame on TCP), the RTP path (transport.onRTP with rid-based SSRC
// learning, the forwarders, consumer.rewrite) and the RTCP path
// (transport.onRTCP, transport-cc feedback included), all without sockets.
//
// # Not done
//
// SVC (VP9/AV1 spatial layers, the dependency descriptor) and H264
// temporal layers; delay-based bandwidth estimation, probing and pacing
// (an up-switch is the probe); active/simultaneous-open TCP candidates and
// IPv6, receiver reports to publishers.
package media
