// Package bench is the load tool behind 'parley bench': it drives a running
// Parley server over real WebSockets, with tokens it mints itself from the
// server's HS256 secret, and reports throughput, latency percentiles, errors
// and the server's CPU and memory.
//
//	parley bench connections --n 19000 --rate 5000 --procs 2 --server-pid PID
//	parley bench fanout --subscribers 1000 --publishers 1 --size 100 --rate 0
//	parley bench joinstorm --clients 5000 --procs 2 --server-pid PID
//	parley bench presence --clients 100 --rate 20
//	parley bench presence --clients 1000 --rate 20 --coalesce
//	parley bench storage --writers 16 --rooms 1 --inflight 8
//	parley bench fanout --url ws://127.0.0.1:7881/ws,ws://127.0.0.1:7882/ws,ws://127.0.0.1:7883/ws
//
// With several --url (cluster nodes), client i connects to URL i mod n and
// the servers' CPU and memory are summed, with a per-server breakdown.
//
// See docs/performance.md for the method and the figures.
package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/parleyhq/parley/internal/auth"
)

const usageText = `usage: parley bench SCENARIO [flags]

Drives a running Parley server over real WebSockets with tokens minted from
the server's HS256 secret (--secret or PARLEY_AUTH_SECRET).

scenarios:
  connections  open --n idle authenticated connections at --rate/s, hold them
               for --duration; connect rate, p50/p99 connect time, server
               memory per connection (--server-pid or /metrics); --procs K
               splits the clients over K processes
  fanout       one room, --subscribers S and --publishers P sending
               room:broadcast events of --size bytes at --rate events/s total
               (0 = as fast as the --window in-flight bound allows);
               deliveries/s, latency, drops, server CPU per delivery
  joinstorm    --clients N (default 5000) connect and join ONE room at --rate
               joins/s (0 = as fast as --concurrency allows), --procs K client
               processes; joins/s, p50/p99 dial to room:state, time to the
               last room:state, refused/failed joins, server CPU per 1,000
               joins, RSS per connection, frames and bytes per client; after
               --hold, checks every client's member_count is N
  presence     --clients C in one room each sending room:update_presence at
               --rate per client; delivered updates/s and latency; understands
               room:presence_batch (each entry is a delivery); --coalesce
               says the room is large (C > --large-room-members) and reports
               presence frames/s beside deliveries/s
  storage      --writers W sending room:update_storage batches into --rooms R,
               each keeping --inflight requests outstanding; acked batches/s
               and ack latency

Several servers (the nodes of a cluster): --url takes a comma-separated list;
client i connects to URL i mod n (round-robin). In room scenarios member 0,
the first publisher or writer, is on the first URL and joins before the
others, so the first URL's node owns the room (--first-join-alone does the
same with one URL). --server-pid and --metrics-url then take one entry per
URL, in the same order. The server figures (CPU, RSS, heap, syscalls) are
the sum over the servers, and a per-server section (its clients'
deliveries and latency, its own CPU and memory) follows; in --json it is
"nodes".

Run 'parley bench SCENARIO -h' for the flags of a scenario. The server
limits messages per connection (--msg-rate 100/s and --msg-bytes-rate
1 MiB/s by default): raise --msg-rate/--msg-burst and set
--msg-bytes-rate 0 on the server for publishers and storage writers.
`

// Main runs the bench command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usageText)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	scenario, rest := args[0], args[1:]
	run, ok := scenarios[scenario]
	if !ok {
		fmt.Fprintf(stderr, "parley bench: unknown scenario %q\n\n", scenario)
		fmt.Fprint(stderr, usageText)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, rest, stdout, stderr)
}

type scenarioFunc func(ctx context.Context, args []string, stdout, stderr io.Writer) int

var scenarios map[string]scenarioFunc

func init() {
	scenarios = map[string]scenarioFunc{
		"connections": runConnections,
		"joinstorm":   runJoinstorm,
		"fanout":      runFanout,
		"presence":    runPresence,
		"storage":     runStorage,
	}
}

// common holds the flags every scenario has.
type common struct {
	name         string
	url          string   // --url as given (one URL or a comma-separated list)
	urls         []string // the servers, in --url order
	secret       string
	duration     time.Duration
	jsonOut      bool
	maxErrorRate float64
	serverPIDArg string
	serverPIDs   []int // one per URL, or none
	metricsURL   string
	gcURL        string   // --gc-url: asked before a hold, so memory is sampled after a GC
	metricsURLs  []string // one per URL ("-" = none)
	perSource    int
	room         string
	connTimeout  time.Duration
	compression  bool
	quiet        bool
	joinFirst    bool // member 0 joins alone first (always with several URLs)

	stdout, stderr io.Writer
	signer         *auth.Signer
	fs             *flag.FlagSet
}

