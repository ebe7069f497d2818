package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// runConnections opens --n idle authenticated connections at --rate/s,
// holds them for --duration and reports the connect rate, connect-time
// percentiles and the server's memory per connection. With --procs K it
// re-executes itself K times (hidden flag --worker), each worker holding a
// share, because one process may open only RLIMIT_NOFILE sockets.
func runConnections(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := newCommon("connections", stdout, stderr, 10*time.Second)
	n := c.fs.Int("n", 1000, "connections to open")
	rate := c.fs.Float64("rate", 1000, "connections opened per second (0 = as fast as --concurrency allows)")
	procs := c.fs.Int("procs", 1, "client processes to spread the connections over (each re-executes this binary)")
	conc := c.fs.Int("concurrency", 256, "most connects in progress at once (all processes together)")
	settle := c.fs.Duration("settle", 2*time.Second, "wait after the last connect before reading the server's memory")
	readBuf := c.fs.Int("read-buffer", 256, "client read buffer per connection, bytes (small: the client holds many)")
	worker := c.fs.Bool("worker", false, "internal: run as a worker process of --procs (JSON lines on stdout, hold until stdin closes)")
	offset := c.fs.Int("offset", 0, "internal: index of this worker's first connection")
	if code := c.parse(args); code >= 0 {
		return code
	}
	if *n < 1 || *procs < 1 || *conc < 1 || *rate < 0 {
		fmt.Fprintln(stderr, "parley bench connections: --n, --procs and --concurrency must be >= 1, --rate >= 0")
		return 2
	}
	w := &connWorker{c: c, n: *n, offset: *offset, rate: *rate, conc: *conc, readBuf: *readBuf, hist: NewHist()}
	if *worker {
		return w.runWorker(ctx, stdout)
	}
	res := &Result{Scenario: "connections", Params: map[string]any{"n": *n, "rate": *rate, "procs": *procs,
		"concurrency": *conc, "duration": c.duration.String(), "url": c.url, "per_source": c.perSource, "gc_before_hold": c.gcURL != ""}}
	if *procs == 1 {
		if lim := noFileLimit(); lim > 0 && uint64(*n)+64 > lim {
			c.progressf("warning: --n %d is close to this process's open-files limit %d; use --procs", *n, lim)
		}
	}
	before := c.sampleServer()
	var (
		agg      []*Result
		heldFrom time.Time
		atReady  serverSample
		afterEnd serverSample
	)
	if *procs == 1 {
		w.open(ctx, func(conn, fail int64, el time.Duration) {
			c.progressf("t=%2.0fs connected %d failed %d", el.Seconds(), conn, fail)
		})
		sleepCtx(ctx, *settle)
		atReady = c.sampleServer()
		c.forceGC()
		heldFrom = time.Now()
		w.hold(ctx, c.duration, func(el time.Duration) {
			c.progressf("holding %d connections, %.0fs, disconnects %d", w.connected.Load()-w.disconnects.Load(), el.Seconds(), w.disconnects.Load())
		})
		afterEnd = c.sampleServer()
		w.closeAll()
		agg = []*Result{w.result()}
	} else {
		var err error
		agg, heldFrom, atReady, afterEnd, err = runWorkers(ctx, c, workerPlan{
			scenario: "connections", args: args, n: *n, procs: *procs, settle: *settle, hold: c.duration,
			shareArgs: func(share, off int) []string {
				return []string{"--n", strconv.Itoa(share), "--offset", strconv.Itoa(off),
					"--rate", strconv.FormatFloat(*rate/float64(*procs), 'f', -1, 64),
					"--concurrency", strconv.Itoa(max(1, *conc / *procs))}
			}})
		if err != nil {
			fmt.Fprintf(stderr, "parley bench connections: %v\n", err)
			return 1
		}
	}
	// Aggregate.
	hist := NewHist()
	reasons := map[string]int{}
	closeCodes := map[string]int64{}
	var first, last int64
	for _, r := range agg {
		res.Attempted += r.Attempted
		res.Connected += r.Connected
		res.ConnectFailures += r.ConnectFailures
		res.Disconnects += r.Disconnects
		for k, v := range r.FailureReasons {
			reasons[k] += v
		}
		for k, v := range r.CloseCodes {
			closeCodes[k] += v
		}
		hist.Merge(r.ConnectHist.hist())
		if f, ok := r.Params["first_ns"].(float64); ok && (first == 0 || int64(f) < first) {
			first = int64(f)
		}
		if l, ok := r.Params["last_ns"].(float64); ok && int64(l) > last {
			last = int64(l)
		}
	}
	if len(reasons) > 0 {
		res.FailureReasons = reasons
	}
	if len(closeCodes) > 0 {
		res.CloseCodes = closeCodes
	}
	res.ConnectTime = hist.Summarize()
	if last > first {
		secs := float64(last-first) / 1e9
		res.ConnectRate = round1(float64(res.Connected) / secs)
		res.ElapsedS = round1(secs*100) / 100
	}
	res.HeldS = round1(time.Since(heldFrom).Seconds())
	if u := c.usage(before, afterEnd); u != nil {
		// Memory: the sample at the end of the hold (the runtime has had
		// --duration to return handshake garbage); also shown at ready.
		if res.Connected > 0 {
			u.RSSPerConn = round1(float64(afterEnd.rss-before.rss) / float64(res.Connected))
			if afterEnd.heap > 0 && before.heap > 0 {
				u.HeapPerConn = round1(float64(afterEnd.heap-before.heap) / float64(res.Connected))
				u.StackPerConn = round1(float64(afterEnd.stack-before.stack) / float64(res.Connected))
			}
		}
		// CPU per connect: from the start until every connection was open
		// (and --settle), i.e. without the idle hold.
		if atReady.ok && res.Connected > 0 {
			u.CPUNsPerOp = round1((atReady.cpu - before.cpu) * 1e9 / float64(res.Connected))
		}
		res.Server = u
		res.Params["rss_at_ready_bytes"] = atReady.rss
	}
	c.nodeResults(res, nil, before, afterEnd, 0)
	if res.Nodes != nil {
		// Connection i went to server i mod n; what failed is not known
		// per server, so this is the share attempted.
		for k := range res.Nodes {
			res.Nodes[k].Clients = (*n - k + len(c.urls) - 1) / len(c.urls)
		}
	}
	res.computeErrorRate()
	return res.finish(c)
}

