package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/policies/bundle"
)

// auditFixture is a distributor data directory and what a test needs to
// run and tamper with it.
type auditFixture struct {
	dir, data, keys, pub string
	url                  string
	stop                 func()
}

func newAuditFixture(t *testing.T) *auditFixture {
	dir := t.TempDir()
	_, set, err := bundle.GenerateKey("ed25519")
	require.NoError(t, err)
	keys, _ := json.Marshal(set)
	f := &auditFixture{dir: dir, data: filepath.Join(dir, "data"), keys: filepath.Join(dir, "keys.jwks")}
	require.NoError(t, os.WriteFile(f.keys, keys, 0o644))
	f.pub = filepath.Join(f.data, "checkpoint.key.pub")
	f.start(t)
	return f
}

// start (re)starts the distributor over the data directory.
func (f *auditFixture) start(t *testing.T) {
	f.url, f.stop = serveStoppable(t, f.data, f.keys)
}

// post ingests records from..to-1 (their subject says which run wrote them).
func (f *auditFixture) post(t *testing.T, from, to int, tag string) {
	var b bytes.Buffer
	b.WriteByte('[')
	for i := from; i < to; i++ {
		if i > from {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"time":"2026-11-23T08:00:00Z","decision":"deny","decision_id":"%s-%d","subject":"spiffe://grid.example/%s/m%d","path":"/meter/%d"}`, tag, i, tag, i, i)
	}
	b.WriteByte(']')
	res, err := http.Post(f.url+"/v1/decisions", "application/json", &b)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
}

// checkpoint signs a checkpoint now and saves it as name.
func (f *auditFixture) checkpoint(t *testing.T, name string) string {
	path := filepath.Join(f.dir, name)
	runCLI(t, "audit", "checkpoint", "--server", f.url, "--log-key", f.pub, "--sign", "--save", path).ok(t)
	return path
}

// rewrite stops the distributor, edits the segment lines, drops the tree
// and the checkpoint (as someone who rewrote the files would, to hide the
// edit), and starts it again: it rebuilds the tree and signs anew.
func (f *auditFixture) rewrite(t *testing.T, edit func(lines []string) []string) {
	f.stop()
	seg := filepath.Join(f.data, "decisions", "00000000000000000001.log")
	b, err := os.ReadFile(seg)
	require.NoError(t, err)
	lines := strings.SplitAfter(string(b), "\n")
	lines = edit(lines[:len(lines)-1])
	require.NoError(t, os.WriteFile(seg, []byte(strings.Join(lines, "")), 0o640))
	require.NoError(t, os.Remove(filepath.Join(f.data, "decisions", "tree.hash")))
	require.NoError(t, os.Remove(filepath.Join(f.data, "decisions", "checkpoint")))
	f.start(t)
	// The rewritten log is self-consistent: only an earlier checkpoint
	// tells.
	runCLI(t, "audit", "verify", "--server", f.url, "--log-key", f.pub).ok(t)
}

// verifyAgainst runs audit verify --checkpoint online and offline.
func (f *auditFixture) verifyAgainst(t *testing.T, cp string) (online, offline cliResult) {
	online = runCLI(t, "audit", "verify", "--server", f.url, "--log-key", f.pub, "--checkpoint", cp)
	offline = runCLI(t, "audit", "verify", "--data", f.data, "--log-key", f.pub, "--checkpoint", cp)
	return online, offline
}

func TestAuditCheckpointVerifyAndProve(t *testing.T) {
	f := newAuditFixture(t)
	f.post(t, 0, 20, "a")
	cp1 := f.checkpoint(t, "cp1.txt")
	r := runCLI(t, "audit", "checkpoint", "--server", f.url, "--log-key", f.pub).ok(t)
	assert.Contains(t, r.stdout, "checkpoint verified: log meshguard/decisions, 20 records, root ")
	saved, err := os.ReadFile(cp1)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(saved), "meshguard/decisions\n20\n"), string(saved))

	f.post(t, 20, 33, "a")
	f.checkpoint(t, "cp2.txt")
	r = runCLI(t, "audit", "verify", "--server", f.url, "--log-key", f.pub, "--checkpoint", cp1).ok(t)
	assert.Contains(t, r.stdout, "signed checkpoint of 33 records")
	assert.Contains(t, r.stdout, "consistent with the earlier checkpoint of 20 records")
	assert.Contains(t, r.stdout, "tlog.CheckTree")
	r = runCLI(t, "audit", "verify", "--server", f.url, "--log-key", f.pub, "--checkpoint", cp1, "--full").ok(t)
	assert.Contains(t, r.stdout, "decision log intact: 33 records")

	// An inclusion proof, saved and checked offline.
	r = runCLI(t, "audit", "prove", "7", "--server", f.url, "--log-key", f.pub).ok(t)
	assert.Contains(t, r.stdout, "record 7 is included in the checkpoint of 33 records")
	r = runCLI(t, "audit", "prove", "7", "--server", f.url, "--log-key", f.pub, "--checkpoint", cp1, "-o", "json").ok(t)
	proof := filepath.Join(f.dir, "proof-7.json")
	require.NoError(t, os.WriteFile(proof, []byte(r.stdout), 0o644))
	assert.Equal(t, exitUsage, runCLI(t, "audit", "prove", "21", "--server", f.url, "--log-key", f.pub, "--checkpoint", cp1).code,
		"record 21 is not in the checkpoint of 20")
	f.stop()
	r = runCLI(t, "audit", "prove", "--proof", proof, "--log-key", f.pub).ok(t)
	assert.Contains(t, r.stdout, "record 7 is included in the checkpoint of 20 records")
	forged := filepath.Join(f.dir, "forged.json")
	b, _ := os.ReadFile(proof)
	require.NoError(t, os.WriteFile(forged, bytes.Replace(b, []byte(`/m6`), []byte(`/m9`), 1), 0o644))
	r = runCLI(t, "audit", "prove", "--proof", forged, "--log-key", f.pub)
	assert.Equal(t, exitTampered, r.code, r.stderr)
	assert.Contains(t, r.stderr, "the record was changed")
	other, err := os.ReadFile(filepath.Join(f.dir, "cp2.txt"))
	require.NoError(t, err)
	var pb map[string]any
	require.NoError(t, json.Unmarshal(b, &pb))
	pb["checkpoint"] = string(other)
	b2, _ := json.Marshal(pb)
	require.NoError(t, os.WriteFile(forged, b2, 0o644))
	r = runCLI(t, "audit", "prove", "--proof", forged, "--log-key", f.pub)
	assert.Equal(t, exitTampered, r.code, r.stderr)
	assert.Contains(t, r.stderr, "the proof is for a tree of 20 records, the checkpoint covers 33")
	// Offline, the files agree with both checkpoints.
	r = runCLI(t, "audit", "verify", "--data", f.data, "--log-key", f.pub, "--checkpoint", cp1).ok(t)
	assert.Contains(t, r.stdout, "consistent with the earlier checkpoint of 20 records")
}

// TestAuditVerifyCatchesRewrittenLogs: whoever rewrites the files (edits
// the records, rebuilds the tree, re-signs with the distributor's own key)
// is caught by an auditor holding an earlier checkpoint; the error says
// which of truncation, rewrite or fork it is.
func TestAuditVerifyCatchesRewrittenLogs(t *testing.T) {
	t.Run("last record deleted", func(t *testing.T) {
		f := newAuditFixture(t)
		f.post(t, 0, 12, "a")
		cp := f.checkpoint(t, "cp.txt")
		f.rewrite(t, func(l []string) []string { return l[:len(l)-1] })
		online, offline := f.verifyAgainst(t, cp)
		for _, r := range []cliResult{online, offline} {
			assert.Equal(t, exitTampered, r.code, r.stderr)
			assert.Contains(t, r.stderr, "records 12..12 were removed")
			assert.Contains(t, r.stderr, "truncated")
		}
		assert.Contains(t, online.stderr, "the log now holds 11 records but the earlier checkpoint covers 12")
	})
	t.Run("record rewritten", func(t *testing.T) {
		f := newAuditFixture(t)
		f.post(t, 0, 12, "a")
		cp := f.checkpoint(t, "cp.txt")
		f.rewrite(t, func(l []string) []string {
			l[4] = strings.Replace(l[4], `"path":"/meter/4"`, `"path":"/meter/X"`, 1)
			return l
		})
		online, offline := f.verifyAgainst(t, cp)
		for _, r := range []cliResult{online, offline} {
			assert.Equal(t, exitTampered, r.code, r.stderr)
			assert.Contains(t, r.stderr, "rewritten")
		}
		assert.Contains(t, online.stderr, "two checkpoints of 12 records with different roots")
		// More records on top do not hide it: the consistency proof fails.
		f.post(t, 12, 20, "a")
		f.checkpoint(t, "cp-later.txt")
		online, _ = f.verifyAgainst(t, cp)
		assert.Equal(t, exitTampered, online.code, online.stderr)
		assert.Contains(t, online.stderr, "the tree of 20 records does not extend the earlier tree of 12")
	})
	t.Run("fork", func(t *testing.T) {
		f := newAuditFixture(t)
		f.post(t, 0, 8, "a")
		f.checkpoint(t, "base.txt")
		f.stop()
		// A second log from the same files and key goes its own way.
		g := &auditFixture{dir: t.TempDir(), keys: f.keys}
		g.data = filepath.Join(g.dir, "data")
		require.NoError(t, os.CopyFS(g.data, os.DirFS(f.data)))
		g.pub = filepath.Join(g.data, "checkpoint.key.pub")
		g.start(t)
		f.start(t)
		f.post(t, 8, 10, "a")
		g.post(t, 8, 12, "b")
		cpA := f.checkpoint(t, "a.txt")
		g.checkpoint(t, "b.txt")
		online, offline := g.verifyAgainst(t, cpA)
		for _, r := range []cliResult{online, offline} {
			assert.Equal(t, exitTampered, r.code, r.stderr)
			assert.Contains(t, r.stderr, "forked")
		}
		assert.Contains(t, online.stderr, "the tree of 12 records does not extend the earlier tree of 10")
		// The honest log extends its own checkpoint.
		runCLI(t, "audit", "verify", "--server", f.url, "--log-key", f.pub, "--checkpoint", cpA).ok(t)
	})
}

// TestAuditQueryFilters: every filter narrows the answer as the record
// fields say, relative times count back from now, and a value no record
// could hold is an error, not an empty answer.
func TestAuditQueryFilters(t *testing.T) {
	f := newAuditFixture(t)
	now := time.Now().UTC()
	var b bytes.Buffer
	b.WriteByte('[')
	for i := range 12 {
		if i > 0 {
			b.WriteByte(',')
		}
		dec := []string{"allow", "deny", "dry-run-deny"}[i%3]
		fmt.Fprintf(&b, `{"time":%q,"decision":%q,"decision_id":"q%d","rule_ids":["rule-%d"],"path":"/api/%s/%d","device_id":"dev-%d","proxy":"sidecar~10.0.0.%d~p.grid","bundle_revision":%d}`,
			now.Add(-time.Duration(i)*time.Hour).Format(time.RFC3339), dec, i, i%4, []string{"meter", "relay"}[i%2], i, i%3, i%2, 7+i%2)
	}
	b.WriteByte(']')
	res, err := http.Post(f.url+"/v1/decisions", "application/json", &b)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)

	ids := func(args ...string) []string {
		r := runCLI(t, append([]string{"audit", "query", "--server", f.url, "--all"}, args...)...).ok(t)
		var out []string
		for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			if line == "" {
				continue
			}
			var rec struct {
				ID string `json:"decision_id"`
			}
			require.NoError(t, json.Unmarshal([]byte(line), &rec), line)
			out = append(out, rec.ID)
		}
		return out
	}
	assert.Len(t, ids(), 12)
	assert.Equal(t, []string{"q1", "q4", "q7", "q10"}, ids("--decision", "deny"))
	assert.Equal(t, []string{"q2", "q6", "q10"}, ids("--rule", "rule-2"))
	assert.Equal(t, []string{"q0", "q2", "q4", "q6", "q8", "q10"}, ids("--path", "/api/meter/*"))
	assert.Equal(t, []string{"q4"}, ids("--path", "/api/meter/4"))
	assert.Equal(t, []string{"q2", "q5", "q8", "q11"}, ids("--device", "dev-2"))
	assert.Equal(t, []string{"q1", "q3", "q5", "q7", "q9", "q11"}, ids("--revision", "8"))
	assert.Equal(t, []string{"q0", "q2", "q4", "q6", "q8", "q10"}, ids("--proxy", "sidecar~10.0.0.0~p.grid"))
	assert.Equal(t, []string{"q0", "q1", "q2"}, ids("--since", "150m"))
	assert.Equal(t, []string{"q3", "q4"}, ids("--since", "4h30m", "--until", "150m"))
	assert.Equal(t, []string{"q1", "q7"}, ids("--decision", "deny", "--revision", "8", "--since", "1d"))
	assert.Empty(t, ids("--since", now.Add(time.Hour).Format(time.RFC3339)))

	r := runCLI(t, "audit", "query", "--server", f.url, "--decision", "deny", "--rule", "rule-1", "-o", "csv").ok(t)
	assert.Equal(t, "seq,time,decision,rule_ids,subject,device_id,method,path,reason,bundle_revision\n", strings.SplitAfter(r.stdout, "\n")[0])
	assert.Equal(t, 1, strings.Count(r.stdout, ",deny,rule-1,"), r.stdout)
	r = runCLI(t, "audit", "query", "--server", f.url, "--path", "/api/relay/11", "-o", "table").ok(t)
	assert.Contains(t, r.stdout, "/api/relay/11")

	for _, bad := range [][]string{
		{"--decision", "maybe"},
		{"--since", "yesterday"},
		{"--since", "-2h"},
		{"--until", "0s"},
		{"--revision", "x"},
	} {
		r := runCLI(t, append([]string{"audit", "query", "--server", f.url}, bad...)...)
		assert.Equal(t, exitUsage, r.code, "%v: %s", bad, r.stderr)
		assert.Empty(t, r.stdout)
	}
	r = runCLI(t, "audit", "query", "--server", f.url, "--decision", "maybe")
	assert.Contains(t, r.stderr, "allow")
	// The distributor refuses what the CLI would not send.
	for _, q := range []string{"decision=maybe", "since=yesterday", "revision=-1", "colour=red", "rule=a&rule=b"} {
		res, err := http.Get(f.url + "/v1/decisions?" + q)
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, http.StatusBadRequest, res.StatusCode, q)
	}
}
