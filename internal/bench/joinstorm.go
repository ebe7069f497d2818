package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// runJoinstorm: --clients N connect and join ONE room, paced at --rate
// joins/s (0 = as fast as --concurrency joins in flight allow). Reported:
// joins/s, the time from dial to room:state (p50/p99), the time from the
// first dial to the last room:state, refused and failed joins, the
// server's CPU per 1,000 joins and RSS per connection, and the frames and
// bytes every client received (a large room sends each member one
// room:members_changed per interval, not one frame per join). After every
// client has its room:state the clients are held for --hold, then each
// one's view is checked: the member_count of the last frame that carried
// one (room:state, room:members_changed; room:joined/room:left while the
// room was small) must be the number of clients that joined (N unless
// some failed, which is an error in itself). With --procs K the clients are split over K
// processes as in 'connections'.
func runJoinstorm(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := newCommon("joinstorm", stdout, stderr, 5*time.Minute)
	clients := c.fs.Int("clients", 5000, "clients that join the room")
	rate := c.fs.Float64("rate", 0, "joins started per second, all processes together (0 = as fast as --concurrency allows)")
	conc := c.fs.Int("concurrency", 256, "most joins in progress (dial to room:state) at once, all processes together")
	procs := c.fs.Int("procs", 1, "client processes to spread the clients over (each re-executes this binary)")
	hold := c.fs.Duration("hold", 2*time.Second, "after the last room:state, hold the clients this long, then check that every view converged")
	readBuf := c.fs.Int("read-buffer", 4096, "client read buffer per connection, bytes (larger frames are read into a separate buffer)")
	worker := c.fs.Bool("worker", false, "internal: run as a worker process of --procs")
	offset := c.fs.Int("offset", 0, "internal: index of this worker's first client")
	c.fs.Lookup("duration").Usage = "give up when the storm has not ended after this long"
	if code := c.parse(args); code >= 0 {
		return code
	}
	if *clients < 1 || *procs < 1 || *conc < 1 || *rate < 0 || *hold < 0 {
		fmt.Fprintln(stderr, "parley bench joinstorm: --clients, --procs and --concurrency must be >= 1, --rate and --hold >= 0")
		return 2
	}
	w := &joinWorker{c: c, n: *clients, offset: *offset, rate: *rate, conc: *conc,
		readBuf: *readBuf, hist: NewHist(), sem: make(chan struct{}, *conc)}
	if *worker {
		return w.runWorker(ctx, stdout)
	}
	N := *clients
	res := &Result{Scenario: "joinstorm", Params: map[string]any{"clients": N, "rate": *rate, "procs": *procs,
		"concurrency": *conc, "hold": hold.String(), "url": c.url, "room": c.room, "per_source": c.perSource, "gc_before_hold": c.gcURL != ""}}
	if *procs == 1 {
		if lim := noFileLimit(); lim > 0 && uint64(N)+64 > lim {
			c.progressf("warning: --clients %d is close to this process's open-files limit %d; use --procs", N, lim)
		}
	}
	c.progressf("%d clients joining room %s", N, c.room)
	before := c.sampleServer()
	var (
		agg               []*Result
		atReady, afterEnd serverSample
	)
	if *procs == 1 {
		w.storm(ctx, func(el time.Duration) {
			c.progressf("t=%2.0fs joined %d refused %d failed %d", el.Seconds(), w.joined.Load(), w.refused.Load(), w.connFailed.Load()+w.lost.Load())
		})
		atReady = c.sampleServer()
		c.progressf("storm over: %d joined, %d refused, %d failed; holding %s", w.joined.Load(), w.refused.Load(), w.connFailed.Load()+w.lost.Load(), *hold)
		c.forceGC()
		sleepCtx(ctx, *hold)
		afterEnd = c.sampleServer()
		r := w.result()
		w.closeAll()
		agg = []*Result{r}
	} else {
		var err error
		agg, _, atReady, afterEnd, err = runWorkers(ctx, c, workerPlan{
			scenario: "joinstorm", args: append(args, "--room", c.room), n: N, procs: *procs, hold: *hold,
			shareArgs: func(share, off int) []string {
				return []string{"--clients", strconv.Itoa(share), "--offset", strconv.Itoa(off),
					"--rate", strconv.FormatFloat(*rate/float64(*procs), 'f', -1, 64),
					"--concurrency", strconv.Itoa(max(1, *conc / *procs))}
			}})
		if err != nil {
			fmt.Fprintf(stderr, "parley bench joinstorm: %v\n", err)
			return 1
		}
	}

	// Aggregate the workers' results.
	hist := NewHist()
	js := &JoinStats{Clients: N}
	reasons := map[string]int{}
	closeCodes := map[string]int64{}
	errCodes := map[string]int64{}
	counts := map[string]int{}
	var first, last int64
	js.FramesPerClient.Min, js.BytesPerClient.Min = math.MaxInt64, math.MaxInt64
	for _, r := range agg {
		j := r.Join
		if j == nil {
			continue
		}
		res.Attempted += r.Attempted
		res.Connected += r.Connected
		res.ConnectFailures += r.ConnectFailures
		res.Disconnects += r.Disconnects
		res.Errors += r.Errors
		for k, v := range r.FailureReasons {
			reasons[k] += v
		}
		for k, v := range r.CloseCodes {
			closeCodes[k] += v
		}
		for k, v := range r.ErrorCodes {
			errCodes[k] += v
		}
		for k, v := range j.LastCounts {
			counts[k] += v
		}
		hist.Merge(r.ConnectHist.hist())
		js.Joined += j.Joined
		js.Refused += j.Refused
		js.Failed += j.Failed
		js.FramesTotal += j.FramesTotal
		js.BytesTotal += j.BytesTotal
		js.FramesPerClient.merge(j.FramesPerClient)
		js.BytesPerClient.merge(j.BytesPerClient)
		if j.FirstNs > 0 && (first == 0 || j.FirstNs < first) {
			first = j.FirstNs
		}
		if j.LastNs > last {
			last = j.LastNs
		}
	}
	if len(reasons) > 0 {
		res.FailureReasons = reasons
	}
	if len(closeCodes) > 0 {
		res.CloseCodes = closeCodes
	}
	if len(errCodes) > 0 {
		res.ErrorCodes = errCodes
	}
	js.LastCounts = counts
	js.Converged = counts[strconv.Itoa(js.Joined)]
	js.NotConverged = js.Joined - js.Converged
	if js.FramesPerClient.Min == math.MaxInt64 {
		js.FramesPerClient.Min, js.BytesPerClient.Min = 0, 0
	}
	if n := js.Joined; n > 0 {
		js.FramesPerClient.Mean = round1(float64(js.FramesTotal) / float64(n))
		js.BytesPerClient.Mean = round1(float64(js.BytesTotal) / float64(n))
		js.FramesPerJoin = math.Round(float64(js.FramesTotal)/float64(n)*1000) / 1000
		js.BytesPerJoin = round1(float64(js.BytesTotal) / float64(n))
	}
	js.FirstNs, js.LastNs = 0, 0
	res.JoinTime = hist.Summarize()
	if last > first {
		secs := float64(last-first) / 1e9
		js.JoinsPerSec = round1(float64(js.Joined) / secs)
		js.TimeToLastStateS = math.Round(secs*1000) / 1000
		res.ElapsedS = round1(secs*100) / 100
	}
	res.HeldS = round1(hold.Seconds())
	if u := c.usage(before, afterEnd); u != nil {
		if js.Joined > 0 {
			u.CPUNsPerOp = round1(u.CPUSeconds * 1e9 / float64(js.Joined))
			js.ServerCPUPer1000 = math.Round(u.CPUSeconds/float64(js.Joined)*1000*1000) / 1000
			u.RSSPerConn = round1(float64(afterEnd.rss-before.rss) / float64(js.Joined))
			if afterEnd.heap > 0 && before.heap > 0 {
				u.HeapPerConn = round1(float64(afterEnd.heap-before.heap) / float64(js.Joined))
				u.StackPerConn = round1(float64(afterEnd.stack-before.stack) / float64(js.Joined))
			}
		}
		if ur := c.usage(before, atReady); ur != nil {
			js.ServerCPUAtLastStateS = ur.CPUSeconds
		}
		res.Server = u
	}
	res.Join = js
	c.nodeResults(res, nil, before, afterEnd, 0)
	if res.Nodes != nil {
		for k := range res.Nodes {
			res.Nodes[k].Clients = (N - k + len(c.urls) - 1) / len(c.urls)
		}
	}
	res.computeErrorRate()
	// A refused or failed join, or a view that did not converge, is an
	// error too.
	if N > 0 {
		res.ErrorRate = math.Max(res.ErrorRate, float64(js.Refused+js.Failed+js.NotConverged)/float64(N))
	}
	return res.finish(c)
}

