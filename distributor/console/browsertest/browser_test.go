package browsertest

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/auth"
	"github.com/meshguard/meshguard/distributor/internal/decisiongen"
	"github.com/meshguard/meshguard/distributor/pollers"
	"github.com/meshguard/meshguard/distributor/registry"
	"github.com/meshguard/meshguard/distributor/server"
	"github.com/meshguard/meshguard/policies/bundle"
)

const (
	auditorToken = "browser-audit-token"
	readerToken  = "browser-reader-token"
	guardToken   = "browser-guard-token"
	gridToken    = "browser-grid-op-token"
	meterToken   = "browser-metering-token"
	hostileLabel = `<img src=x id=pwned onerror="window.__pwned=3">`
	records      = 3000
	hostileSub   = `spiffe://grid.example/"><img src=x id=pwned onerror="window.__pwned=1">`
	hostilePath  = `/api/</td><script>window.__pwned=2</script>`
	proxyCurrent = "sidecar~10.0.0.7~grid-api-0.grid~grid.svc.cluster.local"
	proxyBehind  = "sidecar~10.0.0.8~grid-api-1.grid~grid.svc.cluster.local"
)

// distributor is a real distributor on loopback with a published bundle,
// polls from two proxies and real decision records.
type distributor struct {
	url  string
	kid  string
	base time.Time
	step time.Duration
}

func startDistributor(t *testing.T) distributor {
	t.Helper()
	dir := t.TempDir()
	key, set, err := bundle.GenerateKey("ed25519")
	require.NoError(t, err)
	keys, err := json.Marshal(set)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "verify.jwk"), keys, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokens"),
		[]byte("auditor:"+auditorToken+"\nreader:"+readerToken+"\nguard:"+guardToken+"\ngrid-op:"+gridToken+"\nmetering:"+meterToken+"\n"), 0o600))

	cfg := server.DefaultConfig()
	cfg.Data = filepath.Join(dir, "data")
	cfg.Listen = "127.0.0.1:0"
	cfg.InsecureHTTP = true
	cfg.Keys = filepath.Join(dir, "verify.jwk")
	cfg.Tokens = server.TokensConfig{File: filepath.Join(dir, "tokens")}
	cfg.Bundles.Channels = map[string]server.ChannelConfig{"prod": {}}
	cfg.Limits.IngestRate = 0
	cfg.Allow = map[auth.Action][]string{
		auth.ActionRead:     {"token:guard", "token:reader"},
		auth.ActionPublish:  {"token:auditor"},
		auth.ActionIngest:   {"token:guard"},
		auth.ActionAudit:    {"token:auditor"},
		auth.ActionRegistry: {"token:grid-op", "token:metering"},
	}
	cfg.Registry.Organisations = []registry.Organisation{
		{Name: "grid-op", Members: []string{"token:grid-op"}, TrustDomains: []string{"grid.example"}, DevicePrefixes: []string{"inv-"}},
		{Name: "metering", Members: []string{"token:metering"}, SPIFFEPrefixes: []string{"spiffe://meter.example/ns/metering"}, DevicePrefixes: []string{"mtr-"}},
	}
	srv, err := server.New(context.Background(), cfg, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	d := distributor{url: "http://" + ln.Addr().String(), kid: key.KeyID(), step: 2 * time.Second}
	d.base = time.Now().UTC().Add(-records * d.step).Truncate(time.Second)

	created := time.Now().UTC().Truncate(time.Second).Add(-time.Minute)
	for rev := uint64(4); rev <= 5; rev++ {
		policy := fmt.Appendf(nil, "apiVersion: meshguard.io/v1\nkind: WorkloadPolicy\nmetadata: {name: grid}\nspec:\n  rules:\n"+
			"    - name: readers-r%d\n      effect: allow\n      subjects: [spiffe://grid.example/ns/metering/sa/meter-reader]\n      paths: [/v1/meters/**]\n      methods: [GET]\n", rev)
		b, err := bundle.Pack(map[string][]byte{"policies/grid.yaml": policy},
			bundle.PackOptions{BuildOptions: bundle.BuildOptions{Revision: rev, Created: created, Expires: created.Add(30 * 24 * time.Hour), Key: key, Scope: []string{"prod"}}})
		require.NoError(t, err)
		d.call(t, http.MethodPost, "/v1/bundles/prod", auditorToken, b, http.StatusCreated)
	}
	d.call(t, http.MethodGet, "/v1/bundles/prod", guardToken, nil, http.StatusOK, pollers.HeaderProxy, proxyCurrent, pollers.HeaderEnforcing, "5")
	d.call(t, http.MethodGet, "/v1/bundles/prod", guardToken, nil, http.StatusOK, pollers.HeaderProxy, proxyBehind, pollers.HeaderEnforcing, "4")

	for i := 0; i < records; i += 1000 {
		d.call(t, http.MethodPost, "/v1/decisions", guardToken, decisiongen.Batch(i, 1000, d.base, d.step), http.StatusOK)
	}
	hostile := fmt.Appendf(nil, `[{"time":%q,"decision":"deny","rule_ids":["<b>rule</b>"],"subject":%q,"path":%q,"reason":"<svg onload=alert(1)>"}]`,
		time.Now().UTC().Format(time.RFC3339Nano), hostileSub, hostilePath)
	d.call(t, http.MethodPost, "/v1/decisions", guardToken, hostile, http.StatusOK)
	// A checkpoint of every record, signed on request (an auditor's POST).
	d.call(t, http.MethodPost, "/v1/decisions/checkpoint", auditorToken, nil, http.StatusOK)
	// The console's index follows the log in the background; wait until it
	// has verified every record against the checkpoint so the pages show a
	// settled state.
	require.Eventually(t, func() bool {
		st, err := (&server.Client{Base: d.url, Token: auditorToken}).Status(context.Background())
		in := st.DecisionLog.Integrity
		return err == nil && in.Verified == records+1 && in.Checkpoint != nil && in.Checkpoint.Size == records+1
	}, 30*time.Second, 50*time.Millisecond)
	return d
}

