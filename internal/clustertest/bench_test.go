package clustertest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleyhq/parley/internal/bench"
)

// The cluster measurements of docs/performance.md ("Cluster"). They are
// measurements, not checks: skipped unless PARLEY_CLUSTER_BENCH=1, and
// they print their figures (lines starting with "RESULT") instead of
// asserting targets. Run them one at a time on a quiet machine:
//
//	export PARLEY_TEST_POSTGRES_URL='postgres://postgres@127.0.0.1:5432/test?sslmode=disable'
//	PARLEY_CLUSTER_BENCH=1 go test -count=1 -timeout 30m -v -run 'TestClusterBench' ./internal/clustertest/
//
// Settings (environment):
//
//	PARLEY_CLUSTER_BENCH_PIN       "SERVER_CPUS:CLIENT_CPUS" for taskset (default "0:1" with ≥ 2 CPUs; "" = no pinning):
//	                               the nodes and this test process (which runs the embedded NATS
//	                               server) on SERVER_CPUS, the `parley bench` client on CLIENT_CPUS
//	PARLEY_CLUSTER_BENCH_SUBS      fan-out subscribers (default 300)
//	PARLEY_CLUSTER_BENCH_DURATION  fan-out run length (default 20s)
//	PARLEY_CLUSTER_BENCH_RATE      fixed-rate fan-out, events/s (default 100)
//	PARLEY_CLUSTER_BENCH_WINDOW    saturation fan-out in-flight window (default 200)
//	PARLEY_CLUSTER_BENCH_ROUNDS    failover rounds per mode (default 5)
//	PARLEY_CLUSTER_BENCH_EVENTS    broadcasts per placement in the NATS cost run (default 1000)

func benchEnabled(t *testing.T) {
	t.Helper()
	if os.Getenv("PARLEY_CLUSTER_BENCH") != "1" {
		t.Skip("a measurement: set PARLEY_CLUSTER_BENCH=1 to run it (see bench_test.go)")
	}
	PostgresURL(t)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// pinning returns the taskset CPU lists for the servers and the client
// ("" = do not pin).
func pinning() (server, client string) {
	v, set := os.LookupEnv("PARLEY_CLUSTER_BENCH_PIN")
	if !set {
		if runtime.NumCPU() < 2 {
			return "", ""
		}
		v = "0:1"
	}
	server, client, _ = strings.Cut(v, ":")
	return server, client
}

// pin sets the CPU affinity of every thread of pid (taskset -a -p).
func pin(t *testing.T, pid int, cpus string) {
	t.Helper()
	if cpus == "" || pid == 0 {
		return
	}
	if out, err := exec.Command("taskset", "-a", "-p", "-c", cpus, strconv.Itoa(pid)).CombinedOutput(); err != nil {
		t.Fatalf("taskset -a -p -c %s %d: %v %s", cpus, pid, err, out)
	}
}

// busyTicks is the machine's busy CPU time (clock ticks) from /proc/stat.
func busyTicks() int64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var sum int64
	for i, name := range []string{"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"} {
		if i+1 >= len(f) || name == "idle" || name == "iowait" {
			continue
		}
		v, _ := strconv.ParseInt(f[i+1], 10, 64)
		sum += v
	}
	return sum
}

// procTicks is utime+stime of pid in clock ticks (0 when gone).
func procTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

// ------------------------------------------------------------ fan-out --