// JoinStats is what joinstorm reports beyond the common fields.
type JoinStats struct {
	Clients int `json:"clients"`
	Joined  int `json:"joined"`  // got their room:state
	Refused int `json:"refused"` // answered with an error
	Failed  int `json:"failed"`  // connect failed, or the connection ended before room:state
	// JoinsPerSec is joined / (last room:state − first dial).
	JoinsPerSec      float64 `json:"joins_per_s"`
	TimeToLastStateS float64 `json:"time_to_last_state_s"`
	// Converged counts the joined clients whose last member_count, after
	// the hold, was the number of clients that joined (N when none
	// failed); LastCounts is how many clients ended with which count.
	Converged    int            `json:"converged"`
	NotConverged int            `json:"not_converged"`
	LastCounts   map[string]int `json:"last_member_counts"`
	// Frames and payload bytes each client received after its connected
	// frame, until the end of the hold.
	FramesPerClient countStat `json:"frames_per_client"`
	BytesPerClient  countStat `json:"bytes_per_client"`
	FramesTotal     int64     `json:"frames_total"`
	BytesTotal      int64     `json:"bytes_total"`
	FramesPerJoin   float64   `json:"frames_per_join"` // frames_total / joined
	BytesPerJoin    float64   `json:"bytes_per_join"`
	// ServerCPUPer1000 is server CPU seconds (whole storm and hold) per
	// 1,000 joins; ServerCPUAtLastStateS the CPU from the start until
	// every client had its room:state.
	ServerCPUPer1000      float64 `json:"server_cpu_s_per_1000_joins,omitempty"`
	ServerCPUAtLastStateS float64 `json:"server_cpu_s_at_last_state,omitempty"`

	FirstNs int64 `json:"first_ns,omitempty"` // between worker processes
	LastNs  int64 `json:"last_ns,omitempty"`
}