func (d distributor) call(t *testing.T, method, path, token string, body []byte, want int, hdr ...string) []byte {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(string(body))
	}
	req, err := http.NewRequest(method, d.url+path, rd)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, want, res.StatusCode, "%s %s: %s", method, path, b)
	return b
}

// chromium finds Debian's Chromium. The test never skips: `make test`
// installs it (make browser), and without it the console is untested.
func chromium(t *testing.T) string {
	for _, name := range []string{os.Getenv("MESHGUARD_CHROMIUM"), "chromium", "chromium-browser"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("Chromium is not installed: run `make browser` (apt-get install -y chromium) or set MESHGUARD_CHROMIUM")
	return ""
}

// browser starts headless Chromium with a fresh profile and every flag
// that keeps it off the network, and fails the test on any uncaught
// script error in the console.
func browser(t *testing.T) (context.Context, *exceptions) {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1400, 1000),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	exc := &exceptions{}
	_, err := chromedp.Call(ctx, network.Enable, network.EnableParams{})
	require.NoError(t, err, "start Chromium")
	require.NoError(t, chromedp.Listen(ctx, exc.note))
	return ctx, exc
}

// exceptions collects uncaught script errors of the page.
type exceptions struct {
	mu   sync.Mutex
	list []string
}

func (e *exceptions) note(ev any) {
	if x, ok := ev.(*runtime.EventExceptionThrown); ok && x.ExceptionDetails != nil {
		d := x.ExceptionDetails
		msg := d.Text
		if d.Exception != nil {
			msg += " " + d.Exception.Description
		}
		e.mu.Lock()
		e.list = append(e.list, fmt.Sprintf("%s:%d: %s", d.URL, d.LineNumber+1, msg))
		e.mu.Unlock()
	}
}

func (e *exceptions) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.list...)
}

func setHeaders(t *testing.T, ctx context.Context, h network.Headers) {
	t.Helper()
	_, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: h})
	require.NoError(t, err)
}

func basic(token string) network.Headers {
	return network.Headers{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("auditor:"+token))}
}

// waitFor polls a JavaScript condition until it holds.
func waitFor(t *testing.T, ctx context.Context, cond string) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingTimeout(20*time.Second), chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil {
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("waiting for %s: %v\npage:\n%s", cond, err, body)
	}
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(sel)))
	require.NoError(t, err, sel)
	return s
}

func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	require.NoError(t, err, expr)
	return v
}