// TestClusterBenchFanout runs `parley bench fanout` (one room, S
// subscribers and one publisher, 100-byte events) against a standalone
// server (local broker, SQLite), a one-node cluster and a three-node
// cluster (clients round-robin over the nodes; the publisher, member 0,
// joins first on n1, which therefore owns the room), at saturation
// (--rate 0, --window W) and at a fixed rate; same workload everywhere.
func TestClusterBenchFanout(t *testing.T) {
	benchEnabled(t)
	serverCPUs, clientCPUs := pinning()
	pin(t, os.Getpid(), serverCPUs) // the embedded NATS server runs in this process
	subs := envInt("PARLEY_CLUSTER_BENCH_SUBS", 300)
	dur := envDuration("PARLEY_CLUSTER_BENCH_DURATION", 20*time.Second)
	rate := envInt("PARLEY_CLUSTER_BENCH_RATE", 100)
	window := envInt("PARLEY_CLUSTER_BENCH_WINDOW", 200)
	t.Logf("pinning: servers and NATS on CPUs %q, client on %q; load average %s", serverCPUs, clientCPUs, loadavg())

	type config struct {
		name  string
		nodes []string
		env   map[string]string
	}
	configs := []config{
		{"standalone", []string{"solo"}, map[string]string{"PARLEY_BROKER": "local", "PARLEY_STORE": "sqlite"}},
		{"cluster-1", []string{"n1"}, nil},
		{"cluster-3", []string{"n1", "n2", "n3"}, nil},
	}
	workloads := []struct {
		name string
		args []string
	}{
		{"saturation", []string{"--rate", "0", "--window", strconv.Itoa(window)}},
		{"fixed-rate", []string{"--rate", strconv.Itoa(rate)}},
	}
	var table []string
	for _, cf := range configs {
		for _, wl := range workloads {
			t.Run(cf.name+"/"+wl.name, func(t *testing.T) {
				c := New(t, Options{Nodes: []string{}})
				var nodes []*Node
				for _, id := range cf.nodes {
					nodes = append(nodes, c.AddNode(id, cf.env))
				}
				StartAll(t, nodes...)
				var urls, pids []string
				for _, n := range nodes {
					pin(t, n.PID(), serverCPUs)
					urls = append(urls, n.WSURL())
					pids = append(pids, strconv.Itoa(n.PID()))
				}
				args := append([]string{"bench", "fanout", "--url", strings.Join(urls, ","), "--server-pid", strings.Join(pids, ","),
					"--subscribers", strconv.Itoa(subs), "--publishers", "1", "--size", "100", "--duration", dur.String(),
					// The publisher joins alone first everywhere (with several
					// URLs the bench does it anyway): concurrent first joins on
					// one node hit TestClusterConcurrentFirstJoins's bug.
					"--first-join-alone"}, wl.args...)
				t.Logf("command: PARLEY_AUTH_SECRET=%s %s %s", Secret, tasksetPrefix(clientCPUs), "parley "+strings.Join(args, " "))
				args = append(args, "--json", "--quiet", "--secret", Secret)
				r, cpu := runBench(t, clientCPUs, args, nodes)
				lat := r.Latency
				line := fmt.Sprintf("%-10s %-10s deliveries/s %9.0f  p50 %7.2f ms  p99 %7.2f ms  drops %d undelivered %d errors %d  nodes %.2f cores (%.0f ns/delivery)  NATS %.2f cores  client %.2f cores  other %.2f cores  loadavg %s",
					cf.name, wl.name, r.DeliveredPerSec, lat.P50/1000, lat.P99/1000, r.Drops, r.Undelivered, r.Errors,
					cores(r.Server), nsPerDelivery(r.Server), cpu.nats/cpu.wall, r.ClientCPUSeconds/cpu.wall, cpu.other/cpu.wall, loadavg())
				for _, n := range r.Nodes {
					if n.Latency != nil {
						line += fmt.Sprintf("\n    %s: %d clients, p50 %.2f ms p99 %.2f ms, %.2f cores", n.URL, n.Clients, n.Latency.P50/1000, n.Latency.P99/1000, cores(n.Server))
					}
				}
				t.Logf("RESULT %s", line)
				table = append(table, line)
			})
		}
	}
	t.Logf("RESULT summary (%d subscribers, 1 publisher, 100-byte events, %v per run):\n%s", subs, dur, strings.Join(table, "\n"))
}

func cores(u *bench.ServerUsage) float64 {
	if u == nil {
		return 0
	}
	return u.CPUCores
}

func nsPerDelivery(u *bench.ServerUsage) float64 {
	if u == nil {
		return 0
	}
	return u.CPUNsPerDelivery
}

func tasksetPrefix(cpus string) string {
	if cpus == "" {
		return ""
	}
	return "taskset -c " + cpus
}

// cpuUse is CPU time (s) over a bench run: wall time, this test process
// (the embedded NATS server, nearly all of it) and everything that is
// neither the nodes, this process nor the client.
type cpuUse struct{ wall, nats, other float64 }

