package media

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// TestFanoutServerProcess is not a test: BenchmarkFanout re-executes the
// test binary with PARLEY_FANOUT_SERVER=1 so that the SFU runs in its own
// process and its CPU and memory can be read from /proc apart from the
// clients'. It serves the WebSocket harness until stdin closes, writing
// its CPU profile to PARLEY_FANOUT_CPUPROFILE when set.
func TestFanoutServerProcess(t *testing.T) {
	if os.Getenv("PARLEY_FANOUT_SERVER") != "1" {
		t.Skip("helper process for BenchmarkFanout")
	}
	h := newHarness(t, Config{ListenIP: "127.0.0.1", IncludeLoopback: true}, t.TempDir())
	if _, _, err := h.sfu.StartCall("fanout", "pub"); err != nil {
		t.Fatal(err)
	}
	if f := os.Getenv("PARLEY_FANOUT_CPUPROFILE"); f != "" { // the server's CPU profile
		out, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(out); err != nil {
			t.Fatal(err)
		}
		defer func() { pprof.StopCPUProfile(); _ = out.Close() }()
	}
	fmt.Printf("URL=ws%s/ws\n", strings.TrimPrefix(h.srv.URL, "http"))
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// BenchmarkFanout: one publisher (synthetic VP8 at ~1.5 Mbit/s + opus) and
// PARLEY_FANOUT_SUBS (50) subscribers, all pion clients on 127.0.0.1, for
// PARLEY_FANOUT_SECONDS (10). Reports forwarded packets/s, server CPU and
// RSS, and subscribers that stalled (a gap > 1 s after the first packet).
//
//	go test -run XXX -bench Fanout -benchtime 1x ./internal/media/
func BenchmarkFanout(b *testing.B) {
	benchFanout(b, false)
}

// BenchmarkSimulcastFanout: the same with the publisher sending 3-layer
// rid-based simulcast (simPublisher: VP8 L1T3 at 30 fps, ~150 kbit/s,
// ~500 kbit/s and ~1.2 Mbit/s, 240 packets/s, plus opus); subscriber i asks
// for spatial layer i%3 (media:set_preferred_layers), so a third of them
// receive each layer.
//
//	go test -run XXX -bench SimulcastFanout -benchtime 1x ./internal/media/
func BenchmarkSimulcastFanout(b *testing.B) {
	benchFanout(b, true)
}

func benchFanout(b *testing.B, simulcast bool) {
	subs := envInt("PARLEY_FANOUT_SUBS", 50)
	secs := envInt("PARLEY_FANOUT_SECONDS", 10)
	for i := 0; i < b.N; i++ {
		r := runFanout(b, subs, time.Duration(secs)*time.Second, simulcast)
		b.ReportMetric(r.fwdPerSec, "fwd-pkts/s")
		b.ReportMetric(r.cpuPercent, "server-cpu-%")
		b.ReportMetric(float64(r.rssKB)/1024, "server-rss-MiB")
		b.ReportMetric(float64(r.stalled), "stalled-subs")
		b.ReportMetric(r.cpuPercent/100*1e6/r.fwdPerSec, "server-cpu-us/fwd-pkt")
		expected := float64(r.published * uint64(subs))
		if simulcast {
			expected = float64(r.expected)
		}
		b.Logf("%d subscribers, %v: published %d pkts (%.0f pkt/s, %.2f Mbit/s video), received %d (%.0f pkt/s, %.1f%% of expected), server CPU %.1f%% of one core (%.1f µs per forwarded packet), server RSS %.1f MiB (%.1f MiB before subscribers), stalled subscribers %d, max gap %v",
			subs, r.dur, r.published, float64(r.published)/r.dur.Seconds(), r.videoMbps, r.received, r.fwdPerSec,
			100*float64(r.received)/expected, r.cpuPercent, r.cpuPercent/100*1e6/r.fwdPerSec, float64(r.rssKB)/1024, float64(r.rssBaseKB)/1024, r.stalled, r.maxGap)
		if simulcast {
			b.Logf("received per spatial layer (packets/s per subscriber, audio included): %v", r.perLayer)
		}
	}
}

func envInt(k string, d int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
		return v
	}
	return d
}

type fanoutResult struct {
	dur                 time.Duration
	published, received uint64
	expected            uint64    // simulcast: what the subscribers' layers carry
	perLayer            []float64 // simulcast: packets/s per subscriber, by preferred layer
	fwdPerSec           float64
	videoMbps           float64
	cpuPercent          float64
	rssKB, rssBaseKB    int
	stalled             int
	maxGap              time.Duration
}