// open navigates within the console and waits until the page has rendered.
func open(t *testing.T, ctx context.Context, url, page string) {
	t.Helper()
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(url)))
	waitFor(t, ctx, fmt.Sprintf(`document.querySelector('#view-%s[data-ready="true"]') !== null`, page))
}

// count counts generated records matching f (the hostile record aside).
func count(d distributor, f func(decisiongen.Fields) bool) int {
	n := 0
	for i := range records {
		if f(decisiongen.Of(i, d.base, d.step)) {
			n++
		}
	}
	return n
}

func TestConsoleInABrowser(t *testing.T) {
	d := startDistributor(t)
	ctx, jsErrors := browser(t)
	setHeaders(t, ctx, basic(auditorToken))

	t.Run("channels", func(t *testing.T) {
		open(t, ctx, d.url+"/ui/#/channels", "channels")
		sec := `section[data-channel="prod"]`
		assert.Equal(t, "5", text(t, ctx, sec+" .latest-revision"))
		assert.Equal(t, d.kid, text(t, ctx, sec+" .key-id"))
		facts := text(t, ctx, sec+" dl.facts")
		assert.Contains(t, facts, "Expires")
		assert.Contains(t, facts, "valid (in 30 d)")
		pollerRows := text(t, ctx, sec+" table.pollers")
		assert.Contains(t, pollerRows, "token:guard")
		assert.Contains(t, pollerRows, proxyCurrent)
		assert.Contains(t, pollerRows, proxyBehind)
		behind := text(t, ctx, sec+" table.pollers tr.behind")
		assert.Contains(t, behind, proxyBehind, "the proxy enforcing revision 4 is flagged")
		assert.Contains(t, behind, "behind")
		assert.Equal(t, 1, eval[int](t, ctx, `document.querySelectorAll('table.pollers tr.behind').length`))
		assert.Contains(t, text(t, ctx, sec+" table.revisions"), d.kid)
		assert.Contains(t, text(t, ctx, ".cards"), fmtNum(records+1))
		waitFor(t, ctx, `document.querySelector('#log-state').textContent.includes('Merkle tree verified through seq 3,001, matching the signed checkpoint of 3,001 records')`)
	})

	var firstSeq string
	t.Run("decision log with filters", func(t *testing.T) {
		open(t, ctx, d.url+"/ui/#/decisions", "decisions")
		assert.True(t, strings.HasPrefix(text(t, ctx, "#summary"), "3,001 matching records"), text(t, ctx, "#summary"))
		assert.Equal(t, 50, eval[int](t, ctx, `document.querySelectorAll('#records tr.record').length`))
		assert.Contains(t, text(t, ctx, "#integrity"), "Merkle tree verified through seq 3,001")
		assert.Contains(t, text(t, ctx, "#integrity"), "against the latest signed checkpoint (3,001 records)")

		// Deny by one rule, for inverter paths only.
		want := count(d, func(f decisiongen.Fields) bool {
			return f.Decision == "deny" && f.Rules[0] == decisiongen.RuleRevoked && strings.HasPrefix(f.Path, "/api/v1/inverters/")
		})
		require.Greater(t, want, 50, "enough matches for two pages")
		require.NoError(t, chromedp.Do(ctx,
			chromedp.SetValue(chromedp.CSS("#f-decision"), "deny"),
			chromedp.SendKeys(chromedp.CSS("#f-rule"), decisiongen.RuleRevoked),
			chromedp.SendKeys(chromedp.CSS("#f-path"), "/api/v1/inverters/*"),
			chromedp.Click(chromedp.CSS("#apply"))))
		waitFor(t, ctx, fmt.Sprintf(`location.hash.includes('decision=deny') && (document.querySelector('#view-decisions[data-ready="true"] #summary') || {textContent: ''}).textContent.startsWith('%s matching records, showing seq ')`,
			fmtNum(want)))
		assert.Contains(t, eval[string](t, ctx, `location.hash`), "decision=deny")
		decisions := eval[[]string](t, ctx, `[...document.querySelectorAll('#records tr.record td:nth-child(3)')].map(e => e.textContent)`)
		rules := eval[[]string](t, ctx, `[...document.querySelectorAll('#records td.rule')].map(e => e.textContent)`)
		paths := eval[[]string](t, ctx, `[...document.querySelectorAll('#records td.request')].map(e => e.textContent)`)
		require.Len(t, decisions, 50)
		for i := range decisions {
			assert.Equal(t, "deny", decisions[i])
			assert.Equal(t, decisiongen.RuleRevoked, rules[i])
			assert.True(t, strings.HasPrefix(paths[i], "PUT /api/v1/inverters/") || strings.HasPrefix(paths[i], "GET /api/v1/inverters/"), paths[i])
		}
		firstSeq = eval[string](t, ctx, `document.querySelector('#records tr.record').dataset.seq`)

		// The next page continues below the first.
		last := eval[string](t, ctx, `[...document.querySelectorAll('#records tr.record')].pop().dataset.seq`)
		require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#older"))))
		waitFor(t, ctx, `location.hash.includes('before=') && document.querySelector('#view-decisions[data-ready="true"] #newest') !== null`)
		next := eval[string](t, ctx, `document.querySelector('#records tr.record').dataset.seq`)
		assert.Less(t, atoi(t, next), atoi(t, last))
	})

	t.Run("a record", func(t *testing.T) {
		require.NotEmpty(t, firstSeq)
		open(t, ctx, d.url+"/ui/#/decisions?decision=deny&rule="+decisiongen.RuleRevoked+"&path=/api/v1/inverters/*", "decisions")
		require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#records tr.record[data-seq="`+firstSeq+`"] td.subject`))))
		waitFor(t, ctx, `document.querySelector('#view-record[data-ready="true"]') !== null`)
		assert.Contains(t, text(t, ctx, "h1"), "Record seq "+firstSeq)
		assert.Contains(t, text(t, ctx, "h1"), "deny")
		inclusion := text(t, ctx, `#checks tr[data-check="inclusion proof against the latest signed checkpoint"]`)
		assert.Contains(t, inclusion, "verified")
		assert.Contains(t, inclusion, "of the checkpoint of 3001 records")
		assert.Contains(t, inclusion, "tlog.CheckRecord")
		tree := text(t, ctx, `#checks tr[data-check="tree hashes recomputed from the records (RFC 6962 Merkle tree)"]`)
		assert.Contains(t, tree, "verified")
		assert.Contains(t, tree, "records 1..3001")
		i := atoi(t, firstSeq) - 1
		f := decisiongen.Of(i, d.base, d.step)
		assert.Equal(t, fmt.Sprintf("dg-%d", i), text(t, ctx, `#fields tr[data-field="decision_id"] td`))
		assert.Equal(t, f.Path, text(t, ctx, `#fields tr[data-field="path"] td`))
		assert.Equal(t, f.Proxy, text(t, ctx, `#fields tr[data-field="proxy"] td`))
		assert.Equal(t, "token:guard", text(t, ctx, `#fields tr[data-field="received_by"] td`))
		assert.Equal(t, firstSeq, text(t, ctx, `#fields tr[data-field="seq"] td`))
		assert.Equal(t, 0, eval[int](t, ctx, `document.querySelectorAll('#fields tr[data-field="hash"], #fields tr[data-field="prev_hash"]').length`),
			"no hash chain fields: the record is a Merkle tree leaf")
		assert.Contains(t, text(t, ctx, "#raw"), `"seq": `+firstSeq)
	})

	t.Run("hostile record content stays text", func(t *testing.T) {
		open(t, ctx, d.url+"/ui/#/decisions?subject="+url.QueryEscape(hostileSub), "decisions")
		assert.True(t, strings.HasPrefix(text(t, ctx, "#summary"), "1 matching record"), text(t, ctx, "#summary"))
		assert.Equal(t, hostileSub, text(t, ctx, "#records td.subject"))
		assert.Equal(t, "<b>rule</b>", text(t, ctx, "#records td.rule"))
		open(t, ctx, d.url+"/ui/#/record/3001", "record")
		assert.Equal(t, hostilePath, text(t, ctx, `#fields tr[data-field="path"] td`))
		assert.Equal(t, "<svg onload=alert(1)>", text(t, ctx, `#fields tr[data-field="reason"] td`))
		assert.Equal(t, 0, eval[int](t, ctx, `document.querySelectorAll('#pwned, main script, main img, main b').length`))
		assert.Equal(t, "undefined", eval[string](t, ctx, `typeof window.__pwned`))
	})

	t.Run("charts", func(t *testing.T) {
		open(t, ctx, d.url+"/ui/#/charts", "charts")
		assert.Contains(t, text(t, ctx, "#summary"), "3,001 matching records")
		type series struct {
			Name   string    `json:"name"`
			Total  int       `json:"total"`
			Points []float64 `json:"points"`
		}
		read := func(chart string) []series {
			return eval[[]series](t, ctx, `[...document.querySelectorAll('svg[data-chart="`+chart+`"] path.series')].map(p => ({
				name: p.dataset.name, total: +p.dataset.total,
				points: [...p.nextElementSibling.querySelectorAll('circle')].map(c => +c.dataset.value)}))`)
		}
		rules := read("rules")
		byRule := map[string]series{}
		for _, s := range rules {
			byRule[s.Name] = s
		}
		for _, rule := range []string{decisiongen.RuleTelemetry, decisiongen.RuleMeterRead, decisiongen.RuleSetpoint, decisiongen.RuleRevoked, decisiongen.RuleDryRun} {
			s, ok := byRule[rule]
			require.True(t, ok, "series for %s in %v", rule, rules)
			want := count(d, func(f decisiongen.Fields) bool { return containsRule(f.Rules, rule) })
			assert.Equal(t, want, s.Total, rule)
			sum := 0.0
			for _, p := range s.Points {
				sum += p
			}
			assert.Equal(t, float64(want), sum, "%s: the points add up to the total", rule)
			assert.Greater(t, len(s.Points), 10, "%s is drawn over time", rule)
		}
		assert.GreaterOrEqual(t, eval[int](t, ctx, `document.querySelectorAll('svg[data-chart="rules"] circle').length`), 5*10)
		assert.Contains(t, text(t, ctx, "#chart-rules ul.legend"), decisiongen.RuleTelemetry)

		rate := read("deny-rate")
		require.Len(t, rate, 1)
		deny := count(d, func(f decisiongen.Fields) bool { return f.Decision == "deny" }) + 1
		assert.Equal(t, deny, rate[0].Total)
		for _, p := range rate[0].Points {
			assert.True(t, p >= 0 && p <= 100, "deny rate %v%%", p)
		}
		assert.Contains(t, text(t, ctx, "#chart-deny-rate figcaption"), fmt.Sprintf("%.1f%%", 100*float64(deny)/float64(records+1)))

		dry := count(d, func(f decisiongen.Fields) bool { return f.Decision == "dry-run-deny" })
		bar := eval[map[string]float64](t, ctx, `(() => { const r = document.querySelector('svg[data-chart="dry-run"] rect.bar[data-name="`+decisiongen.RuleDryRun+`"]');
			return r ? {value: +r.dataset.value, width: +r.getAttribute('width')} : {} })()`)
		assert.Equal(t, float64(dry), bar["value"])
		assert.Greater(t, bar["width"], 100.0)

		// A filter narrows the charts.
		require.NoError(t, chromedp.Do(ctx,
			chromedp.SendKeys(chromedp.CSS("#f-subject"), decisiongen.Subjects[0]),
			chromedp.Click(chromedp.CSS("#apply"))))
		want := count(d, func(f decisiongen.Fields) bool { return f.Subject == decisiongen.Subjects[0] })
		waitFor(t, ctx, fmt.Sprintf(`(document.querySelector('#view-charts[data-ready="true"] #summary') || {textContent: ''}).textContent.startsWith('%s matching records')`, fmtNum(want)))
		telemetry := 0
		for _, s := range read("rules") {
			if s.Name == decisiongen.RuleTelemetry {
				telemetry = s.Total
			}
		}
		assert.Equal(t, count(d, func(f decisiongen.Fields) bool {
			return f.Subject == decisiongen.Subjects[0] && containsRule(f.Rules, decisiongen.RuleTelemetry)
		}), telemetry)
	})

	t.Run("registry", func(t *testing.T) {
		nav := eval[[]string](t, ctx, `[...document.querySelectorAll('#nav a')].map(a => a.textContent)`)
		assert.Equal(t, []string{"Channels", "Decision log", "Charts", "Registry"}, nav)
		thumb := registerEntries(t, d)

		open(t, ctx, d.url+"/ui/#/registry", "registry")
		assert.Equal(t, "50 devices, sorted by id; more on the next page", text(t, ctx, "#summary"))
		assert.Equal(t, 50, eval[int](t, ctx, `document.querySelectorAll('#entries tr.entry').length`))
		assert.Equal(t, []string{"any", "grid-op", "metering"}, eval[[]string](t, ctx, `[...document.querySelectorAll('#f-organisation option')].map(o => o.textContent)`))
		assert.Contains(t, text(t, ctx, "#registry-scope"), "every organisation")
		require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#next"))))
		waitFor(t, ctx, `location.hash.includes('after=') && document.querySelector('#view-registry[data-ready="true"]')?.dataset.hash === location.hash && document.querySelector('#view-registry #first') !== null`)
		// 60 grid-op devices, the hostile one, two meters: 13 after the first 50.
		assert.Equal(t, 13, eval[int](t, ctx, `document.querySelectorAll('#entries tr.entry').length`))
		assert.Equal(t, "mtr-2", eval[string](t, ctx, `[...document.querySelectorAll('#entries tr.entry')].pop().dataset.id`))

		// Filter: grid-op's batteries in the south.
		open(t, ctx, d.url+"/ui/#/registry?kind=devices", "registry")
		require.NoError(t, chromedp.Do(ctx,
			chromedp.SetValue(chromedp.CSS("#f-organisation"), "grid-op"),
			chromedp.SendKeys(chromedp.CSS("#f-class"), "battery"),
			chromedp.SendKeys(chromedp.CSS("#f-label"), "site=south"),
			chromedp.Click(chromedp.CSS("#apply"))))
		waitFor(t, ctx, `location.hash.includes('class=battery') && document.querySelector('#view-registry[data-ready="true"]')?.dataset.hash === location.hash && document.querySelector('#view-registry #entries') !== null`)
		var want []string
		for i := range 60 {
			if i%3 == 0 && i%2 == 1 {
				want = append(want, fmt.Sprintf("inv-%03d", i))
			}
		}
		assert.Equal(t, want, eval[[]string](t, ctx, `[...document.querySelectorAll('#entries tr.entry')].map(r => r.dataset.id)`))
		assert.Equal(t, fmt.Sprintf("%d devices, sorted by id", len(want)), text(t, ctx, "#summary"))
		for _, col := range []string{"2", "3"} {
			cells := eval[[]string](t, ctx, `[...document.querySelectorAll('#entries tr.entry td:nth-child(`+col+`)')].map(e => e.textContent)`)
			for _, c := range cells {
				assert.Contains(t, []string{"grid-op", "battery"}, c)
			}
		}
		assert.Equal(t, "grid-op", eval[string](t, ctx, `document.querySelector('#f-organisation').value`), "the form shows the filter")

		// Open an entry: what a person sees.
		require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#entries tr.entry[data-id="inv-003"] td:nth-child(2)`))))
		waitFor(t, ctx, `document.querySelector('#view-entry[data-ready="true"]') !== null`)
		assert.Equal(t, "Device inv-003 registered", text(t, ctx, "h1"))
		facts := text(t, ctx, "#entry-facts")
		assert.Contains(t, facts, "Organisationgrid-op")
		assert.Contains(t, facts, "Generation (ETag)2")
		cred := text(t, ctx, "#credential")
		assert.Contains(t, cred, "public key (JWK)")
		assert.Contains(t, cred, "OKP Ed25519")
		assert.Contains(t, cred, thumb["inv-003"])
		assert.Equal(t, ">=4.0.0", text(t, ctx, `#fields tr[data-field="firmware"] td`))
		assert.Equal(t, "site=south", text(t, ctx, `#fields tr[data-field="labels"] td`))
		assert.Equal(t, "battery", text(t, ctx, `#fields tr[data-field="class"] td`))
		assert.Equal(t, 0, eval[int](t, ctx, `document.querySelectorAll('#fields tr[data-field="credential"]').length`))
		assert.Contains(t, text(t, ctx, "#channels-note"), "do not produce bundle revisions yet")
		hist := eval[[]string](t, ctx, `[...document.querySelectorAll('#history tr.history')].map(r => r.textContent)`)
		require.Len(t, hist, 2)
		assert.Contains(t, hist[0], "update")
		assert.Contains(t, hist[0], "token:grid-op")
		assert.Contains(t, hist[0], "firmware")
		assert.Contains(t, hist[1], "create")
		assert.Contains(t, hist[1], "registered")
		require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#history-link"))))
		waitFor(t, ctx, `location.hash.includes('decision=registry') && document.querySelector('#view-decisions[data-ready="true"] #summary') !== null`)
		assert.True(t, strings.HasPrefix(text(t, ctx, "#summary"), "2 matching records"), text(t, ctx, "#summary"))
		assert.Equal(t, "inv-003", eval[string](t, ctx, `document.querySelector('#f-device').value`))

		// Hostile content is text, in the list and the entry.
		open(t, ctx, d.url+"/ui/#/registry?prefix=inv-x", "registry")
		assert.Equal(t, "note="+hostileLabel, text(t, ctx, `#entries tr.entry[data-id="inv-x"] ul.labels`))
		open(t, ctx, d.url+"/ui/#/entry?kind=devices&id=inv-x", "entry")
		assert.Equal(t, "note="+hostileLabel, text(t, ctx, `#fields tr[data-field="labels"] td`))
		cred = text(t, ctx, "#credential")
		assert.Contains(t, cred, "X.509 certificate")
		assert.Contains(t, cred, `CN=\<img src=x id=pwned onerror=\"window.__pwned=4\"\>`)
		assert.Contains(t, cred, "expired")
		assert.NotContains(t, eval[string](t, ctx, `document.body.innerText`), "BEGIN CERTIFICATE")
		assert.Equal(t, 0, eval[int](t, ctx, `document.querySelectorAll('#pwned, main script, main img').length`))
		assert.Equal(t, "undefined", eval[string](t, ctx, `typeof window.__pwned`))

		// Workloads.
		require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#back"))))
		waitFor(t, ctx, `document.querySelector('#view-registry[data-ready="true"] #tab-workloads') !== null`)
		require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#tab-workloads"))))
		waitFor(t, ctx, `location.hash.includes('kind=workloads') && document.querySelector('#view-registry[data-ready="true"]')?.dataset.hash === location.hash && document.querySelector('#view-registry table.workloads#entries') !== null`)
		assert.Equal(t, []string{"spiffe://meter.example/ns/metering/sa/reader"}, eval[[]string](t, ctx, `[...document.querySelectorAll('#entries tr.entry')].map(r => r.dataset.id)`))
		assert.Equal(t, 0, eval[int](t, ctx, `document.querySelectorAll('#f-class').length`), "no device filters for workloads")
		require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#entries tr.entry a`))))
		waitFor(t, ctx, `document.querySelector('#view-entry[data-ready="true"]') !== null`)
		assert.Equal(t, "Workload spiffe://meter.example/ns/metering/sa/reader registered", text(t, ctx, "h1"))
		assert.Contains(t, text(t, ctx, `#fields tr[data-field="versions"] td`), ">=1.2.0")
		assert.Contains(t, text(t, ctx, "#history-scope"), "among the newest")
		assert.Equal(t, 1, eval[int](t, ctx, `document.querySelectorAll('#history tr.history').length`))
	})

	t.Run("a caller without the audit action gets 403", func(t *testing.T) {
		// The page already loaded: its API calls are refused and it says so.
		setHeaders(t, ctx, basic(readerToken))
		_ = eval[string](t, ctx, `location.hash = '#/decisions'`)
		waitFor(t, ctx, `document.querySelector('#view-decisions[data-ready="true"] #error') !== null`)
		assert.Contains(t, text(t, ctx, "#error"), "Access denied")
		assert.Contains(t, text(t, ctx, "#error"), "token:reader may not audit")
		for _, page := range []string{"registry", "entry"} {
			_ = eval[string](t, ctx, `location.hash = '#/`+page+`?kind=devices&id=inv-003'`)
			waitFor(t, ctx, `document.querySelector('#view-`+page+`[data-ready="true"] #error') !== null`)
			assert.Contains(t, text(t, ctx, "#error"), "Access denied", page)
			assert.Equal(t, 0, eval[int](t, ctx, `document.querySelectorAll('#entries, #credential').length`), page)
		}
		resp, err := chromedp.RunResponse(ctx, chromedp.Navigate(d.url+"/ui/api/registry/devices"))
		require.NoError(t, err)
		assert.Equal(t, int64(http.StatusForbidden), resp.Status, "the registry read path needs the audit action")
		setHeaders(t, ctx, network.Headers{"Authorization": "Bearer " + gridToken})
		resp, err = chromedp.RunResponse(ctx, chromedp.Navigate(d.url+"/ui/api/registry/devices"))
		require.NoError(t, err)
		assert.Equal(t, int64(http.StatusForbidden), resp.Status, "a registry organisation is not an auditor")
		setHeaders(t, ctx, basic(readerToken))

		resp, err = chromedp.RunResponse(ctx, chromedp.Navigate(d.url+"/ui/"))
		require.NoError(t, err)
		assert.Equal(t, int64(http.StatusForbidden), resp.Status)
		assert.Contains(t, eval[string](t, ctx, `document.body.innerText`), "token:reader may not audit")
		assert.Equal(t, 0, eval[int](t, ctx, `document.querySelectorAll('#app').length`), "no console for this caller")

		setHeaders(t, ctx, network.Headers{})
		resp, err = chromedp.RunResponse(ctx, chromedp.Navigate(d.url+"/ui/api/status"))
		require.NoError(t, err)
		assert.Equal(t, int64(http.StatusForbidden), resp.Status, "no credentials at all: anonymous may not audit either")
	})

	assert.Empty(t, jsErrors.all(), "uncaught script errors in the console")
}

