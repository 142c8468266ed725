package pollers

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

func u(n uint64) *uint64 { return &n }

func TestProxyIDAndEnforcingHeaders(t *testing.T) {
	for in, ok := range map[string]bool{
		"sidecar~10.0.0.7~meter-0.grid~grid.svc.cluster.local": true,
		"a":                               true,
		"":                                false,
		"has space":                       false,
		"tab\there":                       false,
		"<script>":                        true, // printable: the console shows it as text
		"caf\u00e9":                       false,
		"nul\x00":                         false,
		strings.Repeat("x", MaxProxyID):   true,
		strings.Repeat("x", MaxProxyID+1): false,
	} {
		got, gotOK := ProxyID(in)
		assert.Equal(t, ok, gotOK, "%q", in)
		if ok {
			assert.Equal(t, in, got)
		} else {
			assert.Empty(t, got)
		}
	}
	for in, want := range map[string]*uint64{
		"0": u(0), "7": u(7), "18446744073709551615": u(18446744073709551615),
		"18446744073709551616": nil, "-1": nil, "+1": nil, "1e3": nil, "": nil, " 7": nil, "7 ": nil,
	} {
		got, ok := Enforcing(in)
		assert.Equal(t, want != nil, ok, "%q", in)
		assert.Equal(t, want, got, "%q", in)
	}
}

func TestTableRecordsLatestPerPoller(t *testing.T) {
	tb := New(10, 5)
	tb.Record(Poll{Channel: "prod", Identity: "spiffe://grid/guard", Proxy: "p1", Served: 3, Status: 200, Time: t0, Enforcing: u(2)})
	tb.Record(Poll{Channel: "prod", Identity: "spiffe://grid/guard", Proxy: "p2", Served: 3, Status: 304, Time: t0.Add(time.Second), Enforcing: u(3)})
	en := u(3)
	tb.Record(Poll{Channel: "prod", Identity: "spiffe://grid/guard", Proxy: "p1", Served: 4, Status: 200, Time: t0.Add(2 * time.Second), Enforcing: en})
	*en = 99 // the table keeps its own copy
	tb.Record(Poll{Channel: "staging", Identity: "token:ci", Served: 1, Status: 200, Time: t0.Add(3 * time.Second)})

	prod := tb.List("prod")
	require.Len(t, prod, 2)
	assert.Equal(t, Entry{Channel: "prod", Identity: "spiffe://grid/guard", Proxy: "p1", Enforcing: u(3), Served: 4, Status: 200,
		FirstSeen: t0, LastSeen: t0.Add(2 * time.Second), Polls: 2}, prod[0])
	assert.Equal(t, "p2", prod[1].Proxy)
	all := tb.List("")
	require.Len(t, all, 3)
	assert.Equal(t, "staging", all[0].Channel)
	assert.Nil(t, all[0].Enforcing)
	n, ev := tb.Stats()
	assert.Equal(t, 3, n)
	assert.Zero(t, ev)
}

func TestTableBoundsPerIdentityAndInTotal(t *testing.T) {
	tb := New(8, 3)
	// One identity sends many proxy ids: it only ever holds 3 entries.
	tb.Record(Poll{Channel: "prod", Identity: "honest", Proxy: "h", Time: t0})
	for i := range 100 {
		tb.Record(Poll{Channel: "prod", Identity: "flooder", Proxy: fmt.Sprint("p", i), Time: t0.Add(time.Duration(i+1) * time.Second)})
	}
	var flood int
	for _, e := range tb.List("") {
		if e.Identity == "flooder" {
			flood++
		}
	}
	assert.Equal(t, 3, flood)
	require.NotEmpty(t, tb.List(""))
	assert.Equal(t, "p99", tb.List("")[0].Proxy)
	assert.True(t, hasProxy(tb, "h"), "another identity's entry survives the flood")

	// Many identities: the table as a whole stays bounded, oldest out first.
	for i := range 20 {
		tb.Record(Poll{Channel: "prod", Identity: fmt.Sprint("id", i), Time: t0.Add(time.Hour + time.Duration(i)*time.Second)})
	}
	n, ev := tb.Stats()
	assert.Equal(t, 8, n)
	assert.Equal(t, uint64(97+16), ev, "4 entries fit, 16 identities push one out each")
	assert.False(t, hasProxy(tb, "h"))
	assert.Equal(t, "id19", tb.List("")[0].Identity)
}

func hasProxy(tb *Table, p string) bool {
	for _, e := range tb.List("") {
		if e.Proxy == p {
			return true
		}
	}
	return false
}

func TestTableConcurrentUse(t *testing.T) {
	tb := New(64, 16)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				tb.Record(Poll{Channel: "prod", Identity: fmt.Sprint("id", g), Proxy: fmt.Sprint(i % 20), Time: t0.Add(time.Duration(i)), Enforcing: u(uint64(i))})
				_ = tb.List("prod")
			}
		})
	}
	wg.Wait()
	n, _ := tb.Stats()
	assert.LessOrEqual(t, n, 64)
	assert.Len(t, tb.List(""), n)
}

// FuzzHeaders: any header value is either refused or accepted unchanged
// (proxy id) or as the decimal number it spells (revision).
func FuzzHeaders(f *testing.F) {
	f.Add("sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local")
	f.Add("18446744073709551616")
	f.Add("\x7f")
	f.Fuzz(func(t *testing.T, h string) {
		if p, ok := ProxyID(h); ok && (p != h || len(p) > MaxProxyID || strings.ContainsAny(p, " \t\r\n")) {
			t.Fatalf("ProxyID(%q) = %q", h, p)
		}
		if n, ok := Enforcing(h); ok && fmt.Sprint(*n) != strings.TrimLeft(h, "0") && !(*n == 0 && strings.Trim(h, "0") == "") {
			t.Fatalf("Enforcing(%q) = %d", h, *n)
		}
	})
}