func newCommon(name string, stdout, stderr io.Writer, defDuration time.Duration) *common {
	// stderr is shared by progress lines and worker processes' output.
	stderr = &lockedWriter{w: stderr}
	c := &common{name: name, stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("parley bench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.url, "url", "ws://127.0.0.1:7880/ws", "WebSocket URL of the server; a comma-separated list spreads the clients round-robin over several servers (cluster nodes)")
	fs.StringVar(&c.secret, "secret", "", "HS256 secret the server verifies tokens with (default $PARLEY_AUTH_SECRET)")
	fs.DurationVar(&c.duration, "duration", defDuration, "how long to run (connections: how long to hold)")
	fs.BoolVar(&c.jsonOut, "json", false, "print one JSON object instead of the table")
	fs.Float64Var(&c.maxErrorRate, "max-error-rate", 0.01, "exit 1 when the error rate (see docs/performance.md) exceeds this; negative = never")
	fs.StringVar(&c.serverPIDArg, "server-pid", "", "server process id: CPU and RSS are read from /proc/PID (default: the server's /metrics); with several --url, one pid per URL, comma-separated")
	fs.StringVar(&c.metricsURL, "metrics-url", "", "server metrics URL (default: derived from --url, /metrics; - = none); with several --url, one per URL, comma-separated")
	fs.IntVar(&c.perSource, "per-source", 10000, "client sockets per loopback source address 127.0.0.2, .3, ... (0 = let the kernel choose)")
	fs.StringVar(&c.room, "room", "", "room id (prefix) to use (default: bench-<scenario>-<random>)")
	fs.StringVar(&c.gcURL, "gc-url", "", "connections, joinstorm: URL(s) that make the server collect garbage, fetched 4 times when the hold starts so that the memory sampled at its end is what stays rather than the connect phase's garbage; the server's pprof heap with gc=1, e.g. http://127.0.0.1:6060/debug/pprof/heap?gc=1 (serve --debug-addr); comma-separated, one per --url")
	fs.DurationVar(&c.connTimeout, "connect-timeout", 10*time.Second, "timeout of one connect (TCP + upgrade + connected frame)")
	fs.BoolVar(&c.compression, "compression", false, "offer permessage-deflate (no context takeover both ways) and inflate compressed frames; the server compresses shared frames of at least its --ws-compression-threshold")
	fs.BoolVar(&c.quiet, "quiet", false, "no progress lines on stderr")
	fs.BoolVar(&c.joinFirst, "first-join-alone", false, "room scenarios: member 0 joins and gets its room:state before the others send their joins (so its server takes the room's lease in a cluster); always on with several --url")
	c.fs = fs
	return c
}

// parse parses args and checks the common flags; it returns an exit code
// >= 0 when the caller must stop.
func (c *common) parse(args []string) int {
	if err := c.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if c.fs.NArg() > 0 {
		fmt.Fprintf(c.stderr, "parley bench %s: unexpected argument %q\n", c.name, c.fs.Arg(0))
		return 2
	}
	if c.secret == "" {
		c.secret = os.Getenv("PARLEY_AUTH_SECRET")
	}
	if c.secret == "" {
		fmt.Fprintf(c.stderr, "parley bench %s: no secret: pass --secret or set PARLEY_AUTH_SECRET (the server's HS256 secret)\n", c.name)
		return 2
	}
	if c.duration <= 0 {
		fmt.Fprintf(c.stderr, "parley bench %s: --duration must be positive\n", c.name)
		return 2
	}
	c.urls = splitList(c.url)
	if len(c.urls) == 0 {
		fmt.Fprintf(c.stderr, "parley bench %s: --url must be ws://host:port/path\n", c.name)
		return 2
	}
	allLoopback := true
	for _, raw := range c.urls {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
			fmt.Fprintf(c.stderr, "parley bench %s: --url must be ws://host:port/path (or a comma-separated list of them), got %q\n", c.name, raw)
			return 2
		}
		// Spread source addresses only when talking to loopback addresses.
		if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() || ip.To4() == nil {
			allLoopback = false
		}
	}
	if !allLoopback {
		c.perSource = 0
	}
	if len(c.urls) > 1 {
		c.joinFirst = true
	}
	if c.metricsURL == "" {
		for _, raw := range c.urls {
			u, _ := url.Parse(raw)
			scheme := "http"
			if u.Scheme == "wss" {
				scheme = "https"
			}
			c.metricsURLs = append(c.metricsURLs, scheme+"://"+u.Host+"/metrics")
		}
	} else {
		c.metricsURLs = splitList(c.metricsURL)
		if len(c.metricsURLs) == 1 && c.metricsURLs[0] == "-" {
			for len(c.metricsURLs) < len(c.urls) {
				c.metricsURLs = append(c.metricsURLs, "-")
			}
		}
		if len(c.metricsURLs) != len(c.urls) {
			fmt.Fprintf(c.stderr, "parley bench %s: --metrics-url has %d entries for %d --url entries (one per server, or -)\n", c.name, len(c.metricsURLs), len(c.urls))
			return 2
		}
	}
	if c.serverPIDArg != "" && c.serverPIDArg != "0" {
		for _, f := range splitList(c.serverPIDArg) {
			pid, err := strconv.Atoi(f)
			if err != nil || pid <= 0 {
				fmt.Fprintf(c.stderr, "parley bench %s: --server-pid: %q is not a process id\n", c.name, f)
				return 2
			}
			c.serverPIDs = append(c.serverPIDs, pid)
		}
		if len(c.serverPIDs) != len(c.urls) {
			fmt.Fprintf(c.stderr, "parley bench %s: --server-pid has %d entries for %d --url entries (one per server)\n", c.name, len(c.serverPIDs), len(c.urls))
			return 2
		}
	}
	if c.room == "" {
		c.room = fmt.Sprintf("bench-%s-%d", c.name, time.Now().UnixNano()%1e9)
	}
	c.signer = auth.NewHS256Signer([]byte(c.secret))
	raiseNoFile()
	return -1
}

// token mints a token for user with every permission on every room.
func (c *common) token(user string) (string, error) {
	tok, _, err := c.signer.Mint(user, "Bench "+user, c.duration+time.Hour, map[string]auth.Perm{"*": auth.PermAll})
	return tok, err
}

// forceGC fetches every --gc-url four times, 250 ms apart (a server's
// /debug/pprof/heap?gc=1 runs a garbage collection first): each collection
// at most halves a goroutine stack that grew, and stack spans freed by one
// collection return to the heap at the next, so it takes a few to reach
// what an idle server settles at after its periodic (2-minute) ones.
// Failures are reported, not fatal.
func (c *common) forceGC() {
	if c.gcURL == "" {
		return
	}
	for i := 0; i < 4; i++ {
		if i > 0 {
			time.Sleep(250 * time.Millisecond)
		}
		c.getGCURLs()
	}
}

func (c *common) getGCURLs() {
	for _, u := range splitList(c.gcURL) {
		resp, err := metricsClient.Get(u)
		if err != nil {
			c.progressf("--gc-url %s: %v", u, err)
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			c.progressf("--gc-url %s: HTTP %d", u, resp.StatusCode)
		}
	}
}

// splitList splits a comma-separated flag value, dropping empty entries
// and surrounding spaces.
func splitList(v string) []string {
	var out []string
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// nodeOf is the server (index into urls) that connection number i uses:
// round-robin.
func (c *common) nodeOf(i int) int { return i % len(c.urls) }

// dialOpts for connection number i (on server nodeOf(i), spread over
// source addresses).
func (c *common) dialOpts(i int, readBuf int) dialOpts {
	o := dialOpts{url: c.urls[c.nodeOf(i)], readBuf: readBuf, timeout: c.connTimeout, compression: c.compression}
	if c.perSource > 0 {
		o.src = sourceIP(i / c.perSource)
	}
	return o
}

// sourceIP returns 127.0.0.2 + k.
func sourceIP(k int) net.IP {
	v := uint32(127)<<24 | 2 + uint32(k)
	return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// progressf prints one progress line (stderr) unless --quiet.
func (c *common) progressf(format string, args ...any) {
	if c.quiet {
		return
	}
	fmt.Fprintf(c.stderr, "[%s] "+format+"\n", append([]any{c.name}, args...)...)
}

// every runs fn each second until ctx ends or stop is closed.
func every(ctx context.Context, stop <-chan struct{}, fn func(elapsed time.Duration)) {
	start := time.Now()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case now := <-t.C:
			fn(now.Sub(start))
		}
	}
}

// sleepCtx sleeps d or until ctx ends; false when ctx ended.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// --- results ---

// Result is what every scenario reports (fields that do not apply are
// omitted from the JSON).
type Result struct {
	Scenario string         `json:"scenario"`
	Params   map[string]any `json:"params"`
	ElapsedS float64        `json:"elapsed_s"`

	Attempted       int            `json:"connections_attempted,omitempty"`
	Connected       int            `json:"connections,omitempty"`
	ConnectFailures int            `json:"connect_failures"`
	ConnectRate     float64        `json:"connect_rate_per_s,omitempty"`
	ConnectTime     *Summary       `json:"connect_time,omitempty"`
	FailureReasons  map[string]int `json:"failure_reasons,omitempty"`
	HeldS           float64        `json:"held_s,omitempty"`

	// joinstorm: dial to room:state, and the storm's own figures.
	JoinTime *Summary   `json:"join_time,omitempty"`
	Join     *JoinStats `json:"join,omitempty"`

	Sent            int64    `json:"sent,omitempty"`
	SentPerSec      float64  `json:"sent_per_s,omitempty"`
	Acked           int64    `json:"acked,omitempty"`
	AckedPerSec     float64  `json:"acked_per_s,omitempty"`
	AckLatency      *Summary `json:"ack_latency,omitempty"`
	Expected        int64    `json:"deliveries_expected,omitempty"`
	Delivered       int64    `json:"delivered,omitempty"`
	DeliveredPerSec float64  `json:"delivered_per_s,omitempty"`
	Latency         *Summary `json:"latency,omitempty"`
	// presence: room:presence_updated + room:presence_batch frames
	// received, of which batches; values coalesced away by a batch.
	PresenceFrames       int64   `json:"presence_frames,omitempty"`
	PresenceFramesPerSec float64 `json:"presence_frames_per_s,omitempty"`
	PresenceBatches      int64   `json:"presence_batches,omitempty"`
	Superseded           int64   `json:"superseded,omitempty"`

	Drops       int64 `json:"drops"`       // sequence gaps: lost messages
	Undelivered int64 `json:"undelivered"` // still missing at the end of the drain (live members)

	Errors      int64            `json:"errors"`
	ErrorCodes  map[string]int64 `json:"error_codes,omitempty"`
	Disconnects int64            `json:"disconnects"`
	CloseCodes  map[string]int64 `json:"close_codes,omitempty"`
	ErrorRate   float64          `json:"error_rate"`

	Server *ServerUsage `json:"server,omitempty"`
	// ClientCPUSeconds is this process's own CPU time (user+system) over
	// the whole run: the client shares the machine with the server.
	ClientCPUSeconds float64 `json:"client_cpu_s,omitempty"`

	// Nodes is the per-server breakdown of a run against several servers
	// (--url a,b,c); Server is then their sum.
	Nodes []NodeResult `json:"nodes,omitempty"`

	// Between worker processes only.
	ConnectHist *sparseHist `json:"connect_hist,omitempty"`
}

// ServerUsage is the server's CPU and memory over the measured window.
type ServerUsage struct {
	Source             string  `json:"source"` // "proc" or "metrics"
	CPUSeconds         float64 `json:"cpu_s"`
	CPUCores           float64 `json:"cpu_cores"` // cpu_s per wall second
	CPUNsPerDelivery   float64 `json:"cpu_ns_per_delivery,omitempty"`
	CPUNsPerOp         float64 `json:"cpu_ns_per_op,omitempty"`
	RSSBefore          int64   `json:"rss_before_bytes,omitempty"`
	RSSAfter           int64   `json:"rss_after_bytes,omitempty"`
	RSSPerConn         float64 `json:"rss_per_conn_bytes,omitempty"`
	HeapPerConn        float64 `json:"heap_inuse_per_conn_bytes,omitempty"`
	StackPerConn       float64 `json:"stack_inuse_per_conn_bytes,omitempty"`
	GoroutinesAfter    int64   `json:"goroutines_after,omitempty"`
	ReadSyscalls       int64   `json:"read_syscalls,omitempty"`  // from /proc/PID/io (with --server-pid)
	WriteSyscalls      int64   `json:"write_syscalls,omitempty"` // socket writes are most of them
	DeliveriesPerWrite float64 `json:"deliveries_per_write,omitempty"`
}

func (r *Result) finish(c *common) int {
	if r.ClientCPUSeconds == 0 {
		r.ClientCPUSeconds = round1(selfCPU()*100) / 100
	}
	if c.jsonOut {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(r)
	} else {
		r.printTable(c.stdout)
	}
	if c.maxErrorRate >= 0 && r.ErrorRate > c.maxErrorRate {
		fmt.Fprintf(c.stderr, "parley bench %s: error rate %.4g exceeds --max-error-rate %.4g\n", c.name, r.ErrorRate, c.maxErrorRate)
		return 1
	}
	return 0
}

// computeErrorRate is the worst of: failed or lost connections per
// attempted connection, error replies per message sent, drops and
// undelivered messages per expected delivery (storage: unanswered batches
// per batch sent).
func (r *Result) computeErrorRate() {
	rate := 0.0
	conns := r.Attempted
	if conns == 0 {
		conns = r.Connected
	}
	if conns > 0 {
		rate = math.Max(rate, float64(r.ConnectFailures+int(r.Disconnects))/float64(conns))
	}
	if r.Sent > 0 {
		rate = math.Max(rate, float64(r.Errors)/float64(r.Sent))
	}
	if r.Expected > 0 {
		rate = math.Max(rate, float64(r.Drops+r.Undelivered)/float64(r.Expected))
	} else if r.Sent > 0 {
		rate = math.Max(rate, float64(r.Drops+r.Undelivered)/float64(r.Sent))
	}
	r.ErrorRate = rate
}

func (r *Result) printTable(w io.Writer) {
	var rows [][2]string
	add := func(k, v string) { rows = append(rows, [2]string{k, v}) }
	lat := func(k string, s *Summary) {
		if s == nil || s.Count == 0 {
			return
		}
		add(k, fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (n=%d)",
			fmtUs(s.P50), fmtUs(s.P90), fmtUs(s.P99), fmtUs(s.P999), fmtUs(s.Max), s.Count))
	}
	add("scenario", r.Scenario)
	keys := make([]string, 0, len(r.Params))
	for k := range r.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var ps []string
	for _, k := range keys {
		ps = append(ps, fmt.Sprintf("%s=%v", k, r.Params[k]))
	}
	add("params", strings.Join(ps, " "))
	add("elapsed", fmt.Sprintf("%.2f s", r.ElapsedS))
	if r.Attempted > 0 || r.Connected > 0 {
		add("connections", fmt.Sprintf("%d of %d (failures %d)", r.Connected, max(r.Attempted, r.Connected), r.ConnectFailures))
	}
	if r.ConnectRate > 0 {
		add("connect rate", fmt.Sprintf("%.0f /s", r.ConnectRate))
	}
	lat("connect time", r.ConnectTime)
	if len(r.FailureReasons) > 0 {
		add("failure reasons", fmtCounts(r.FailureReasons))
	}
	if j := r.Join; j != nil {
		add("joined", fmt.Sprintf("%d of %d (refused %d, failed %d)", j.Joined, j.Clients, j.Refused, j.Failed))
		add("join rate", fmt.Sprintf("%.0f /s, last room:state after %.3f s", j.JoinsPerSec, j.TimeToLastStateS))
	}
	lat("join time", r.JoinTime)
	if r.HeldS > 0 {
		add("held", fmt.Sprintf("%.1f s", r.HeldS))
	}
	if j := r.Join; j != nil {
		conv := fmt.Sprintf("%d of %d joined clients see member_count %d", j.Converged, j.Joined, j.Joined)
		if j.NotConverged > 0 {
			conv += "; last counts seen " + fmtCounts(j.LastCounts)
		}
		add("converged", conv)
		add("frames/client", fmt.Sprintf("mean %.1f  min %d  max %d  (%.3f per join)", j.FramesPerClient.Mean, j.FramesPerClient.Min, j.FramesPerClient.Max, j.FramesPerJoin))
		add("bytes/client", fmt.Sprintf("mean %.0f  min %d  max %d  (%.0f per join)", j.BytesPerClient.Mean, j.BytesPerClient.Min, j.BytesPerClient.Max, j.BytesPerJoin))
		if j.ServerCPUPer1000 > 0 {
			add("server cpu/1000 joins", fmt.Sprintf("%.3f s (%.2f s until the last room:state)", j.ServerCPUPer1000, j.ServerCPUAtLastStateS))
		}
	}
	if r.Sent > 0 {
		add("sent", fmt.Sprintf("%d (%.0f /s)", r.Sent, r.SentPerSec))
	}
	if r.Acked > 0 {
		add("acked", fmt.Sprintf("%d (%.0f /s)", r.Acked, r.AckedPerSec))
	}
	lat("ack latency", r.AckLatency)
	if r.Expected > 0 {
		add("delivered", fmt.Sprintf("%d of %d expected (%.0f /s)", r.Delivered, r.Expected, r.DeliveredPerSec))
	} else if r.Delivered > 0 {
		add("delivered", fmt.Sprintf("%d (%.0f /s)", r.Delivered, r.DeliveredPerSec))
	}
	lat("delivery latency", r.Latency)
	if r.PresenceFrames > 0 {
		line := fmt.Sprintf("%d (%.0f /s)", r.PresenceFrames, r.PresenceFramesPerSec)
		if r.PresenceBatches > 0 {
			line += fmt.Sprintf(", of which %d room:presence_batch; %d values superseded before their batch", r.PresenceBatches, r.Superseded)
		}
		add("presence frames", line)
	}
	if r.Expected > 0 || r.Drops > 0 {
		add("drops", strconv.FormatInt(r.Drops, 10)+" (sequence gaps)")
	}
	if r.Undelivered > 0 {
		add("undelivered", fmt.Sprintf("%d (not received by the end of the drain: the run was over capacity)", r.Undelivered))
	}
	errs := strconv.FormatInt(r.Errors, 10)
	if len(r.ErrorCodes) > 0 {
		errs += "  " + fmtCounts(r.ErrorCodes)
	}
	add("errors", errs)
	disc := strconv.FormatInt(r.Disconnects, 10)
	if len(r.CloseCodes) > 0 {
		disc += "  close codes " + fmtCounts(r.CloseCodes)
	}
	add("disconnects", disc)
	add("error rate", fmt.Sprintf("%.4g", r.ErrorRate))
	if r.ClientCPUSeconds > 0 {
		add("client cpu", fmt.Sprintf("%.2f s (this process, whole run)", r.ClientCPUSeconds))
	}
	if s := r.Server; s != nil {
		total := ""
		if len(r.Nodes) > 1 {
			total = fmt.Sprintf(", sum of %d servers", len(r.Nodes))
		}
		add("server cpu", fmt.Sprintf("%.2f s (%.2f cores, from %s%s)", s.CPUSeconds, s.CPUCores, s.Source, total))
		if s.CPUNsPerDelivery > 0 {
			add("server cpu/delivery", fmt.Sprintf("%.0f ns", s.CPUNsPerDelivery))
		}
		if s.CPUNsPerOp > 0 {
			add("server cpu/op", fmt.Sprintf("%.0f ns", s.CPUNsPerOp))
		}
		if s.RSSAfter > 0 {
			add("server rss", fmt.Sprintf("%.1f MiB -> %.1f MiB", float64(s.RSSBefore)/(1<<20), float64(s.RSSAfter)/(1<<20)))
		}
		if s.RSSPerConn != 0 {
			add("server rss/conn", fmt.Sprintf("%.0f B (%.1f KiB)", s.RSSPerConn, s.RSSPerConn/1024))
		}
		if s.HeapPerConn != 0 {
			add("server heap/conn", fmt.Sprintf("%.0f B (%.1f KiB)", s.HeapPerConn, s.HeapPerConn/1024))
		}
		if s.WriteSyscalls > 0 {
			line := fmt.Sprintf("%d reads, %d writes", s.ReadSyscalls, s.WriteSyscalls)
			if s.DeliveriesPerWrite > 0 {
				line += fmt.Sprintf(" (%.2f deliveries per write)", s.DeliveriesPerWrite)
			}
			add("server syscalls", line)
		}
		if s.StackPerConn != 0 {
			add("server stack/conn", fmt.Sprintf("%.0f B (%.1f KiB)", s.StackPerConn, s.StackPerConn/1024))
		}
		if s.GoroutinesAfter > 0 {
			add("server goroutines", strconv.FormatInt(s.GoroutinesAfter, 10))
		}
	}
	for k, n := range r.Nodes {
		line := fmt.Sprintf("%s  clients %d", n.URL, n.Clients)
		if n.Delivered > 0 {
			line += fmt.Sprintf("  delivered %d (%.0f /s)", n.Delivered, n.DeliveredPerSec)
		}
		if s := n.Latency; s != nil && s.Count > 0 {
			line += fmt.Sprintf("  latency p50 %s p99 %s", fmtUs(s.P50), fmtUs(s.P99))
		}
		if s := n.AckLatency; s != nil && s.Count > 0 {
			line += fmt.Sprintf("  ack p50 %s p99 %s", fmtUs(s.P50), fmtUs(s.P99))
		}
		if s := n.Server; s != nil {
			line += fmt.Sprintf("  cpu %.2f s (%.2f cores)  rss %.1f MiB", s.CPUSeconds, s.CPUCores, float64(s.RSSAfter)/(1<<20))
		}
		add(fmt.Sprintf("server %d", k+1), line)
	}
	width := 0
	for _, r := range rows {
		width = max(width, len(r[0]))
	}
	for _, r := range rows {
		fmt.Fprintf(w, "%-*s  %s\n", width, r[0], r[1])
	}
}