func containsRule(rules []string, r string) bool {
	for _, x := range rules {
		if x == r {
			return true
		}
	}
	return false
}

func atoi(t *testing.T, s string) int {
	var n int
	_, err := fmt.Sscan(s, &n)
	require.NoError(t, err, s)
	return n
}

// fmtNum formats n as the console does (en-US grouping).
func fmtNum(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// registerEntries registers devices and a workload through the registry
// API (as the two organisations) and waits until the console's index has
// their records. It returns each device's key thumbprint (RFC 7638).
func registerEntries(t *testing.T, d distributor) map[string]string {
	thumbs := map[string]string{}
	key := func(id string) map[string]any {
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		require.NoError(t, err)
		x := base64.RawURLEncoding.EncodeToString(pub)
		sum := sha256.Sum256([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + x + `"}`))
		thumbs[id] = base64.RawURLEncoding.EncodeToString(sum[:])
		return map[string]any{"jwk": map[string]string{"kty": "OKP", "crv": "Ed25519", "x": x}}
	}
	post := func(token, kind string, v map[string]any) {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		d.call(t, http.MethodPost, "/v1/registry/"+kind, token, b, http.StatusCreated, "Content-Type", "application/json")
	}
	changes := 0
	for i := range 60 {
		id := fmt.Sprintf("inv-%03d", i)
		dev := map[string]any{"id": id, "class": "inverter", "vendor": "voltwerk", "firmware": ">=3.1.0", "credential": key(id),
			"labels": map[string]string{"site": "north"}}
		if i%2 == 1 {
			dev["class"] = "battery"
		}
		if i%3 == 0 {
			dev["labels"] = map[string]string{"site": "south"}
		}
		post(gridToken, "devices", dev)
		changes++
		if id == "inv-003" {
			dev["firmware"] = ">=4.0.0"
			b, err := json.Marshal(dev)
			require.NoError(t, err)
			d.call(t, http.MethodPut, "/v1/registry/devices/"+id, gridToken, b, http.StatusOK, "Content-Type", "application/json", "If-Match", `"1"`)
			changes++
		}
	}
	pk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: `<img src=x id=pwned onerror="window.__pwned=4">`},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &pk.PublicKey, pk)
	require.NoError(t, err)
	post(gridToken, "devices", map[string]any{"id": "inv-x", "class": "meter", "vendor": "acme",
		"credential": map[string]any{"x509": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))},
		"labels":     map[string]string{"note": hostileLabel}})
	for _, id := range []string{"mtr-1", "mtr-2"} {
		post(meterToken, "devices", map[string]any{"id": id, "class": "meter", "vendor": "metrix", "credential": key(id)})
	}
	post(meterToken, "workloads", map[string]any{"spiffe_id": "spiffe://meter.example/ns/metering/sa/reader", "versions": map[string]any{"range": ">=1.2.0"}})
	changes += 4
	require.Eventually(t, func() bool {
		st, err := (&server.Client{Base: d.url, Token: auditorToken}).Status(context.Background())
		return err == nil && st.DecisionLog.Indexed == uint64(records+1+changes)
	}, 30*time.Second, 50*time.Millisecond)
	return thumbs
}
