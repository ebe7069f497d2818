package jsonpatch

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

var benchLimits = Limits{MaxOps: 100, MaxDepth: 32, MaxBytes: 2 << 20}

// largeDoc is a ~1 MiB document: 10,000 keys under the root, each holding
// a small object, plus a 10,000-element array.
func largeDoc(tb testing.TB) (Doc, []byte) {
	var sb strings.Builder
	sb.WriteString(`{`)
	for i := range 10000 {
		fmt.Fprintf(&sb, `"key%05d":{"name":"user %d","score":%d.5,"tags":["a","b","c"],"bio":"%s"},`,
			i, i, i, strings.Repeat("x", 20))
	}
	sb.WriteString(`"list":[`)
	for i := range 10000 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `%d`, i)
	}
	sb.WriteString(`]}`)
	raw := []byte(sb.String())
	d, err := NewDoc(raw, benchLimits)
	if err != nil {
		tb.Fatal(err)
	}
	return d, raw
}

func mustParse(tb testing.TB, s string) []Op {
	ops, err := ParseOps([]byte(s), benchLimits)
	if err != nil {
		tb.Fatal(err)
	}
	return ops
}

func BenchmarkApplySmallOpLargeDoc(b *testing.B) {
	d, _ := largeDoc(b)
	ops := mustParse(b, `[{"op":"replace","path":"/key05000/score","value":42}]`)
	b.ReportMetric(float64(d.Size()), "docbytes")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Apply(d, ops, benchLimits); err != nil {
			b.Fatal(err)
		}
	}
}

const batch10 = `[
	{"op":"test","path":"/key00001/name","value":"user 1"},
	{"op":"replace","path":"/key00001/score","value":99.5},
	{"op":"add","path":"/key00002/tags/-","value":"d"},
	{"op":"remove","path":"/key00003/tags/0"},
	{"op":"add","path":"/newkey","value":{"name":"new","score":1,"tags":[]}},
	{"op":"copy","from":"/key00004/tags","path":"/newkey/tags"},
	{"op":"move","from":"/key00005/bio","path":"/key00006/bio2"},
	{"op":"add","path":"/list/-","value":10000},
	{"op":"replace","path":"/list/5000","value":"<&>"},
	{"op":"remove","path":"/key09999"}
]`

func BenchmarkApplyBatch10(b *testing.B) {
	d, _ := largeDoc(b)
	ops := mustParse(b, batch10)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Apply(d, ops, benchLimits); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApplyChain applies the same kind of batch repeatedly to the
// evolving document, as a room does.
func BenchmarkApplyChain(b *testing.B) {
	d, _ := largeDoc(b)
	ops := mustParse(b, `[{"op":"add","path":"/list/-","value":1},{"op":"remove","path":"/list/0"},{"op":"replace","path":"/key07000/score","value":3}]`)
	b.ReportAllocs()
	for b.Loop() {
		nd, err := Apply(d, ops, benchLimits)
		if err != nil {
			b.Fatal(err)
		}
		d = nd
	}
}

func BenchmarkParseOps(b *testing.B) {
	raw := []byte(batch10)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseOps(raw, benchLimits); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNewDocLarge(b *testing.B) {
	_, raw := largeDoc(b)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewDoc(raw, benchLimits); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshalLargeDoc(b *testing.B) {
	d, _ := largeDoc(b)
	b.SetBytes(int64(d.Size()))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.MarshalJSON(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseOpsStrict parses with the limits rooms use on the wire
// (invalid text and duplicate member names refused).
func BenchmarkParseOpsStrict(b *testing.B) {
	raw := []byte(batch10)
	lim := benchLimits
	lim.RejectInvalidText = true
	lim.RejectDuplicateNames = true
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseOps(raw, lim); err != nil {
			b.Fatal(err)
		}
	}
}

// bigBatch is a 100-op batch of about 20 KiB with nested values and
// escapes, for the cost of the strict checks themselves.
func bigBatch() []byte {
	var sb strings.Builder
	sb.WriteByte('[')
	for i := range 100 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"op":"add","path":"/k%d","value":{"name":"user \"%d\" \u00e9\ud83d\ude00","tags":["a:b","c"],"pos":{"x":%d,"y":1.5},"bio":"%s"}}`,
			i, i, i, strings.Repeat("lorem ipsum ", 8))
	}
	sb.WriteByte(']')
	return []byte(sb.String())
}

// BenchmarkStrictScan compares, on the same bytes in the same run, the
// text check as it was before duplicate names were checked
// (checkTextBefore), the scan doing the text check alone, and the scan
// that also counts members; then ParseOps without and with
// RejectDuplicateNames.
func BenchmarkStrictScan(b *testing.B) {
	raw := bigBatch()
	b.Run("text-before", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			if err := checkTextBefore(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("text", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			if _, err := scanText(raw, true, false, nil, 0, 2); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("text+members", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		var buf [128]int
		for b.Loop() {
			if _, err := scanText(raw, true, true, buf[:0], 100, 2); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, strict := range []bool{false, true} {
		lim := Limits{MaxOps: 100, MaxDepth: 32, RejectInvalidText: true, RejectDuplicateNames: strict}
		b.Run(fmt.Sprintf("ParseOps/dups=%v", strict), func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseOps(raw, lim); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// checkTextBefore is CheckText as it was before scanText (UTF-8 check,
// then a jump from backslash to backslash), kept for BenchmarkStrictScan.
func checkTextBefore(raw []byte) error {
	if !utf8.Valid(raw) {
		return errorf(ErrInvalid, "text is not valid UTF-8")
	}
	for i := 0; i < len(raw); {
		j := bytes.IndexByte(raw[i:], '\\')
		if j < 0 {
			return nil
		}
		i += j
		if i+1 >= len(raw) {
			return nil
		}
		if raw[i+1] != 'u' {
			i += 2
			continue
		}
		c, ok := hex4(raw, i+2)
		if !ok {
			i += 2
			continue
		}
		i += 6
		switch {
		case c >= 0xDC00 && c <= 0xDFFF:
			return errorf(ErrInvalid, "unpaired surrogate")
		case c >= 0xD800 && c <= 0xDBFF:
			lo, ok := uint16(0), false
			if i+1 < len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
				lo, ok = hex4(raw, i+2)
			}
			if !ok || lo < 0xDC00 || lo > 0xDFFF {
				return errorf(ErrInvalid, "unpaired surrogate")
			}
			i += 6
		}
	}
	return nil
}