// countStat summarises a per-client count.
type countStat struct {
	Mean float64 `json:"mean"`
	Min  int64   `json:"min"`
	Max  int64   `json:"max"`
}

func (s *countStat) merge(o countStat) {
	s.Min = min(s.Min, o.Min)
	s.Max = max(s.Max, o.Max)
}

// joinClient is one client of the storm.
type joinClient struct {
	c       *wsConn
	gi      int
	frames  atomic.Int64
	bytes   atomic.Int64
	count   atomic.Int64 // member count as this client last learned it
	state   atomic.Bool  // got room:state
	settled sync.Once    // released its concurrency slot
}

// joinWorker runs one process's share of the storm.
type joinWorker struct {
	c       *common
	n       int
	offset  int
	rate    float64
	conc    int
	readBuf int
	sem     chan struct{}

	joined      atomic.Int64
	refused     atomic.Int64
	connFailed  atomic.Int64 // dial, upgrade or connected frame failed
	lost        atomic.Int64 // the connection ended before room:state
	disconnects atomic.Int64
	stopping    atomic.Bool
	reasons     codeCounts
	closeCodes  codeCounts
	errCodes    codeCounts

	mu      sync.Mutex
	hist    *Hist
	clients []*joinClient
	first   time.Time
	last    time.Time
	readers sync.WaitGroup
	settled sync.WaitGroup // one per started client until it has an outcome
}

var (
	pfxRoomJoined         = []byte(`{"type":"room:joined"`)
	pfxRoomLeft           = []byte(`{"type":"room:left"`)
	pfxRoomMembersChanged = []byte(`{"type":"room:members_changed"`)
	keyMemberCount        = []byte(`"member_count":`)
)