// runBench runs the parley binary with args (pinned to cpus) and parses
// its JSON result.
func runBench(t *testing.T, cpus string, args []string, nodes []*Node) (r bench.Result, use cpuUse) {
	t.Helper()
	name, full := binaryPath, args
	if cpus != "" {
		name, full = "taskset", append([]string{"-c", cpus, binaryPath}, args...)
	}
	cmd := exec.Command(name, full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	ours := func() int64 {
		var v int64
		for _, n := range nodes {
			v += procTicks(n.PID())
		}
		return v
	}
	b0, o0, s0, t0 := busyTicks(), ours(), procTicks(os.Getpid()), time.Now()
	err := cmd.Run()
	b1, o1, s1 := busyTicks(), ours(), procTicks(os.Getpid())
	use.wall = time.Since(t0).Seconds()
	if err != nil {
		t.Fatalf("parley bench: %v\nstdout: %s\nstderr: %s", err, out.String(), errb.String())
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("parley bench output %q: %v", out.String(), err)
	}
	use.nats = float64(s1-s0) / 100
	use.other = float64(b1-b0-(o1-o0)-(s1-s0))/100 - r.ClientCPUSeconds
	return r, use
}

// -------------------------------------------------------- NATS cost --

// TestClusterBenchNATS measures what a room event costs in NATS, per
// placement of the room's clients and per sender: publications and
// deliveries on the room's subject (exact, per-subscription counters as in
// TestClusterRoomEventNATSDeliveries), node messages (requests to the
// owner and its answers, on <cluster>.node.<id>.rooms), and the server's
// total Varz InMsgs/OutMsgs per event with the background (heartbeats,
// KV watches; measured over a quiet period just before) and the test's
// monitor subscriber subtracted.
func TestClusterBenchNATS(t *testing.T) {
	benchEnabled(t)
	serverCPUs, _ := pinning()
	pin(t, os.Getpid(), serverCPUs)
	K := envInt("PARLEY_CLUSTER_BENCH_EVENTS", 1000)
	c := New(t, Options{})
	for _, n := range c.Nodes {
		pin(t, n.PID(), serverCPUs)
	}
	n1, n2, n3 := nodes3(c)
	mon := c.NATS.StartMonitor(t, c.Name+".room.>")
	t.Logf("3 nodes, heartbeat 200ms; %d broadcasts per case; load average %s", K, loadavg())

	var table []string
	measure := func(name, room string, sender *Client, receivers []*Client) {
		t.Helper()
		subj := RoomSubject(c.Name, room)
		// Background: a quiet period as long as the measurement will
		// roughly be (at least 2 s).
		q0 := quietCounters(t, c, mon, subj)
		time.Sleep(2 * time.Second) // the background sample period
		q1 := c.NATS.Counters(t)
		bgSecs := q1.At.Sub(q0.At).Seconds()
		bgIn := float64(q1.InMsgs-q0.InMsgs) / bgSecs
		bgOut := float64(q1.OutMsgs-q0.OutMsgs-(q1.Conns[MonitorName].OutMsgs-q0.Conns[MonitorName].OutMsgs)) / bgSecs

		before := c.NATS.Counters(t)
		pubs0 := mon.Count(subj)
		counts0 := map[*Client]int{}
		for _, r := range receivers {
			counts0[r] = count(r, OfType(TypeEvent))
		}
		var ids []string
		awaited := 0
		await := func(upTo int) {
			for ; awaited < upTo; awaited++ {
				if f := sender.Await(ids[awaited], soon); f.Type != TypeAck {
					t.Fatalf("%s: broadcast answered %s", name, f)
				}
			}
		}
		for i := 0; i < K; i++ {
			ids = append(ids, sender.Request(TypeBroadcast, map[string]any{"room_id": room, "event": map[string]any{"i": i}}))
			await(len(ids) - 100) // at most 100 in flight
		}
		await(len(ids))
		for _, r := range receivers {
			if r == sender {
				continue
			}
			want := counts0[r] + K
			if err := r.WaitUntilE(soon, fmt.Sprintf("%d room:event", want), func(fs []Frame) bool {
				n := 0
				for _, f := range fs {
					if f.Type == TypeEvent {
						n++
					}
				}
				return n >= want
			}); err != nil {
				t.Fatal(err)
			}
		}
		after := quietCounters(t, c, mon, subj)
		secs := after.At.Sub(before.At).Seconds()
		pubs := mon.Count(subj) - pubs0
		var deliv int64
		for _, v := range c.Deliveries(t, before, after, subj) {
			deliv += v
		}
		var nodeMsgs int64
		for _, n := range c.Nodes {
			nodeMsgs += c.Deliveries(t, before, after, c.Name+".node."+n.ID+".rooms")[n.ID]
		}
		monOut := after.Conns[MonitorName].OutMsgs - before.Conns[MonitorName].OutMsgs
		in := float64(after.InMsgs-before.InMsgs) - bgIn*secs
		out := float64(after.OutMsgs-before.OutMsgs-monOut) - bgOut*secs
		line := fmt.Sprintf("%-52s room subject: %.3f publications, %.3f deliveries per event; node messages %.3f per event; all subjects (Varz, background %.0f in/s %.0f out/s subtracted): %.2f in, %.2f out per event",
			name, float64(pubs)/float64(K), float64(deliv)/float64(K), float64(nodeMsgs)/float64(K), bgIn, bgOut, in/float64(K), out/float64(K))
		t.Logf("RESULT %s", line)
		table = append(table, line)
	}

	room := "cost"
	a := n1.Dial(t, "A@n1", "alice", AllRooms)
	a.Join(room, nil)
	b := n2.Dial(t, "B@n2", "bob", AllRooms)
	b.Join(room, nil)
	n3.Dial(t, "Z@n3", "zed", AllRooms).Join("elsewhere", nil)
	if owner, _, _ := c.RoomOwner(t, room); owner != "n1" {
		t.Fatalf("owner %q, want n1", owner)
	}
	waitSubscribed(t, c, RoomSubject(c.Name, room), []string{"n1", "n2"})
	measure("clients on n1 (owner), n2; sender on n1", room, a, []*Client{a, b})
	measure("clients on n1 (owner), n2; sender on n2", room, b, []*Client{a, b})
	cc := n3.Dial(t, "C@n3", "carol", AllRooms)
	cc.Join(room, nil)
	waitSubscribed(t, c, RoomSubject(c.Name, room), []string{"n1", "n2", "n3"})
	measure("clients on n1 (owner), n2, n3; sender on n1", room, a, []*Client{a, b, cc})
	measure("clients on n1 (owner), n2, n3; sender on n2", room, b, []*Client{a, b, cc})
	solo := "cost-solo"
	b2 := n2.Dial(t, "B2@n2", "bea", AllRooms)
	b.Join(solo, nil)
	b2.Join(solo, nil)
	measure("clients on n2 only (owner); sender on n2", solo, b, []*Client{b, b2})
	t.Logf("RESULT summary:\n%s", strings.Join(table, "\n"))
}

// ----------------------------------------------------------- failover --

// TestClusterBenchFailover measures how long a room is without an owner
// when its owner goes away. Each round: A joins a new room on n1 first (n1
// owns it: checked on the lease), then B on n2 and C on n3; C writes
// continuously (one batch in flight, a retry after 1 s without an answer,
// as a client would); the owner is then killed (kill -9) or drained
// (SIGTERM). Measured from the signal:
//
//   - state: until B gets its fresh room:state (the room has a new owner
//     and B's node resynced with it);
//   - write: until B's first write sent after that room:state is
//     acknowledged (it is sent at once);
//   - left: until B hears room:left for A;
//   - continuous: C's longest wait between two acknowledgements, from its
//     last one before the signal to half a second after B's room:state
//     (its writes meanwhile go unanswered when the owner was killed, and
//     are retried after 1 s).
//
// Modes: kill -9 with the test settings (heartbeat 200ms, dead after
// 1.5s) and with the defaults (2s, 10s); SIGTERM with the test settings
// and with the defaults, A closing its socket as soon as it gets the
// close frame (as browsers do); and SIGTERM with A keeping its socket open
// (the harness's client otherwise does, until the test ends). n1 is
// restarted between rounds.
func TestClusterBenchFailover(t *testing.T) {
	benchEnabled(t)
	serverCPUs, _ := pinning()
	pin(t, os.Getpid(), serverCPUs)
	rounds := envInt("PARLEY_CLUSTER_BENCH_ROUNDS", 5)
	fast := map[string]string{"PARLEY_NODE_HEARTBEAT": "200ms", "PARLEY_NODE_DEAD_AFTER": "1500ms"}
	defaults := map[string]string{"PARLEY_NODE_HEARTBEAT": "2s", "PARLEY_NODE_DEAD_AFTER": "10s"}
	modes := []struct {
		name   string
		env    map[string]string
		drain  bool
		linger bool // A keeps its TCP socket open after the close handshake
	}{
		{"kill-9 heartbeat 200ms dead-after 1.5s", fast, false, false},
		{"kill-9 defaults (heartbeat 2s dead-after 10s)", defaults, false, false},
		{"SIGTERM heartbeat 200ms dead-after 1.5s", fast, true, false},
		{"SIGTERM defaults (heartbeat 2s dead-after 10s)", defaults, true, false},
		{"SIGTERM defaults, A does not close its socket", defaults, true, true},
	}
	var table []string
	for _, md := range modes {
		t.Run(strings.NewReplacer(" ", "_", "(", "", ")", "").Replace(md.name), func(t *testing.T) {
			c := New(t, Options{Env: md.env})
			for _, n := range c.Nodes {
				pin(t, n.PID(), serverCPUs)
			}
			var st, wr, left, cont []time.Duration
			for i := 0; i < rounds; i++ {
				r := failoverRound(t, c, fmt.Sprintf("fo-%d", i), md.drain, md.linger)
				t.Logf("round %d: state %v, write %v, left %v, continuous writer's longest wait %v (its refusals: %s); new owner %s",
					i, r.state.Round(time.Millisecond), r.write.Round(time.Millisecond), r.left.Round(time.Millisecond), r.cont.Round(time.Millisecond), r.refusals, r.owner)
				st, wr, left, cont = append(st, r.state), append(wr, r.write), append(left, r.left), append(cont, r.cont)
				n1 := c.Node("n1")
				if _, ok := n1.WaitExit(30 * time.Second); !ok {
					t.Fatal("n1 did not exit")
				}
				n1.Restart(t)
				pin(t, n1.PID(), serverCPUs)
			}
			line := fmt.Sprintf("%-48s (%d rounds, median [min–max])  room:state %s  next write acked %s  room:left %s  continuous writer's longest wait %s",
				md.name, rounds, spread(st), spread(wr), spread(left), spread(cont))
			t.Logf("RESULT %s; load average %s", line, loadavg())
			table = append(table, line)
		})
	}
	t.Logf("RESULT summary:\n%s", strings.Join(table, "\n"))
}

type roundResult struct {
	state, write, left, cont time.Duration
	owner                    string
	refusals                 string // C's unanswered or refused writes, by error code
}

func failoverRound(t *testing.T, c *Cluster, room string, drain, linger bool) roundResult {
	t.Helper()
	n1, n2, n3 := nodes3(c)
	a := n1.Dial(t, "A@n1", "alice", AllRooms)
	if !linger {
		// As a browser does: once the server's close frame is in (the
		// client's reader has ended and gorilla has answered it), close
		// the TCP connection. Without this the node's gateway waits up to
		// 2 s for the client's EOF before the connection, and so the
		// drain, goes on (gateway halfClose).
		go func() { <-a.Closed(); _ = a.ws.Close() }()
	}
	a.Join(room, nil)
	b := n2.Dial(t, "B@n2", "bob", AllRooms)
	b.Join(room, nil)
	cc := n3.Dial(t, "C@n3", "carol", AllRooms)
	cc.Join(room, nil)
	if owner, _, ok := c.RoomOwner(t, room); !ok || owner != "n1" {
		t.Fatalf("%s: owner %q (held %v), want n1 (A@n1 joined first)", room, owner, ok)
	}
	type sentAck struct{ sent, at time.Time }
	var mu sync.Mutex
	var acks []sentAck
	refusals := map[string]int{}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			sent := time.Now()
			f, err := cc.PatchE(room, fmt.Sprintf(`[{"op":"add","path":"/c%d","value":%d}]`, i, i), time.Second)
			if err == nil && f.Type == TypeStorage {
				mu.Lock()
				acks = append(acks, sentAck{sent, f.At})
				mu.Unlock()
			} else {
				mu.Lock()
				if err != nil {
					refusals["no answer within 1s"]++
				} else {
					refusals[f.ErrorCode()]++
				}
				mu.Unlock()
				if err == nil {
					time.Sleep(50 * time.Millisecond) // a refusal: back off a little
				}
			}
		}
	}()
	defer func() { close(stop); <-done }()
	waitFor := func(what string, within time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(within)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no %s within %v", room, what, within)
			}
			time.Sleep(10 * time.Millisecond) // polling interval
		}
	}
	waitFor("5 acknowledgements of C before the fault", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acks) >= 5
	})

	t0 := time.Now()
	if drain {
		n1.Term(t)
	} else {
		n1.Kill()
	}
	fresh := func(f Frame) bool { return f.Type == TypeState && f.ID == "" && f.At.After(t0) }
	f := b.WaitFor(60*time.Second, "a fresh room:state after the fault", fresh)
	var r roundResult
	r.state = f.At.Sub(t0)
	for {
		w, err := b.PatchE(room, `[{"op":"add","path":"/b","value":1}]`, 30*time.Second)
		if err != nil {
			t.Fatalf("%s: B's write after its fresh room:state: %v", room, err)
		}
		if w.Type == TypeStorage {
			r.write = w.At.Sub(t0)
			break
		}
		t.Logf("%s: B's write after its fresh room:state refused: %s; retrying", room, w)
		time.Sleep(50 * time.Millisecond) // back off before the retry
	}
	l := b.WaitFor(60*time.Second, "room:left for A", About(TypeLeft, a.ConnID))
	r.left = l.At.Sub(t0)
	// C's longest wait between two acknowledgements, from its last one
	// before the fault until half a second after B's fresh room:state.
	until := t0.Add(r.state + 500*time.Millisecond)
	waitFor("C's acknowledgements after the fault", 60*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acks) > 0 && acks[len(acks)-1].at.After(until)
	})
	mu.Lock()
	var prev time.Time
	for _, a := range acks {
		if a.at.After(t0) && !prev.IsZero() {
			r.cont = max(r.cont, a.at.Sub(prev))
		}
		if a.at.After(until) {
			break
		}
		prev = a.at
	}
	mu.Unlock()
	r.owner, _, _ = c.RoomOwner(t, room)
	mu.Lock()
	r.refusals = fmt.Sprint(refusals)
	mu.Unlock()
	b.Close()
	cc.Close()
	return r
}

// spread formats the median and range of ds.
func spread(ds []time.Duration) string {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return "-"
	}
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	f := func(d time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()) }
	return fmt.Sprintf("%s s [%s–%s]", f(med), f(s[0]), f(s[len(s)-1]))
}

// ------------------------------------------------------------- serve --

// TestClusterBenchServe starts a cluster for runs by hand and keeps it up
// until the file it writes is removed (or PARLEY_CLUSTER_BENCH_HOLD, 30m):
//
//	PARLEY_CLUSTER_BENCH=1 PARLEY_CLUSTER_BENCH_NODES=3 go test -count=1 -timeout 0 -v -run TestClusterBenchServe ./internal/clustertest/ &
//	cat /tmp/parley-cluster.env     # PARLEY_BENCH_URLS=ws://...,ws://...  PARLEY_BENCH_PIDS=...,...  PARLEY_AUTH_SECRET=...
//	. /tmp/parley-cluster.env; taskset -c 1 parley bench fanout --url $PARLEY_BENCH_URLS --server-pid $PARLEY_BENCH_PIDS ...
//	rm /tmp/parley-cluster.env      # stops the cluster
//
// The nodes and NATS are pinned like the other measurements. The file is
// PARLEY_CLUSTER_BENCH_SERVE_FILE (default /tmp/parley-cluster.env).
func TestClusterBenchServe(t *testing.T) {
	benchEnabled(t)
	serverCPUs, _ := pinning()
	pin(t, os.Getpid(), serverCPUs)
	var ids []string
	for i := 1; i <= envInt("PARLEY_CLUSTER_BENCH_NODES", 3); i++ {
		ids = append(ids, fmt.Sprintf("n%d", i))
	}
	c := New(t, Options{Nodes: ids})
	var urls, pids []string
	for _, n := range c.Nodes {
		pin(t, n.PID(), serverCPUs)
		urls = append(urls, n.WSURL())
		pids = append(pids, strconv.Itoa(n.PID()))
	}
	file := os.Getenv("PARLEY_CLUSTER_BENCH_SERVE_FILE")
	if file == "" {
		file = "/tmp/parley-cluster.env"
	}
	env := fmt.Sprintf("export PARLEY_BENCH_URLS=%s PARLEY_BENCH_PIDS=%s PARLEY_AUTH_SECRET=%s PARLEY_BENCH_NATS=%s PARLEY_BENCH_CLUSTER=%s\n",
		strings.Join(urls, ","), strings.Join(pids, ","), Secret, c.NATS.URL(), c.Name)
	if err := os.WriteFile(file, []byte(env), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster up; %s: %s(remove the file to stop)", file, env)
	deadline := time.Now().Add(envDuration("PARLEY_CLUSTER_BENCH_HOLD", 30*time.Minute))
	for time.Now().Before(deadline) {
		if _, err := os.Stat(file); err != nil {
			break
		}
		time.Sleep(200 * time.Millisecond) // polling for the file's removal
	}
	for _, n := range c.Nodes {
		t.Logf("%s log: %s", n.ID, n.LogPath)
	}
	_ = os.Remove(file)
}