// connWorker opens and holds one process's share of connections.
type connWorker struct {
	c       *common
	n       int
	offset  int
	rate    float64
	conc    int
	readBuf int

	connected   atomic.Int64
	failed      atomic.Int64
	disconnects atomic.Int64
	stopping    atomic.Bool
	reasons     codeCounts
	closeCodes  codeCounts

	mu      sync.Mutex
	hist    *Hist
	conns   []*wsConn
	first   time.Time
	last    time.Time
	readers sync.WaitGroup
}

// open dials all connections, paced at rate, and returns when every
// attempt has finished. progress is called every second.
func (w *connWorker) open(ctx context.Context, progress func(conn, fail int64, el time.Duration)) {
	c := w.c
	sem := make(chan struct{}, max(1, w.conc))
	stopProg := make(chan struct{})
	go every(ctx, stopProg, func(el time.Duration) { progress(w.connected.Load(), w.failed.Load(), el) })
	defer close(stopProg)
	start := time.Now()
	w.first = start
	var dials sync.WaitGroup
	for i := 0; i < w.n && ctx.Err() == nil; i++ {
		if w.rate > 0 {
			if d := time.Until(start.Add(time.Duration(float64(i) / w.rate * 1e9))); d > 0 {
				time.Sleep(d)
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		gi := w.offset + i
		tok, err := c.token("bench-conn-" + strconv.Itoa(gi))
		if err != nil {
			<-sem
			w.fail(err)
			continue
		}
		dials.Add(1)
		go func() {
			t0 := time.Now()
			conn, err := func() (*wsConn, error) {
				dctx, cancel := context.WithTimeout(ctx, c.connTimeout)
				defer cancel()
				conn, err := dialWS(dctx, c.dialOpts(gi, w.readBuf), tok)
				if err != nil {
					return nil, err
				}
				if err := conn.readConnected(t0.Add(c.connTimeout)); err != nil {
					conn.close()
					return nil, err
				}
				return conn, nil
			}()
			done := time.Now()
			<-sem
			if err != nil {
				if ctx.Err() == nil { // an interrupt is not a failure
					w.fail(err)
				}
				dials.Done()
				return
			}
			w.mu.Lock()
			w.hist.Record(int64(done.Sub(t0)))
			w.conns = append(w.conns, conn)
			if done.After(w.last) {
				w.last = done
			}
			w.readers.Add(1)
			w.mu.Unlock()
			w.connected.Add(1)
			dials.Done()
			// Hold: answer pings, notice closes.
			defer w.readers.Done()
			for {
				if _, err := conn.next(); err != nil {
					if !w.stopping.Load() {
						w.disconnects.Add(1)
						code := "eof"
						if errors.Is(err, errClosedByServer) {
							code = strconv.Itoa(conn.closeCode)
						}
						w.closeCodes.add(code, 1)
					}
					return
				}
			}
		}()
	}
	dials.Wait()
}

func (w *connWorker) fail(err error) {
	w.failed.Add(1)
	w.reasons.add(shortReason(err), 1)
}

// hold keeps the connections open for d (or until ctx ends).
func (w *connWorker) hold(ctx context.Context, d time.Duration, progress func(el time.Duration)) {
	stop := make(chan struct{})
	go every(ctx, stop, progress)
	sleepCtx(ctx, d)
	close(stop)
}

func (w *connWorker) closeAll() {
	w.stopping.Store(true)
	w.mu.Lock()
	conns := w.conns
	w.mu.Unlock()
	// Close in parallel: a graceful close per connection is a syscall or two.
	var wg sync.WaitGroup
	chunk := (len(conns) + 15) / 16
	for i := 0; i < len(conns); i += max(chunk, 1) {
		part := conns[i:min(i+chunk, len(conns))]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, cn := range part {
				cn.closeGracefully()
			}
		}()
	}
	wg.Wait()
	w.readers.Wait()
}

func (w *connWorker) result() *Result {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := &Result{Scenario: "connections", Params: map[string]any{},
		Attempted: int(w.connected.Load() + w.failed.Load()), Connected: int(w.connected.Load()),
		ConnectFailures: int(w.failed.Load()), Disconnects: w.disconnects.Load(),
		CloseCodes: w.closeCodes.snapshot(), ConnectHist: w.hist.sparse()}
	if m := w.reasons.snapshot(); m != nil {
		r.FailureReasons = map[string]int{}
		for k, v := range m {
			r.FailureReasons[k] = int(v)
		}
	}
	if !w.first.IsZero() && !w.last.IsZero() {
		r.Params["first_ns"] = float64(w.first.UnixNano())
		r.Params["last_ns"] = float64(w.last.UnixNano())
	}
	return r
}

// --- worker processes ---

type workerLine struct {
	Ev        string  `json:"ev"`
	Connected int64   `json:"connected,omitempty"`
	Failed    int64   `json:"failed,omitempty"`
	Disc      int64   `json:"disconnects,omitempty"`
	Result    *Result `json:"result,omitempty"`
}

// runWorker is the child side: open, report ready, hold until stdin
// closes (or the signal), report the result.
func (w *connWorker) runWorker(ctx context.Context, stdout io.Writer) int {
	var outMu sync.Mutex
	enc := json.NewEncoder(stdout)
	emit := func(l workerLine) {
		outMu.Lock()
		_ = enc.Encode(l)
		outMu.Unlock()
	}
	// The coordinator closes our stdin to stop us (also while opening).
	stdinClosed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stdinClosed)
	}()
	openCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-stdinClosed:
			cancel()
		case <-openCtx.Done():
		}
	}()
	w.open(openCtx, func(conn, fail int64, _ time.Duration) {
		emit(workerLine{Ev: "progress", Connected: conn, Failed: fail})
	})
	emit(workerLine{Ev: "ready", Connected: w.connected.Load(), Failed: w.failed.Load()})
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
			emit(workerLine{Ev: "progress", Connected: w.connected.Load(), Failed: w.failed.Load(), Disc: w.disconnects.Load()})
		}
	}
	w.closeAll()
	emit(workerLine{Ev: "result", Result: w.result()})
	return 0
}

type workerProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	ready  chan struct{}
	result chan *Result
	conn   atomic.Int64
	fail   atomic.Int64
	disc   atomic.Int64
}

// workerPlan says how runWorkers splits a scenario over processes.
type workerPlan struct {
	scenario string   // the scenario the workers run
	args     []string // the user's flags, passed on (later ones win)
	n        int      // clients in all
	procs    int
	// shareArgs returns the flags that give a worker its share: share
	// clients, the first one numbered off.
	shareArgs func(share, off int) []string
	settle    time.Duration // wait after every worker is ready before sampling
	hold      time.Duration // then hold this long before stopping them
}

// runWorkers starts procs copies of this binary, each with a share of n,
// and coordinates them: wait until all are ready, settle, sample the
// server, hold, stop them (close their stdin) and collect their results.
func runWorkers(ctx context.Context, c *common, plan workerPlan) (
	[]*Result, time.Time, serverSample, serverSample, error) {
	var zero serverSample
	exe, err := os.Executable()
	if err != nil {
		return nil, time.Time{}, zero, zero, fmt.Errorf("cannot re-execute: %w", err)
	}
	n, procs := plan.n, plan.procs
	ws := make([]*workerProc, procs)
	off := 0
	for k := 0; k < procs; k++ {
		share := n / procs
		if k < n%procs {
			share++
		}
		wargs := []string{"bench", plan.scenario}
		wargs = append(wargs, plan.args...) // the user's flags; later ones win
		wargs = append(wargs, "--worker", "--procs", "1", "--quiet")
		wargs = append(wargs, plan.shareArgs(share, off)...)
		off += share
		cmd := exec.Command(exe, wargs...)
		cmd.Env = append(os.Environ(), "PARLEY_AUTH_SECRET="+c.secret)
		cmd.Stderr = c.stderr
		setPdeathsig(cmd)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return nil, time.Time{}, zero, zero, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, time.Time{}, zero, zero, err
		}
		wp := &workerProc{cmd: cmd, stdin: stdin, ready: make(chan struct{}), result: make(chan *Result, 1)}
		if err := cmd.Start(); err != nil {
			return nil, time.Time{}, zero, zero, fmt.Errorf("start worker: %w", err)
		}
		ws[k] = wp
		go func() {
			sc := bufio.NewScanner(out)
			sc.Buffer(make([]byte, 1<<20), 16<<20)
			readyOnce := sync.Once{}
			var got *Result
			for sc.Scan() {
				var l workerLine
				if json.Unmarshal(sc.Bytes(), &l) != nil {
					continue
				}
				wp.conn.Store(l.Connected)
				wp.fail.Store(l.Failed)
				wp.disc.Store(l.Disc)
				switch l.Ev {
				case "ready":
					readyOnce.Do(func() { close(wp.ready) })
				case "result":
					got = l.Result
				}
			}
			readyOnce.Do(func() { close(wp.ready) })
			wp.result <- got
		}()
	}
	stopAll := func() {
		for _, wp := range ws {
			if wp != nil {
				_ = wp.stdin.Close()
			}
		}
	}
	sum := func() (conn, fail, disc int64) {
		for _, wp := range ws {
			conn += wp.conn.Load()
			fail += wp.fail.Load()
			disc += wp.disc.Load()
		}
		return
	}
	stopProg := make(chan struct{})
	go every(ctx, stopProg, func(el time.Duration) {
		cn, f, d := sum()
		c.progressf("t=%2.0fs connected %d failed %d disconnects %d (%d processes)", el.Seconds(), cn, f, d, procs)
	})
	for _, wp := range ws {
		select {
		case <-wp.ready:
		case <-ctx.Done():
			stopAll()
		}
	}
	cn, f, _ := sum()
	c.progressf("all %d processes ready: %d connected/joined, %d failed; holding %s", procs, cn, f, plan.settle+plan.hold)
	sleepCtx(ctx, plan.settle)
	atReady := c.sampleServer()
	c.forceGC()
	heldFrom := time.Now()
	sleepCtx(ctx, plan.hold)
	afterEnd := c.sampleServer()
	close(stopProg)
	stopAll()
	var out []*Result
	for k, wp := range ws {
		r := <-wp.result
		_ = wp.cmd.Wait()
		if r == nil {
			return nil, heldFrom, atReady, afterEnd, fmt.Errorf("worker %d ended without a result", k)
		}
		out = append(out, r)
	}
	return out, heldFrom, atReady, afterEnd, nil
}