func runFanout(tb testing.TB, subs int, dur time.Duration, simulcast bool) fanoutResult {
	cmd := exec.Command(os.Args[0], "-test.run=^TestFanoutServerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PARLEY_FANOUT_SERVER=1")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = stdin.Close(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(stdout)
	var url string
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "URL="); ok {
			url = u
			break
		}
	}
	if url == "" {
		tb.Fatal("server process gave no URL")
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	pid := cmd.Process.Pid

	// Publisher.
	pubWS := dialSignal(tb, url+"?conn=pub&user=pub")
	defer pubWS.close()
	pj := pubWS.join(tb, "fanout")
	pub := newTestClient(tb, pj.Send)
	pubWS.request(tb, TypeConnectTransport, map[string]any{"room_id": "fanout", "transport_id": pj.Send.ID, "dtls_parameters": pub.dtlsParameters()})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	if err := pub.connect(ctx); err != nil {
		tb.Fatal(err)
	}
	cancel()
	defer pub.close()
	const vSSRC, aSSRC = 0xAAAA, 0xBBBB
	videoParams := vp8ProduceParams(vSSRC, vSSRC+1)
	if simulcast {
		videoParams = simulcastParams(3)
	}
	videoID := pubWS.produceID(tb, pj.Send.ID, "video", videoParams)
	audioID := pubWS.produceID(tb, pj.Send.ID, "audio", opusProduceParams(aSSRC))

	var published atomic.Uint64
	var videoBytes atomic.Uint64
	stop := make(chan struct{})
	var pubWG sync.WaitGroup
	var sim *simPublisher
	if simulcast {
		// 1 × 625, 2 × 1040, 5 × 1000 bytes per frame at 30 fps.
		sim = newSimPublisher(pub, 30, []int{1, 2, 5}, []int{625, 1040, 1000})
		defer sim.close()
	}
	pubWG.Add(1)
	go func() { // ~1.5 Mbit/s VP8 at 30 fps in 1100-byte packets (or simulcast), opus every 20 ms
		defer pubWG.Done()
		vt := time.NewTicker(time.Second / 30)
		defer vt.Stop()
		at := time.NewTicker(20 * time.Millisecond)
		defer at.Stop()
		var vseq, aseq uint16
		var frameNo uint32
		payload := vp8Payload(1100)
		for {
			select {
			case <-stop:
				return
			case <-at.C:
				aseq++
				_ = pub.writeRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: aseq, Timestamp: uint32(aseq) * 960, SSRC: aSSRC}, Payload: make([]byte, 120)})
				published.Add(1)
			case <-vt.C:
				if simulcast {
					continue
				}
				frameNo++
				for i := 0; i < 6; i++ {
					vseq++
					_ = pub.writeRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: vseq, Timestamp: frameNo * 3000, SSRC: vSSRC, Marker: i == 5}, Payload: payload})
					published.Add(1)
					videoBytes.Add(uint64(len(payload)))
				}
			}
		}
	}()
	defer func() { close(stop); pubWG.Wait() }()
	time.Sleep(300 * time.Millisecond)
	_, rssBase := procStats(pid)
	pubCount := func() (uint64, uint64) {
		if sim != nil {
			return published.Load() + sim.sent.Load(), sim.sentVid.Load()
		}
		return published.Load(), videoBytes.Load()
	}

	// Subscribers.
	type sub struct {
		ws       *signalClient
		c        *testClient
		count    atomic.Uint64
		mu       sync.Mutex
		last     time.Time
		maxGap   time.Duration
		counting atomic.Bool
	}
	all := make([]*sub, subs)
	for i := range all {
		s := &sub{ws: dialSignal(tb, fmt.Sprintf("%s?conn=s%d&user=s%d", url, i, i))}
		all[i] = s
		j := s.ws.join(tb, "fanout")
		s.c = newTestClient(tb, j.Recv)
		s.c.onRTP = func(*rtp.Packet) {
			if !s.counting.Load() {
				return
			}
			s.count.Add(1)
			now := time.Now()
			s.mu.Lock()
			if !s.last.IsZero() && now.Sub(s.last) > s.maxGap {
				s.maxGap = now.Sub(s.last)
			}
			s.last = now
			s.mu.Unlock()
		}
		s.c.onRTCP = func([]rtcp.Packet) {}
		s.ws.request(tb, TypeConnectTransport, map[string]any{"room_id": "fanout", "transport_id": j.Recv.ID, "dtls_parameters": s.c.dtlsParameters()})
		for _, pid := range []string{videoID, audioID} {
			f := s.ws.request(tb, TypeConsume, map[string]any{"room_id": "fanout", "producer_id": pid, "rtp_capabilities": deviceCaps()})
			if simulcast && pid == videoID {
				var cc consumerCreated
				_ = json.Unmarshal(f.Data, &cc)
				s.ws.request(tb, TypeSetPreferredLayers, map[string]any{"room_id": "fanout", "consumer_id": cc.ID, "spatial_layer": i % 3})
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if err := s.c.connect(ctx); err != nil {
			cancel()
			tb.Fatalf("subscriber %d: %v", i, err)
		}
		cancel()
	}
	defer func() {
		for _, s := range all {
			s.c.close()
			s.ws.close()
		}
	}()
	time.Sleep(500 * time.Millisecond) // let every subscriber's flow start

	cpu0, _ := procStats(pid)
	pub0, vb0 := pubCount()
	audio0 := published.Load() // simulcast: published counts opus only
	var layer0 [3]uint64
	if sim != nil {
		for l := range layer0 {
			layer0[l] = sim.layerSent(l)
		}
	}
	for _, s := range all {
		s.counting.Store(true)
	}
	start := time.Now()
	time.Sleep(dur)
	for _, s := range all {
		s.counting.Store(false)
	}
	elapsed := time.Since(start)
	cpu1, rss := procStats(pid)
	pub1, vb1 := pubCount()
	audio := published.Load() - audio0
	res := fanoutResult{dur: elapsed, published: pub1 - pub0, rssKB: rss, rssBaseKB: rssBase}
	res.videoMbps = float64(vb1-vb0) * 8 / elapsed.Seconds() / 1e6
	if sim != nil {
		var perLayer [3]uint64
		var subsAt [3]uint64
		for l := range layer0 {
			perLayer[l] = sim.layerSent(l) - layer0[l]
		}
		for i := range all {
			subsAt[i%3]++
		}
		for l := range perLayer {
			res.expected += subsAt[l] * perLayer[l]
		}
		res.expected += uint64(subs) * audio
		got := [3]uint64{}
		for i, s := range all {
			got[i%3] += s.count.Load()
		}
		for l := range got {
			res.perLayer = append(res.perLayer, float64(got[l])/float64(max(subsAt[l], 1))/elapsed.Seconds())
		}
	}
	for _, s := range all {
		res.received += s.count.Load()
		s.mu.Lock()
		if s.maxGap > res.maxGap {
			res.maxGap = s.maxGap
		}
		if s.maxGap > time.Second || s.count.Load() == 0 {
			res.stalled++
		}
		s.mu.Unlock()
	}
	res.fwdPerSec = float64(res.received) / elapsed.Seconds()
	res.cpuPercent = 100 * (cpu1 - cpu0).Seconds() / elapsed.Seconds()
	return res
}

// procStats returns a process's user+system CPU time and RSS (KiB).
func procStats(pid int) (time.Duration, int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	const hz = 100 // USER_HZ
	cpu := time.Duration(ut+st) * time.Second / hz
	rss := 0
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(st), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				rss, _ = strconv.Atoi(strings.Fields(v)[0])
			}
		}
	}
	return cpu, rss
}