// storm starts every client and returns when each has its room:state or
// failed. progress is called every second.
func (w *joinWorker) storm(ctx context.Context, progress func(el time.Duration)) {
	c := w.c
	stopProg := make(chan struct{})
	go every(ctx, stopProg, progress)
	defer close(stopProg)
	deadline, cancel := context.WithTimeout(ctx, c.duration)
	defer cancel()
	start := time.Now()
	w.first = start
	roomJSON := strconv.Quote(c.room)
	for i := 0; i < w.n && deadline.Err() == nil; i++ {
		if w.rate > 0 {
			if d := time.Until(start.Add(time.Duration(float64(i) / w.rate * 1e9))); d > 0 {
				time.Sleep(d)
			}
		}
		select {
		case w.sem <- struct{}{}:
		case <-deadline.Done():
		}
		if deadline.Err() != nil {
			break
		}
		gi := w.offset + i
		tok, err := c.token("bench-join-" + strconv.Itoa(gi))
		if err != nil {
			<-w.sem
			w.fail(err)
			continue
		}
		jc := &joinClient{gi: gi}
		w.settled.Add(1)
		go w.run(deadline, jc, tok, roomJSON)
	}
	waited := make(chan struct{})
	go func() { w.settled.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-deadline.Done():
		c.progressf("gave up after %s: %d of %d joined", c.duration, w.joined.Load(), w.n)
	}
}

// settle releases jc's concurrency slot once, when it has an outcome.
func (w *joinWorker) settle(jc *joinClient) {
	jc.settled.Do(func() {
		<-w.sem
		w.settled.Done()
	})
}

// run is one client: dial, connected, room:join, then read until closed.
func (w *joinWorker) run(ctx context.Context, jc *joinClient, tok, roomJSON string) {
	c := w.c
	t0 := time.Now()
	conn, err := func() (*wsConn, error) {
		dctx, cancel := context.WithTimeout(ctx, c.connTimeout)
		defer cancel()
		conn, err := dialWS(dctx, c.dialOpts(jc.gi, w.readBuf), tok)
		if err != nil {
			return nil, err
		}
		if err := conn.readConnected(t0.Add(c.connTimeout)); err != nil {
			conn.close()
			return nil, err
		}
		return conn, nil
	}()
	if err != nil {
		w.fail(err)
		w.settle(jc)
		return
	}
	jc.c = conn
	w.mu.Lock()
	w.clients = append(w.clients, jc)
	w.readers.Add(1)
	w.mu.Unlock()
	defer w.readers.Done()
	msg := `{"type":"room:join","id":"j` + strconv.Itoa(jc.gi) + `","data":{"room_id":` + roomJSON + `}}`
	if err := conn.writeText([]byte(msg)); err != nil {
		w.lost.Add(1)
		w.settle(jc)
		conn.close()
		return
	}
	for {
		frame, err := conn.next()
		if err != nil {
			if !w.stopping.Load() {
				w.disconnects.Add(1)
				code := "eof"
				if errors.Is(err, errClosedByServer) {
					code = strconv.Itoa(conn.closeCode)
				}
				w.closeCodes.add(code, 1)
				if !jc.state.Load() {
					w.lost.Add(1)
				}
			}
			w.settle(jc)
			return
		}
		jc.frames.Add(1)
		jc.bytes.Add(int64(len(frame)))
		switch {
		case bytes.HasPrefix(frame, pfxRoomMembersChanged):
			// member_count is the last field: search from the end.
			if i := bytes.LastIndex(frame, keyMemberCount); i >= 0 {
				if v, ok := parseInt(frame[i+len(keyMemberCount):]); ok {
					jc.count.Store(v)
				}
			}
		case bytes.HasPrefix(frame, pfxRoomJoined):
			jc.count.Add(1)
		case bytes.HasPrefix(frame, pfxRoomLeft):
			jc.count.Add(-1)
		case bytes.HasPrefix(frame, pfxRoomState):
			now := time.Now()
			if v, ok := intAfter(frame, keyMemberCount); ok {
				jc.count.Store(v)
			}
			if !jc.state.Swap(true) {
				w.mu.Lock()
				w.hist.Record(int64(now.Sub(t0)))
				if now.After(w.last) {
					w.last = now
				}
				w.mu.Unlock()
				w.joined.Add(1)
				w.settle(jc)
			}
		case bytes.HasPrefix(frame, pfxError):
			w.errCodes.add(errorCode(frame), 1)
			if id := frameID(frame); len(id) > 0 && id[0] == 'j' && !jc.state.Load() {
				w.refused.Add(1)
				w.settle(jc)
			}
		}
	}
}

