package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/meshguard/meshguard/distributor/decisionlog"
	"github.com/meshguard/meshguard/distributor/pollers"
	"github.com/meshguard/meshguard/distributor/server"
	"github.com/meshguard/meshguard/policies/bundle"
)

// statusErr is a non-zero exit of runStatus: its code and stderr.
type statusErr struct {
	code int
	msg  string
}

func (e *statusErr) Error() string { return e.msg }

// runStatus runs meshguard status on a fresh root: stdout, and a
// *statusErr when it exits non-zero.
func runStatus(t *testing.T, args ...string) (string, error) {
	t.Helper()
	r := runCLI(t, append([]string{"status"}, args...)...)
	if r.code != 0 {
		return r.stdout, &statusErr{code: r.code, msg: r.stderr}
	}
	return r.stdout, nil
}

// serveDistributor runs a distributor over data with the verification
// keys in keys on loopback (where the default allowlists let a test do
// everything) until the test ends, and returns its URL.
func serveDistributor(t *testing.T, data, keys string) string {
	url, _ := serveStoppable(t, data, keys)
	return url
}

// serveStoppable is serveDistributor with a stop function (safe to call
// more than once), for tests of what clients do when nothing listens.
func serveStoppable(t *testing.T, data, keys string) (string, func()) {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.Data, cfg.Listen, cfg.InsecureHTTP, cfg.Keys = data, "127.0.0.1:0", true, keys
	cfg.Bundles.Channels = map[string]server.ChannelConfig{"prod": {}}
	srv, err := server.New(context.Background(), cfg, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return "http://" + ln.Addr().String(), stop
}

// statusDistributor is serveDistributor once its index has caught up.
func statusDistributor(t *testing.T, data, keys string) string {
	t.Helper()
	url := serveDistributor(t, data, keys)
	// The index follows the log within its poll interval.
	require.Eventually(t, func() bool {
		st, err := (&server.Client{Base: url}).Status(context.Background())
		d := st.DecisionLog
		return err == nil && d.Indexed == d.Records && (d.Integrity.Problem != "" || d.Integrity.Verified == d.Records)
	}, 10*time.Second, 20*time.Millisecond)
	return url
}

func TestStatusTableJSONAndYAML(t *testing.T) {
	dir := t.TempDir()
	key, set, err := bundle.GenerateKey("ed25519")
	require.NoError(t, err)
	keys, _ := json.Marshal(set)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "keys.jwks"), keys, 0o644))
	data := filepath.Join(dir, "data")
	l, err := decisionlog.Open(filepath.Join(data, "decisions"), decisionlog.Options{})
	require.NoError(t, err)
	for i := range 7 {
		r, err := decisionlog.DecodeRecord(fmt.Appendf(nil, `{"time":"2026-11-23T08:00:0%dZ","decision":"deny"}`, i))
		require.NoError(t, err)
		_, err = l.Append([]decisionlog.Record{r})
		require.NoError(t, err)
	}
	require.NoError(t, l.Close())
	url := statusDistributor(t, data, filepath.Join(dir, "keys.jwks"))

	for rev := uint64(3); rev <= 4; rev++ {
		b, err := bundle.Pack(map[string][]byte{"policies/p.yaml": []byte(openPolicy)},
			bundle.PackOptions{BuildOptions: bundle.BuildOptions{Revision: rev, Expires: time.Now().Add(72 * time.Hour), Key: key, Scope: []string{"prod"}}})
		require.NoError(t, err)
		file := filepath.Join(dir, "p.bundle")
		require.NoError(t, os.WriteFile(file, b, 0o644))
		runCLI(t, "push", "bundle", file, "--server", url, "--channel", "prod").ok(t)
	}
	req, err := http.NewRequest(http.MethodGet, url+"/v1/bundles/prod", nil)
	require.NoError(t, err)
	req.Header.Set(pollers.HeaderProxy, "sidecar~10.0.0.9~meter-1.grid")
	req.Header.Set(pollers.HeaderEnforcing, "3")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()

	out, err := runStatus(t, "--server", url)
	require.NoError(t, err, out)
	lines := strings.Split(out, "\n")
	assert.Regexp(t, `^CHANNEL +REVISION +SIGNING KEY +CREATED +EXPIRES +RETAINED`, lines[0])
	assert.Regexp(t, `^prod +4 +`+key.KeyID()+` +\S+ +\S+ \(in (2d23h|3d0h)\) expires soon +4,3$`, lines[1])
	assert.Contains(t, out, "prod     anonymous@127.0.0.1  sidecar~10.0.0.9~meter-1.grid  3 (behind)  4")
	assert.Contains(t, out, "\nDECISION LOG\nrecords     7 (406 B in 1 segment file)\n")
	assert.Contains(t, out, "checkpoint  signed checkpoint (C2SP tlog-checkpoint): seq 7 ")
	assert.Contains(t, out, "integrity   RFC 6962 Merkle tree verified through seq 7\n")
	assert.Contains(t, out, "indexed     7 of 7 records")

	out, err = runStatus(t, "--server", url, "-o", "json")
	require.NoError(t, err)
	var st server.Status
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	require.Len(t, st.Channels, 1)
	assert.Equal(t, uint64(4), st.Channels[0].Latest.Revision)
	assert.Equal(t, key.KeyID(), st.Channels[0].Latest.KeyID)
	require.Len(t, st.Channels[0].Pollers, 1)
	assert.Equal(t, "sidecar~10.0.0.9~meter-1.grid", st.Channels[0].Pollers[0].Proxy)
	assert.Equal(t, uint64(7), st.DecisionLog.Records)

	out, err = runStatus(t, "--server", url, "--output", "yaml")
	require.NoError(t, err)
	assert.Contains(t, out, "decision_log:\n")
	var sy server.Status
	require.NoError(t, yaml.Unmarshal([]byte(out), &sy), out)
	assert.Equal(t, st.DecisionLog.Head, sy.DecisionLog.Head)
	assert.Equal(t, st.Channels[0].Latest.Digest, sy.Channels[0].Latest.Digest)

	_, err = runStatus(t, "--server", url, "-o", "xml")
	var ee *statusErr
	require.True(t, errors.As(err, &ee), "%v", err)
	assert.Equal(t, exitUsage, ee.code)
	assert.Contains(t, err.Error(), "table, json, yaml, csv")

	out, err = runStatus(t, "--server", url, "-o", "csv")
	require.NoError(t, err)
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 2)
	assert.Equal(t, []string{"prod", "4", key.KeyID()}, rows[1][:3])
	assert.Equal(t, []string{"anonymous@127.0.0.1", "sidecar~10.0.0.9~meter-1.grid", "3", "4"}, rows[1][5:9])
}

