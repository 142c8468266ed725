package server

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/meshguard/meshguard/distributor/decisionlog"
	"github.com/meshguard/meshguard/distributor/registry"
)

var (
	registryBenchDevices   = flag.Int("registry-bench-devices", 100_000, "devices behind BenchmarkConsoleRegistryPageLoad")
	registryBenchWorkloads = flag.Int("registry-bench-workloads", 2_000, "workloads behind BenchmarkConsoleRegistryPageLoad")
)

// BenchmarkConsoleRegistryPageLoad loads the console's registry pages over
// HTTP from a real distributor with -registry-bench-devices devices (nine
// in ten of organisation grid-op, the rest metering) and
// -registry-bench-workloads workloads, each with its creation record in
// the decision log (one registry record per entry, indexed and verified by
// the server as at any start). One op is one page load: the status and the
// page's registry request, one after another. It reports p50 and p99 per
// page.
//
// The entries are written as the filesystem store's files before the
// server starts (OpenFS loads and checks them; writing them through Put
// would fsync 200k times).
func BenchmarkConsoleRegistryPageLoad(b *testing.B) {
	nd, nw := *registryBenchDevices, *registryBenchWorkloads
	cfg := testConfig(b)
	cfg.Registry.Organisations = []registry.Organisation{
		{Name: "grid-op", Members: []string{"spiffe://grid.example/ns/dso/*"}, TrustDomains: []string{"grid.example"}, DevicePrefixes: []string{"inv-"}},
		{Name: "metering", Members: []string{"spiffe://meter.example/ns/ops/*"}, SPIFFEPrefixes: []string{"spiffe://meter.example/ns/metering"}, DevicePrefixes: []string{"mtr-"}},
	}
	start := time.Now()
	l, err := decisionlog.Open(filepath.Join(cfg.Data, "decisions"), decisionlog.Options{Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	base := time.Now().UTC().Add(-24 * time.Hour)
	var batch []decisionlog.Record
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if _, err := l.Append(batch); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
	}
	put := func(rec registry.Record) {
		b, err := json.Marshal(rec)
		if err == nil {
			dir := filepath.Join(cfg.Data, "registry", string(rec.Kind))
			if err = os.MkdirAll(dir, 0o700); err == nil {
				sum := sha256.Sum256([]byte(rec.ID))
				err = os.WriteFile(filepath.Join(dir, hex.EncodeToString(sum[:20])+".json"), b, 0o600)
			}
		}
		if err != nil {
			panic(err)
		}
		r, err := registryRecord(registry.Change{Op: registry.OpCreate, Kind: rec.Kind, ID: rec.ID, Org: rec.Organisation, Who: "token:" + rec.Organisation, After: &rec}, rec.Created)
		if err != nil {
			panic(err)
		}
		batch = append(batch, r)
		if len(batch) == 1000 {
			flush()
		}
	}
	var keys [16]json.RawMessage
	for i := range keys {
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		keys[i] = fmt.Appendf(nil, `{"kty":"OKP","crv":"Ed25519","x":%q}`, base64.RawURLEncoding.EncodeToString(pub))
	}
	classes := []string{"inverter", "battery", "meter"}
	sites := []string{"north", "south", "east", "west"}
	for i := range nd {
		id, org := fmt.Sprintf("inv-%06d", i), "grid-op"
		if i%10 == 9 {
			id, org = fmt.Sprintf("mtr-%06d", i), "metering"
		}
		d := registry.Device{ID: id, Class: classes[i%3], Vendor: fmt.Sprintf("vendor-%d", i%7), Organisation: org, Firmware: ">=3.1.0 <5.0.0",
			Credential: registry.Credential{JWK: keys[i%len(keys)]},
			Readers:    []string{"spiffe://grid.example/ns/der/*"}, Writers: []string{"spiffe://grid.example/ns/der/sa/controller"},
			WriteLimit: &registry.WriteLimit{PerSecond: 2, Burst: 5},
			Labels:     map[string]string{"site": sites[i%4], "feeder": fmt.Sprintf("f-%02d", i%100)}}
		if i == nd-2 {
			d.Labels["rare"] = "1"
		}
		spec, err := json.Marshal(d)
		if err != nil {
			b.Fatal(err)
		}
		at := base.Add(time.Duration(i) * time.Millisecond)
		put(registry.Record{Kind: registry.KindDevice, ID: id, Organisation: org, Generation: 1, Created: at, Updated: at, Spec: spec})
	}
	for i := range nw {
		w := registry.Workload{SPIFFEID: fmt.Sprintf("spiffe://grid.example/ns/der/sa/w-%05d", i), Organisation: "grid-op",
			Versions: &registry.Versions{Range: ">=1.2.0"}, Labels: map[string]string{"team": fmt.Sprintf("t-%d", i%20)}}
		spec, err := json.Marshal(w)
		if err != nil {
			b.Fatal(err)
		}
		at := base.Add(time.Duration(nd+i) * time.Millisecond)
		put(registry.Record{Kind: registry.KindWorkload, ID: w.SPIFFEID, Organisation: "grid-op", Generation: 1, Created: at, Updated: at, Spec: spec})
	}
	flush()
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	wrote := time.Since(start)
	start = time.Now()
	ts := startServer(b, cfg, Options{})
	loaded := time.Since(start)
	for ts.Search().Integrity().Verified < uint64(nd+nw) {
		time.Sleep(50 * time.Millisecond)
		if time.Since(start) > 10*time.Minute {
			b.Fatalf("index not ready after 10 minutes: %+v", ts.Search().Integrity())
		}
	}
	b.Logf("%d devices and %d workloads: written in %s, loaded by the server in %s, their records indexed in %s",
		nd, nw, wrote.Round(time.Millisecond), loaded.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	get := func(path string, q url.Values) {
		u := ts.URL + "/ui/api/" + path
		if len(q) > 0 {
			u += "?" + q.Encode()
		}
		res, err := http.Get(u) // loopback: the default config lets it audit
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			b.Fatalf("%s: %d", u, res.StatusCode)
		}
	}
	list := func(kind string, q url.Values) func() {
		return func() {
			get("status", nil)
			q.Set("limit", "50")
			get("registry/"+kind, q)
		}
	}
	entry := func(kind, id string) func() {
		return func() {
			get("status", nil)
			get("registry/"+kind+"/"+url.PathEscape(id), nil)
		}
	}
	pages := []struct {
		name string
		load func()
	}{
		{"devices", list("devices", url.Values{})},
		{"devices-late-page", list("devices", url.Values{"after": {fmt.Sprintf("inv-%06d", nd*8/10)}})},
		{"devices-filtered", list("devices", url.Values{"organisation": {"metering"}, "class": {"battery"}, "label": {"site=west"}})},
		{"devices-filtered-rare", list("devices", url.Values{"label": {"rare=1"}, "vendor": {fmt.Sprintf("vendor-%d", (nd-2)%7)}})},
		{"devices-no-match", list("devices", url.Values{"class": {"transformer"}})},
		{"devices-prefix", list("devices", url.Values{"prefix": {"mtr-0"}})},
		{"workloads", list("workloads", url.Values{"label": {"team=t-3"}})},
		{"device-entry", entry("devices", fmt.Sprintf("inv-%06d", nd/2))},
		{"workload-entry", entry("workloads", "spiffe://grid.example/ns/der/sa/w-00007")},
	}
	for _, p := range pages {
		b.Run(p.name, func(b *testing.B) {
			var lat []time.Duration
			for b.Loop() {
				t := time.Now()
				p.load()
				lat = append(lat, time.Since(t))
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			at := func(q float64) float64 {
				return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))].Microseconds()) / 1000
			}
			b.ReportMetric(at(0.5), "p50-ms")
			b.ReportMetric(at(0.99), "p99-ms")
		})
	}
}