// signalClient speaks the Parley envelope over a WebSocket (request/reply by id).
type signalClient struct {
	ws      *websocket.Conn
	mu      sync.Mutex
	next    int
	waiters map[string]chan frame
	done    chan struct{}
}

func dialSignal(tb testing.TB, url string) *signalClient {
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	c := &signalClient{ws: ws, waiters: map[string]chan frame{}, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				return
			}
			var f frame
			if json.Unmarshal(b, &f) != nil || f.ID == "" {
				continue
			}
			c.mu.Lock()
			ch := c.waiters[f.ID]
			delete(c.waiters, f.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- f
			}
		}
	}()
	return c
}

func (c *signalClient) request(tb testing.TB, typ string, data any) frame {
	tb.Helper()
	c.mu.Lock()
	c.next++
	id := strconv.Itoa(c.next)
	ch := make(chan frame, 1)
	c.waiters[id] = ch
	raw, _ := json.Marshal(map[string]any{"type": typ, "id": id, "data": data})
	err := c.ws.WriteMessage(websocket.TextMessage, raw)
	c.mu.Unlock()
	if err != nil {
		tb.Fatal(err)
	}
	select {
	case f := <-ch:
		if f.Type == "error" {
			tb.Fatalf("%s: %s", typ, f.Data)
		}
		return f
	case <-time.After(10 * time.Second):
		tb.Fatalf("%s: no reply", typ)
	}
	return frame{}
}

func (c *signalClient) join(tb testing.TB, room string) joined {
	f := c.request(tb, TypeJoin, map[string]string{"room_id": room})
	var tc struct {
		SendTransport TransportInfo `json:"send_transport"`
		RecvTransport TransportInfo `json:"recv_transport"`
	}
	_ = json.Unmarshal(f.Data, &tc)
	return joined{Send: tc.SendTransport, Recv: tc.RecvTransport}
}

func (c *signalClient) produceID(tb testing.TB, transportID, kind string, params map[string]any) string {
	f := c.request(tb, TypeProduce, map[string]any{"room_id": "fanout", "transport_id": transportID, "kind": kind, "rtp_parameters": params})
	var r struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(f.Data, &r)
	return r.ID
}

func (c *signalClient) close() {
	_ = c.ws.Close()
	<-c.done
}