func fmtUs(us float64) string {
	switch {
	case us >= 1e6:
		return fmt.Sprintf("%.2fs", us/1e6)
	case us >= 1e3:
		return fmt.Sprintf("%.2fms", us/1e3)
	default:
		return fmt.Sprintf("%.0fµs", us)
	}
}

func fmtCounts[V int | int64](m map[string]V) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] || (m[keys[i]] == m[keys[j]] && keys[i] < keys[j]) })
	var parts []string
	for i, k := range keys {
		if i == 6 {
			parts = append(parts, fmt.Sprintf("+%d more", len(keys)-i))
			break
		}
		parts = append(parts, fmt.Sprintf("%s×%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// --- server CPU and memory ---

type serverSample struct {
	ok         bool
	at         time.Time
	cpu        float64 // seconds (user + system)
	rss        int64
	heap       int64 // go_memstats_heap_inuse_bytes, when /metrics answers
	goroutines int64
	stack      int64 // go_memstats_stack_inuse_bytes
	syscr      int64 // read syscalls (/proc/PID/io), -1 when unknown
	syscw      int64 // write syscalls

	nodes []serverSample // with several servers: each one's sample (the fields above are their sums)
}

var metricsClient = &http.Client{Timeout: 3 * time.Second}

// sampleServer reads the server's CPU time and RSS from /proc/PID when a
// pid was given, and its Go heap from /metrics when reachable. With
// several servers it samples each and sums: ok only when every one
// answered, syscalls only when every one's are known.
func (c *common) sampleServer() serverSample {
	if len(c.urls) <= 1 {
		return c.sampleNode(0)
	}
	s := serverSample{at: time.Now(), ok: true}
	for k := range c.urls {
		n := c.sampleNode(k)
		s.nodes = append(s.nodes, n)
		s.ok = s.ok && n.ok
		s.cpu += n.cpu
		s.rss += n.rss
		s.heap += n.heap
		s.goroutines += n.goroutines
		s.stack += n.stack
		if n.syscr < 0 || s.syscr < 0 {
			s.syscr, s.syscw = -1, -1
		} else {
			s.syscr += n.syscr
			s.syscw += n.syscw
		}
	}
	return s
}

// sampleNode samples server k (its --metrics-url and --server-pid entry).
func (c *common) sampleNode(k int) serverSample {
	s := serverSample{at: time.Now()}
	var metricsURL string
	if k < len(c.metricsURLs) {
		metricsURL = c.metricsURLs[k]
	}
	m := scrapeMetrics(metricsURL)
	if m != nil {
		s.heap = int64(m["go_memstats_heap_inuse_bytes"])
		s.stack = int64(m["go_memstats_stack_inuse_bytes"])
		s.goroutines = int64(m["go_goroutines"])
	}
	s.syscr, s.syscw = -1, -1
	if k < len(c.serverPIDs) {
		pid := c.serverPIDs[k]
		cpu, rss, err := procUsage(pid)
		if err == nil {
			s.ok, s.cpu, s.rss = true, cpu, rss
		}
		s.syscr, s.syscw = procIO(pid)
		return s
	}
	if m != nil {
		if v, ok := m["process_cpu_seconds_total"]; ok {
			s.ok, s.cpu, s.rss = true, v, int64(m["process_resident_memory_bytes"])
		}
	}
	return s
}

func (c *common) serverSource() string {
	if len(c.serverPIDs) > 0 {
		return "proc"
	}
	return "metrics"
}

// usage turns two samples into a ServerUsage (nil when unavailable). With
// several servers it is the sum; nodeUsage gives each one's.
func (c *common) usage(a, b serverSample) *ServerUsage {
	if !a.ok || !b.ok {
		return nil
	}
	u := &ServerUsage{Source: c.serverSource(), CPUSeconds: round1((b.cpu-a.cpu)*100) / 100, RSSBefore: a.rss, RSSAfter: b.rss, GoroutinesAfter: b.goroutines}
	if a.syscw >= 0 && b.syscw >= 0 {
		u.ReadSyscalls, u.WriteSyscalls = b.syscr-a.syscr, b.syscw-a.syscw
	}
	if d := b.at.Sub(a.at).Seconds(); d > 0 {
		u.CPUCores = math.Round(u.CPUSeconds/d*100) / 100
	}
	return u
}

// nodeUsage is server k's own usage between two samples of several
// servers (nil when unavailable).
func (c *common) nodeUsage(a, b serverSample, k int) *ServerUsage {
	if k >= len(a.nodes) || k >= len(b.nodes) {
		return nil
	}
	return c.usage(a.nodes[k], b.nodes[k])
}

// NodeResult is one server's share of a run against several servers
// (--url a,b,c): its clients (connection i is on server i mod n), what
// they received, and the server's own CPU and memory.
type NodeResult struct {
	URL             string       `json:"url"`
	Clients         int          `json:"clients"`
	Delivered       uint64       `json:"delivered,omitempty"`
	DeliveredPerSec float64      `json:"delivered_per_s,omitempty"`
	Latency         *Summary     `json:"latency,omitempty"`
	AckLatency      *Summary     `json:"ack_latency,omitempty"`
	Server          *ServerUsage `json:"server,omitempty"`
}

// nodeResults fills res.Nodes when there are several servers: per server,
// the room members on it (rr may be nil: connections), their delivery and
// acknowledgement latencies, and its usage between a and b. secs is the
// span deliveries/s are computed over.
func (c *common) nodeResults(res *Result, rr *roomRun, a, b serverSample, secs float64) {
	if len(c.urls) <= 1 {
		return
	}
	res.Nodes = make([]NodeResult, len(c.urls))
	for k, u := range c.urls {
		nr := NodeResult{URL: u, Server: c.nodeUsage(a, b, k)}
		if rr != nil {
			deliv, ack := NewHist(), NewHist()
			for _, p := range rr.peers {
				if p != nil && c.nodeOf(p.idx) == k {
					nr.Clients++
					deliv.Merge(p.hist)
					ack.Merge(p.ack)
				}
			}
			nr.Delivered = deliv.N
			if secs > 0 && deliv.N > 0 {
				nr.DeliveredPerSec = round1(float64(deliv.N) / secs)
			}
			if deliv.N > 0 {
				nr.Latency = deliv.Summarize()
			}
			if ack.N > 0 {
				nr.AckLatency = ack.Summarize()
			}
		}
		res.Nodes[k] = nr
	}
}

// procUsage reads utime+stime (clock ticks, 100 Hz on Linux) and VmRSS.
func procUsage(pid int) (cpu float64, rss int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, errors.New("bad /proc stat")
	}
	f := strings.Fields(s[i+1:])
	// fields after the command: state(0) ppid(1) ... utime(11) stime(12)
	if len(f) < 13 {
		return 0, 0, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	cpu = (ut + st) / 100
	st2, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(st2), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			fs := strings.Fields(line)
			if len(fs) >= 2 {
				kb, _ := strconv.ParseInt(fs[1], 10, 64)
				rss = kb * 1024
			}
		}
	}
	return cpu, rss, nil
}

// procIO reads the read and write syscall counts of pid (-1 when unknown).
func procIO(pid int) (r, w int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return -1, -1
	}
	r, w = -1, -1
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "syscr":
			r = n
		case "syscw":
			w = n
		}
	}
	return r, w
}

// scrapeMetrics fetches a Prometheus text page and returns the unlabelled
// samples (nil when it cannot).
func scrapeMetrics(u string) map[string]float64 {
	if u == "" || u == "-" {
		return nil
	}
	resp, err := metricsClient.Get(u)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || strings.ContainsRune(line, '{') {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			out[f[0]] = v
		}
	}
	return out
}

// lockedWriter serialises writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// --- shared counters ---

// codeCounts is a mutex-guarded counter map (error codes, close codes,
// failure reasons); it is touched only on rare events.
type codeCounts struct {
	mu sync.Mutex
	m  map[string]int64
}

func (c *codeCounts) add(k string, n int64) {
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]int64{}
	}
	c.m[k] += n
	c.mu.Unlock()
}

func (c *codeCounts) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) == 0 {
		return nil
	}
	out := make(map[string]int64, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }
