package bench

import (
	"math"
	"math/bits"
	"time"
)

// Hist is a log-linear latency histogram in the manner of HdrHistogram:
// values (nanoseconds) below 128 are exact, above that every power of two is
// split into 64 buckets, so a recorded value is off by less than 1/64
// (1.6 %). Recording is one array increment; a Hist is not safe for
// concurrent use: keep one per goroutine and Merge at the end.
type Hist struct {
	Counts []uint64 `json:"-"` // sent between processes as sparseHist
	N      uint64   `json:"n"`
	Sum    float64  `json:"sum"`
	Min    int64    `json:"min"`
	Max    int64    `json:"max"`
}

const (
	histSubBits  = 7                        // 128 linear values, then 64 per octave
	histMaxShift = 40                       // values up to ~2^47 ns (39 h) are kept
	histBuckets  = (histMaxShift+1)*64 + 64 // index of the largest value + 1
)

// NewHist returns an empty histogram.
func NewHist() *Hist { return &Hist{Counts: make([]uint64, histBuckets), Min: math.MaxInt64} }

func histIndex(v int64) int {
	if v < 0 {
		v = 0
	}
	if v < 1<<histSubBits {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - histSubBits
	if shift > histMaxShift {
		return histBuckets - 1
	}
	return shift*64 + int(v>>uint(shift))
}

// histValue is the middle of bucket i.
func histValue(i int) int64 {
	if i < 1<<histSubBits {
		return int64(i)
	}
	shift := i/64 - 1
	sub := int64(i - shift*64)
	return sub<<uint(shift) + (int64(1)<<uint(shift))/2
}

// Record adds one value in nanoseconds.
func (h *Hist) Record(v int64) {
	if v < 0 {
		v = 0
	}
	h.Counts[histIndex(v)]++
	h.N++
	h.Sum += float64(v)
	if v < h.Min {
		h.Min = v
	}
	if v > h.Max {
		h.Max = v
	}
}

// RecordDuration adds one duration.
func (h *Hist) RecordDuration(d time.Duration) { h.Record(int64(d)) }

// Merge adds o's counts to h.
func (h *Hist) Merge(o *Hist) {
	if o == nil || o.N == 0 {
		return
	}
	for i, c := range o.Counts {
		h.Counts[i] += c
	}
	h.N += o.N
	h.Sum += o.Sum
	if o.Min < h.Min {
		h.Min = o.Min
	}
	if o.Max > h.Max {
		h.Max = o.Max
	}
}

// Quantile returns the value at quantile q (0..1), in nanoseconds.
func (h *Hist) Quantile(q float64) int64 {
	if h.N == 0 {
		return 0
	}
	if q >= 1 {
		return h.Max
	}
	rank := uint64(math.Ceil(q * float64(h.N)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.Counts {
		seen += c
		if seen >= rank {
			v := histValue(i)
			if v > h.Max {
				v = h.Max
			}
			if v < h.Min {
				v = h.Min
			}
			return v
		}
	}
	return h.Max
}

// Summary is the JSON form of a latency distribution, in microseconds.
type Summary struct {
	Count uint64  `json:"count"`
	Mean  float64 `json:"mean_us"`
	Min   float64 `json:"min_us"`
	P50   float64 `json:"p50_us"`
	P90   float64 `json:"p90_us"`
	P99   float64 `json:"p99_us"`
	P999  float64 `json:"p999_us"`
	Max   float64 `json:"max_us"`
}

// Summarize computes the usual percentiles.
func (h *Hist) Summarize() *Summary {
	if h == nil || h.N == 0 {
		return &Summary{}
	}
	us := func(ns int64) float64 { return math.Round(float64(ns)/10) / 100 }
	return &Summary{
		Count: h.N, Mean: math.Round(h.Sum/float64(h.N)/10) / 100, Min: us(h.Min),
		P50: us(h.Quantile(0.50)), P90: us(h.Quantile(0.90)), P99: us(h.Quantile(0.99)),
		P999: us(h.Quantile(0.999)), Max: us(h.Max),
	}
}

// sparse is the compact wire form used between worker processes.
type sparseHist struct {
	Idx   []int    `json:"i"`
	Count []uint64 `json:"c"`
	N     uint64   `json:"n"`
	Sum   float64  `json:"s"`
	Min   int64    `json:"min"`
	Max   int64    `json:"max"`
}

func (h *Hist) sparse() *sparseHist {
	s := &sparseHist{N: h.N, Sum: h.Sum, Min: h.Min, Max: h.Max}
	for i, c := range h.Counts {
		if c != 0 {
			s.Idx = append(s.Idx, i)
			s.Count = append(s.Count, c)
		}
	}
	return s
}

func (s *sparseHist) hist() *Hist {
	h := NewHist()
	if s == nil {
		return h
	}
	for k, i := range s.Idx {
		if i >= 0 && i < len(h.Counts) && k < len(s.Count) {
			h.Counts[i] += s.Count[k]
		}
	}
	h.N, h.Sum, h.Min, h.Max = s.N, s.Sum, s.Min, s.Max
	return h
}
