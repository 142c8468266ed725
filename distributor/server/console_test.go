package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/auth"
	"github.com/meshguard/meshguard/distributor/decisionlog"
	"github.com/meshguard/meshguard/distributor/internal/decisiongen"
	"github.com/meshguard/meshguard/distributor/pollers"
)

var consoleBase = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

const (
	auditorToken = "audit-token-77"
	readerToken  = "reader-token-12"
	guardToken   = "guard-token-3"
)

// consoleServer is a distributor where only token:auditor may audit, the
// guard token may read and ingest, and loopback counts for nothing.
func consoleServer(t testing.TB) (*testServer, *signer) {
	k := newSigner(t)
	cfg := testConfig(t)
	tokens := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(tokens, []byte("auditor:"+auditorToken+"\nreader:"+readerToken+"\nguard:"+guardToken+"\n"), 0o600))
	cfg.Tokens.File = tokens
	cfg.Allow = map[auth.Action][]string{
		auth.ActionRead:    {"token:reader", "token:guard", "anonymous"},
		auth.ActionPublish: {"token:auditor"},
		auth.ActionIngest:  {"token:guard"},
		auth.ActionAudit:   {"token:auditor"},
	}
	cfg.Limits.IngestRate = 0
	return startServer(t, cfg, k.options()), k
}

func bearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	r := do(t, nil, http.MethodGet, url, nil, bearer(auditorToken)...)
	require.Equal(t, http.StatusOK, r.Code, string(r.Body))
	r.json(t, v)
}

