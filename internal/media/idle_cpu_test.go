package media

import (
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestIdleCallsCPU (PARLEY_IDLE_CPU=1; docs/performance.md "Idle calls")
// measures the process CPU with PARLEY_IDLE_N (5,000) calls started and
// never joined, over 10 s after PARLEY_IDLE_SETTLE (4s), with two workers
// and CallIdleTimeout PARLEY_IDLE_TIMEOUT (default 1m; -1ns: never).
func TestIdleCallsCPU(t *testing.T) {
	if os.Getenv("PARLEY_IDLE_CPU") == "" {
		t.Skip("set PARLEY_IDLE_CPU=1 to measure")
	}
	n, settle := 5000, 4*time.Second
	if v := os.Getenv("PARLEY_IDLE_N"); v != "" {
		if _, err := fmt.Sscan(v, &n); err != nil {
			t.Fatal(err)
		}
	}
	if v := os.Getenv("PARLEY_IDLE_SETTLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		settle = d
	}
	idle, _ := time.ParseDuration(os.Getenv("PARLEY_IDLE_TIMEOUT"))
	s, _, _ := newTestSFU(t, Config{Workers: 2, CallIdleTimeout: idle})
	for i := 0; i < n; i++ {
		if _, _, err := s.StartCall(fmt.Sprintf("c%d", i), "u"); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(settle) // measuring a steady state, not synchronising
	cpu := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	c0, w0 := cpu(), time.Now()
	time.Sleep(10 * time.Second)
	c1, w1 := cpu(), time.Now()
	t.Logf("%d calls started, %d left: idle CPU %.2f %% of one core", n, s.Stats().Calls,
		100*float64(c1-c0)/float64(w1.Sub(w0)))
}