func (w *joinWorker) fail(err error) {
	w.connFailed.Add(1)
	w.reasons.add(shortReason(err), 1)
}

func (w *joinWorker) closeAll() {
	w.stopping.Store(true)
	w.mu.Lock()
	cs := w.clients
	w.mu.Unlock()
	var wg sync.WaitGroup
	chunk := (len(cs) + 15) / 16
	for i := 0; i < len(cs); i += max(chunk, 1) {
		part := cs[i:min(i+chunk, len(cs))]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, jc := range part {
				jc.c.closeGracefully()
			}
		}()
	}
	wg.Wait()
	w.readers.Wait()
}

// result summarises this worker's clients now (call it at the end of the
// hold, before closeAll: the convergence check reads each client's last
// member count).
func (w *joinWorker) result() *Result {
	w.mu.Lock()
	defer w.mu.Unlock()
	js := &JoinStats{Clients: w.n, Joined: int(w.joined.Load()), Refused: int(w.refused.Load())}
	// Every client that neither joined nor was refused failed (including
	// those never started because --duration ran out).
	js.Failed = max(0, w.n-js.Joined-js.Refused)
	js.FramesPerClient.Min, js.BytesPerClient.Min = math.MaxInt64, math.MaxInt64
	counts := map[string]int{}
	for _, jc := range w.clients {
		if !jc.state.Load() {
			continue
		}
		f, b := jc.frames.Load(), jc.bytes.Load()
		js.FramesTotal += f
		js.BytesTotal += b
		js.FramesPerClient.Min = min(js.FramesPerClient.Min, f)
		js.FramesPerClient.Max = max(js.FramesPerClient.Max, f)
		js.BytesPerClient.Min = min(js.BytesPerClient.Min, b)
		js.BytesPerClient.Max = max(js.BytesPerClient.Max, b)
		k := strconv.FormatInt(jc.count.Load(), 10)
		if _, ok := counts[k]; !ok && len(counts) >= 50 {
			k = "other"
		}
		counts[k]++
	}
	js.LastCounts = counts
	if !w.first.IsZero() && !w.last.IsZero() {
		js.FirstNs, js.LastNs = w.first.UnixNano(), w.last.UnixNano()
	}
	r := &Result{Scenario: "joinstorm", Params: map[string]any{}, Join: js,
		Attempted: w.n, Connected: len(w.clients), ConnectFailures: int(w.connFailed.Load()),
		Disconnects: w.disconnects.Load(), Errors: w.refused.Load(),
		CloseCodes: w.closeCodes.snapshot(), ErrorCodes: w.errCodes.snapshot(), ConnectHist: w.hist.sparse()}
	if m := w.reasons.snapshot(); m != nil {
		r.FailureReasons = map[string]int{}
		for k, v := range m {
			r.FailureReasons[k] = int(v)
		}
	}
	return r
}

// runWorker is the child side of --procs: storm, report ready, hold until
// stdin closes, check the views, report the result.
func (w *joinWorker) runWorker(ctx context.Context, stdout io.Writer) int {
	var outMu sync.Mutex
	enc := json.NewEncoder(stdout)
	emit := func(l workerLine) {
		outMu.Lock()
		_ = enc.Encode(l)
		outMu.Unlock()
	}
	stdinClosed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stdinClosed)
	}()
	stormCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-stdinClosed:
			cancel()
		case <-stormCtx.Done():
		}
	}()
	w.storm(stormCtx, func(time.Duration) {
		emit(workerLine{Ev: "progress", Connected: w.joined.Load(), Failed: w.connFailed.Load() + w.lost.Load() + w.refused.Load()})
	})
	emit(workerLine{Ev: "ready", Connected: w.joined.Load(), Failed: w.connFailed.Load() + w.lost.Load() + w.refused.Load()})
	t := time.NewTicker(time.Second)
	defer t.Stop()
loop:
	for {
		select {
		case <-stdinClosed:
			break loop
		case <-ctx.Done():
			break loop
		case <-t.C:
			emit(workerLine{Ev: "progress", Connected: w.joined.Load(), Failed: w.connFailed.Load() + w.lost.Load() + w.refused.Load(), Disc: w.disconnects.Load()})
		}
	}
	r := w.result()
	w.closeAll()
	emit(workerLine{Ev: "result", Result: r})
	return 0
}