func TestStatusExitsTamperedOnABrokenChain(t *testing.T) {
	data := t.TempDir()
	// Signed with the key the distributor then uses, so the edit below
	// meets a checkpoint.
	key, _ := testLogKey(t, data)
	l, err := decisionlog.Open(filepath.Join(data, "decisions"), decisionlog.Options{Key: key})
	require.NoError(t, err)
	for i := range 4 {
		r, err := decisionlog.DecodeRecord(fmt.Appendf(nil, `{"time":"2026-11-23T08:00:0%dZ","decision":"allow","subject":"s%d"}`, i, i))
		require.NoError(t, err)
		_, err = l.Append([]decisionlog.Record{r})
		require.NoError(t, err)
	}
	require.NoError(t, l.Close())
	seg := filepath.Join(data, "decisions", "00000000000000000001.log")
	b, err := os.ReadFile(seg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(seg, []byte(strings.Replace(string(b), `"subject":"s1"`, `"subject":"sX"`, 1)), 0o640))

	url := statusDistributor(t, data, "")
	out, err := runStatus(t, "--server", url)
	var ee *statusErr
	require.True(t, errors.As(err, &ee), "%v", err)
	assert.Equal(t, exitTampered, ee.code)
	assert.Contains(t, err.Error(), "decision log NOT intact at seq 2")
	assert.Contains(t, out, "integrity   BROKEN at seq 2: 00000000000000000001.log line 2: the record's leaf hash differs from the stored tree")
	assert.Contains(t, out, "(no proxy has polled since the distributor started)")
}