func TestStatusShowsChannelsPollersAndLog(t *testing.T) {
	ts, k := consoleServer(t)
	r := publish(t, ts.URL, "prod", k.bundle(t, 4, "prod"), bearer(auditorToken)...)
	require.Equal(t, http.StatusCreated, r.Code, string(r.Body))
	kid := k.key.KeyID()
	require.NotEmpty(t, kid)

	// A guard polls with its proxy id; a second proxy without; an anonymous one.
	poll := func(hdr ...string) resp {
		return do(t, nil, http.MethodGet, ts.URL+"/v1/bundles/prod", nil, hdr...)
	}
	r = poll(append(bearer(guardToken), pollers.HeaderProxy, "sidecar~10.0.0.7~meter-0.grid", pollers.HeaderEnforcing, "0")...)
	require.Equal(t, http.StatusOK, r.Code)
	etag := r.Header.Get("ETag")
	r = poll(append(bearer(guardToken), pollers.HeaderProxy, "sidecar~10.0.0.7~meter-0.grid", pollers.HeaderEnforcing, "4", "If-None-Match", etag)...)
	require.Equal(t, http.StatusNotModified, r.Code)
	require.Equal(t, http.StatusOK, poll(append(bearer(readerToken), pollers.HeaderProxy, "bad id with spaces")...).Code)
	require.Equal(t, http.StatusOK, poll().Code)
	// A poll of a channel without a bundle is not recorded.
	r = do(t, nil, http.MethodGet, ts.URL+"/v1/bundles/nope", nil, append(bearer(guardToken), pollers.HeaderProxy, "p9")...)
	require.Equal(t, http.StatusNotFound, r.Code)

	r = do(t, nil, http.MethodPost, ts.URL+"/v1/decisions", decisiongen.Batch(0, 300, consoleBase, time.Second), bearer(guardToken)...)
	require.Equal(t, http.StatusOK, r.Code, string(r.Body))
	r = do(t, nil, http.MethodPost, ts.URL+"/v1/decisions/checkpoint", nil, bearer(auditorToken)...)
	require.Equal(t, http.StatusOK, r.Code, string(r.Body))

	var st Status
	getJSON(t, ts.URL+"/v1/status", &st)
	// Every configured channel is listed (testConfig has edge and prod);
	// only prod has a bundle.
	require.Len(t, st.Channels, 2)
	assert.Equal(t, "edge", st.Channels[0].Name)
	assert.Nil(t, st.Channels[0].Latest)
	ch := st.Channels[1]
	assert.Equal(t, "prod", ch.Name)
	require.NotNil(t, ch.Latest)
	assert.Equal(t, uint64(4), ch.Latest.Revision)
	assert.Equal(t, kid, ch.Latest.KeyID, "the signing key's kid is recorded at publish")
	assert.Equal(t, k.created, ch.Latest.Created)
	assert.Equal(t, k.created.Add(24*time.Hour), ch.Latest.Expires)
	require.Len(t, ch.Revisions, 1)
	require.NotNil(t, ch.Expiry, "a bundle valid for a day is inside the 7-day warning window")
	assert.False(t, ch.Expiry.Expired)
	assert.Contains(t, ch.Expiry.Warning, "revision 4 expires at")
	require.Len(t, ch.Pollers, 3)
	byID := map[string]pollers.Entry{}
	for _, p := range ch.Pollers {
		byID[p.Identity+"|"+p.Proxy] = p
	}
	g := byID["token:guard|sidecar~10.0.0.7~meter-0.grid"]
	assert.Equal(t, uint64(2), g.Polls)
	assert.Equal(t, http.StatusNotModified, g.Status)
	require.NotNil(t, g.Enforcing)
	assert.Equal(t, uint64(4), *g.Enforcing)
	assert.Equal(t, uint64(4), g.Served)
	rd, ok := byID["token:reader|"]
	require.True(t, ok, "a refused proxy id is not recorded: %v", byID)
	assert.Nil(t, rd.Enforcing)
	_, ok = byID["anonymous@127.0.0.1|"]
	assert.True(t, ok, "anonymous pollers are named by address without port: %v", byID)
	assert.Equal(t, 3, st.Pollers.Tracked)

	assert.Equal(t, uint64(300), st.DecisionLog.Records)
	assert.Equal(t, st.DecisionLog.Head, ts.DecisionLog().Head())
	assert.Equal(t, 1, st.DecisionLog.Segments)
	assert.Greater(t, st.DecisionLog.Bytes, int64(300*300))
	cp := st.DecisionLog.Checkpoint
	assert.Equal(t, "signed checkpoint (C2SP tlog-checkpoint)", cp.Kind)
	assert.True(t, cp.Signed)
	assert.Equal(t, uint64(300), cp.Seq, "signed on request")
	assert.Equal(t, st.DecisionLog.Head.Hash, cp.Hash)
	assert.True(t, strings.HasPrefix(cp.Note, fmt.Sprintf("meshguard/decisions\n300\n%s\n\n\u2014 meshguard/decisions ", cp.Hash)), cp.Note)
	assert.Equal(t, ts.DecisionLog().Key().Public, cp.Key)
	// The index catches up within its poll interval.
	require.Eventually(t, func() bool {
		getJSON(t, ts.URL+"/v1/status", &st)
		return st.DecisionLog.Integrity.Verified == 300
	}, 10*time.Second, 50*time.Millisecond)
	assert.Empty(t, st.DecisionLog.Integrity.Problem)
	assert.Equal(t, uint64(300), st.DecisionLog.Indexed)
}

func TestConsoleNeedsTheAuditAction(t *testing.T) {
	ts, _ := consoleServer(t)
	for _, path := range []string{"/ui/", "/ui/app.js", "/ui/api/status", "/ui/api/decisions/search", "/ui/api/decisions/stats",
		"/ui/api/decisions/records/1", "/ui/api/decisions/values/rule", "/v1/status", "/v1/decisions/search", "/v1/decisions/stats"} {
		t.Run(path, func(t *testing.T) {
			r := do(t, nil, http.MethodGet, ts.URL+path, nil, bearer(readerToken)...)
			assert.Equal(t, http.StatusForbidden, r.Code)
			assert.Contains(t, string(r.Body), "token:reader may not audit")
			r = do(t, nil, http.MethodGet, ts.URL+path, nil)
			assert.Equal(t, http.StatusForbidden, r.Code, "anonymous may read bundles, not audit")
			r = do(t, nil, http.MethodGet, ts.URL+path, nil, "Authorization", "Bearer wrong")
			assert.Equal(t, http.StatusUnauthorized, r.Code)
			if strings.HasPrefix(path, "/ui/") {
				assert.Equal(t, `Basic realm="meshguard"`, r.Header.Get("WWW-Authenticate"), "a browser asks its user for the token")
			}
		})
	}
	// A browser's Basic credentials (any user name, the token as password) work.
	req, err := http.NewRequest(http.MethodGet, ts.URL+"/ui/", nil)
	require.NoError(t, err)
	req.SetBasicAuth("auditor", auditorToken)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusOK, res.StatusCode)
}

func TestConsoleServesEmbeddedAssetsSafely(t *testing.T) {
	ts, _ := consoleServer(t)
	for path, ctype := range map[string]string{"/ui/": "text/html", "/ui/index.html": "text/html", "/ui/app.js": "text/javascript",
		"/ui/app.css": "text/css", "/ui/icon.svg": "image/svg+xml"} {
		r := do(t, nil, http.MethodGet, ts.URL+path, nil, bearer(auditorToken)...)
		require.Equal(t, http.StatusOK, r.Code, path)
		assert.Contains(t, r.Header.Get("Content-Type"), ctype, path)
		assert.Contains(t, r.Header.Get("Content-Security-Policy"), "script-src 'self'", path)
		assert.Equal(t, "nosniff", r.Header.Get("X-Content-Type-Options"))
		assert.Equal(t, "DENY", r.Header.Get("X-Frame-Options"))
		etag := r.Header.Get("ETag")
		require.NotEmpty(t, etag)
		r = do(t, nil, http.MethodGet, ts.URL+path, nil, append(bearer(auditorToken), "If-None-Match", etag)...)
		assert.Equal(t, http.StatusNotModified, r.Code)
	}
	r := do(t, nil, http.MethodGet, ts.URL+"/ui/", nil, bearer(auditorToken)...)
	assert.NotContains(t, string(r.Body), "http://", "no external resources")
	assert.NotContains(t, string(r.Body), "https://")
	assert.NotContains(t, string(r.Body), "<script>", "no inline script")
	for _, path := range []string{"/ui/nope.js", "/ui/../server.go", "/ui/static/app.js"} {
		r := do(t, nil, http.MethodGet, ts.URL+path, nil, bearer(auditorToken)...)
		assert.NotEqual(t, http.StatusOK, r.Code, path)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	r = do(t, c, http.MethodGet, ts.URL+"/ui", nil, bearer(auditorToken)...)
	assert.Equal(t, http.StatusMovedPermanently, r.Code)
	assert.Equal(t, "/ui/", r.Header.Get("Location"))
	r = do(t, nil, http.MethodGet, ts.URL+"/ui/api/status", nil, bearer(auditorToken)...)
	assert.Equal(t, "no-store", r.Header.Get("Cache-Control"))
	assert.NotEmpty(t, r.Header.Get("Content-Security-Policy"))
}

func TestDecisionSearchStatsAndRecords(t *testing.T) {
	ts, _ := consoleServer(t)
	const n = 2000
	for i := 0; i < n; i += 500 {
		r := do(t, nil, http.MethodPost, ts.URL+"/v1/decisions", decisiongen.Batch(i, 500, consoleBase, time.Second), bearer(guardToken)...)
		require.Equal(t, http.StatusOK, r.Code, string(r.Body))
	}
	want := func(match func(decisiongen.Fields) bool) (seqs []uint64) {
		for i := n - 1; i >= 0; i-- {
			if match(decisiongen.Of(i, consoleBase, time.Second)) {
				seqs = append(seqs, uint64(i+1))
			}
		}
		return seqs
	}
	search := func(q url.Values) decisionlog.Page {
		var p decisionlog.Page
		getJSON(t, ts.URL+"/ui/api/decisions/search?"+q.Encode(), &p)
		return p
	}
	for name, tc := range map[string]struct {
		q     url.Values
		match func(decisiongen.Fields) bool
	}{
		"deny": {url.Values{"decision": {"deny"}}, func(f decisiongen.Fields) bool { return f.Decision == "deny" }},
		"rule": {url.Values{"rule": {decisiongen.RuleDryRun}}, func(f decisiongen.Fields) bool {
			return len(f.Rules) > 1 && f.Rules[1] == decisiongen.RuleDryRun
		}},
		"subject and revision": {url.Values{"subject": {decisiongen.Subjects[2]}, "revision": {"41"}}, func(f decisiongen.Fields) bool {
			return f.Subject == decisiongen.Subjects[2] && f.Revision == 41
		}},
		"device": {url.Values{"device": {"inv-0007"}}, func(f decisiongen.Fields) bool { return f.Device == "inv-0007" }},
		"path prefix": {url.Values{"path": {"/api/v1/inverters/*"}}, func(f decisiongen.Fields) bool {
			return strings.HasPrefix(f.Path, "/api/v1/inverters/")
		}},
		"proxy": {url.Values{"proxy": {decisiongen.Of(5, consoleBase, time.Second).Proxy}}, func(f decisiongen.Fields) bool {
			return f.Proxy == decisiongen.Of(5, consoleBase, time.Second).Proxy
		}},
		"time range": {url.Values{"since": {consoleBase.Add(100 * time.Second).Format(time.RFC3339)}, "until": {consoleBase.Add(199 * time.Second).Format(time.RFC3339)}},
			func(f decisiongen.Fields) bool {
				return !f.Time.Before(consoleBase.Add(100*time.Second)) && !f.Time.After(consoleBase.Add(199*time.Second))
			}},
		"uploader": {url.Values{"uploader": {"token:guard"}}, func(decisiongen.Fields) bool { return true }},
	} {
		t.Run(name, func(t *testing.T) {
			exp := want(tc.match)
			require.NotEmpty(t, exp)
			var got []uint64
			q := tc.q
			q.Set("limit", "100")
			for {
				p := search(q)
				assert.Equal(t, uint64(len(exp)), p.Total)
				for _, r := range p.Records {
					got = append(got, r.Seq)
				}
				if p.Next == 0 {
					break
				}
				q.Set("before", strconv.FormatUint(p.Next, 10))
			}
			assert.Equal(t, exp, got)
		})
	}

	var rec RecordAnswer
	getJSON(t, ts.URL+"/v1/decisions/records/17", &rec)
	assert.Equal(t, uint64(17), rec.Seq)
	var fields map[string]any
	require.NoError(t, json.Unmarshal(rec.Record, &fields))
	assert.Equal(t, "dg-16", fields["decision_id"])
	assert.Equal(t, "token:guard", fields["received_by"])
	require.Len(t, rec.Checks, 2)
	assert.Equal(t, "inclusion proof against the latest signed checkpoint", rec.Checks[0].Name)
	assert.Equal(t, "tree hashes recomputed from the records (RFC 6962 Merkle tree)", rec.Checks[1].Name)
	// Signed on demand: the record's inclusion proof then verifies.
	r := do(t, nil, http.MethodPost, ts.URL+"/v1/decisions/checkpoint", nil, bearer(auditorToken)...)
	require.Equal(t, http.StatusOK, r.Code, string(r.Body))
	require.Eventually(t, func() bool {
		getJSON(t, ts.URL+"/v1/decisions/records/17", &rec)
		return rec.Checks[0].Status == "verified" && rec.Checks[1].Status == "verified"
	}, 10*time.Second, 50*time.Millisecond)
	assert.True(t, rec.Verified)
	assert.Contains(t, rec.Checks[0].Detail, fmt.Sprintf("of the checkpoint of %d records", n))
	assert.Contains(t, rec.Checks[0].Detail, "tlog.CheckRecord")
	assert.Contains(t, rec.Checks[1].Detail, "records 1..")

	var st decisionlog.Stats
	getJSON(t, ts.URL+"/ui/api/decisions/stats?buckets=20&top=3", &st)
	assert.Equal(t, uint64(n), st.Total)
	assert.LessOrEqual(t, len(st.Series), 20)
	assert.Len(t, st.Rules, 3)
	require.NotNil(t, st.Other)
	var deny, sum uint64
	for _, b := range st.Series {
		deny += b.Deny
		sum += b.Total
	}
	assert.Equal(t, uint64(n), sum)
	assert.Equal(t, uint64(len(want(func(f decisiongen.Fields) bool { return f.Decision == "deny" }))), deny)
	getJSON(t, ts.URL+"/ui/api/decisions/stats?decision=dry-run-deny&buckets=1", &st)
	var dryRule *decisionlog.RuleCounts
	for i := range st.Rules {
		if st.Rules[i].Rule == decisiongen.RuleDryRun {
			dryRule = &st.Rules[i]
		}
	}
	require.NotNil(t, dryRule)
	assert.Equal(t, st.Total, dryRule.DryRun)

	var vs []decisionlog.ValueCount
	getJSON(t, ts.URL+"/ui/api/decisions/values/subject?limit=2", &vs)
	require.Len(t, vs, 2)
	assert.GreaterOrEqual(t, vs[0].Count, vs[1].Count)
}

func TestDecisionQueriesRefuseBadParameters(t *testing.T) {
	ts, _ := consoleServer(t)
	for path, want := range map[string]string{
		"/v1/decisions/search?subjet=x":                                             `unknown parameter "subjet"`,
		"/v1/decisions/search?decision=deny&decision=allow":                         `"decision" given 2 times`,
		"/v1/decisions/search?decision=maybe":                                       `"maybe"`,
		"/v1/decisions/search?revision=latest":                                      "revision=",
		"/v1/decisions/search?since=yesterday":                                      "since=",
		"/v1/decisions/search?limit=0":                                              "limit=",
		"/v1/decisions/search?limit=501":                                            "limit=",
		"/v1/decisions/search?before=-1":                                            "before=",
		"/v1/decisions/search?buckets=5":                                            `unknown parameter "buckets"`,
		"/v1/decisions/stats?buckets=501":                                           "buckets=",
		"/v1/decisions/stats?top=51":                                                "top=",
		"/v1/decisions/stats?since=2026-11-23T09:00:00Z&until=2026-11-23T08:00:00Z": "before since",
		"/v1/decisions/records/abc":                                                 "want a record sequence number",
		"/v1/decisions/records/0":                                                   "want a record sequence number",
		"/v1/decisions/values/rule?limit=1001":                                      "limit=",
		"/v1/decisions/values/rule?x=1":                                             `unknown parameter "x"`,
	} {
		r := do(t, nil, http.MethodGet, ts.URL+path, nil, bearer(auditorToken)...)
		assert.Equal(t, http.StatusBadRequest, r.Code, path)
		var e struct{ Error string }
		r.json(t, &e)
		assert.Contains(t, e.Error, want, path)
	}
	r := do(t, nil, http.MethodGet, ts.URL+"/v1/decisions/records/99", nil, bearer(auditorToken)...)
	assert.Equal(t, http.StatusNotFound, r.Code)
	r = do(t, nil, http.MethodGet, ts.URL+"/v1/decisions/values/colour", nil, bearer(auditorToken)...)
	assert.Equal(t, http.StatusNotFound, r.Code)
}

// FuzzParseQuery: any query string is refused or yields a valid filter.
func FuzzParseQuery(f *testing.F) {
	f.Add("decision=deny&rule=r&subject=spiffe://x/*&revision=3&since=2026-11-23T08:00:00Z")
	f.Add("until=2026-11-23T08:00:00Z&since=2026-11-23T09:00:00Z")
	f.Add("path=%00&proxy=" + strings.Repeat("a", 5000))
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		flt, err := parseQuery(q, searchParams)
		if err != nil {
			return
		}
		if err := flt.Validate(); err != nil {
			t.Fatalf("parseQuery accepted an invalid filter: %v", err)
		}
	})
}
