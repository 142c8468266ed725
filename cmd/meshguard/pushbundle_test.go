package main

import (
	"encoding/csv"
	"encoding/json"
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

func TestPushBundleAndAuditVerifyServer(t *testing.T) {
	key, set, err := bundle.GenerateKey("ed25519")
	require.NoError(t, err)
	dir := t.TempDir()
	keys, _ := json.Marshal(set)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "keys.jwks"), keys, 0o644))
	url, stop := serveStoppable(t, filepath.Join(dir, "data"), filepath.Join(dir, "keys.jwks"))

	b, err := bundle.Pack(map[string][]byte{"policies/p.yaml": []byte(openPolicy)},
		bundle.PackOptions{BuildOptions: bundle.BuildOptions{Revision: 3, Expires: time.Now().Add(time.Hour), Key: key, Scope: []string{"prod"}}})
	require.NoError(t, err)
	file := filepath.Join(dir, "p.bundle")
	require.NoError(t, os.WriteFile(file, b, 0o644))

	r := runCLI(t, "push", "bundle", file, "--server", url, "--channel", "prod").ok(t)
	assert.Contains(t, r.stdout, "published prod revision 3 sha256:")
	assert.Contains(t, r.stderr, "warning: bundle revision 3 expires at", "a bundle valid for an hour more")

	r = runCLI(t, "push", "bundle", file, "--server", url, "--channel", "prod")
	assert.Equal(t, exitConflict, r.code, "same revision again: 409")
	assert.Contains(t, r.stderr, "409")

	// From stdin, as JSON: the next revision.
	b4, err := bundle.Pack(map[string][]byte{"policies/p.yaml": []byte(openPolicy)},
		bundle.PackOptions{BuildOptions: bundle.BuildOptions{Revision: 4, Expires: time.Now().Add(30 * 24 * time.Hour), Key: key, Scope: []string{"prod"}}})
	require.NoError(t, err)
	r = runCLIStdin(t, string(b4), "push", "bundle", "-", "--server", url, "--channel", "prod", "-o", "json").ok(t)
	var pub publishResult
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &pub))
	assert.Equal(t, publishResult{Channel: "prod", Revision: 4, Digest: pub.Digest, Expires: pub.Expires}, pub)
	assert.Regexp(t, `^sha256:[0-9a-f]{64}$`, pub.Digest)
	assert.Empty(t, r.stderr, "no expiry warning for a month")

	// A bundle the distributor does not verify (another key): 422, a failure.
	other, _, err := bundle.GenerateKey("ed25519")
	require.NoError(t, err)
	b5, err := bundle.Pack(map[string][]byte{"policies/p.yaml": []byte(openPolicy)},
		bundle.PackOptions{BuildOptions: bundle.BuildOptions{Revision: 5, Expires: time.Now().Add(time.Hour), Key: other, Scope: []string{"prod"}}})
	require.NoError(t, err)
	r = runCLIStdin(t, string(b5), "push", "bundle", "-", "--server", url, "--channel", "prod")
	assert.Equal(t, exitFailed, r.code, r.stderr)
	assert.Contains(t, r.stderr, "422")

	r = runCLI(t, "audit", "verify", "--server", url, "--log-key", filepath.Join(dir, "data", "checkpoint.key.pub")).ok(t)
	assert.Contains(t, r.stdout, "decision log intact: 0 records")

	// Decision records with hostile fields, queried in every format.
	recs := `[{"time":"2026-11-23T08:00:00Z","decision":"deny","rule_ids":["a/b","c/d"],"subject":"spiffe://grid.example/ns/x/sa/y","method":"GET","path":"/v1/\u001b[31mred","bundle_revision":3},
{"time":"2026-11-23T08:00:01Z","decision":"allow","subject":"=HYPERLINK(\"http://evil\")","method":"GET","path":"/v1/ok"}]`
	resp, err := http.Post(url+"/v1/decisions", "application/json", strings.NewReader(recs))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	r = runCLI(t, "audit", "query", "--server", url).ok(t)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 2, "NDJSON: one record a line")
	var rec map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &rec))
	assert.Equal(t, "/v1/\x1b[31mred", rec["path"], "json keeps the value as stored")
	table := runCLI(t, "audit", "query", "--server", url, "-o", "table").ok(t).stdout
	assert.Contains(t, table, "SEQ  TIME")
	assert.Contains(t, table, "a/b c/d")
	assert.Contains(t, table, `/v1/\x1b[31mred`, "no escape sequence reaches the terminal")
	assert.NotContains(t, table, "\x1b")
	csvOut := runCLI(t, "audit", "query", "--server", url, "-o", "csv", "--decision", "allow").ok(t).stdout
	rows, err := csv.NewReader(strings.NewReader(csvOut)).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 2)
	assert.Equal(t, recordColumns, rows[0])
	assert.Equal(t, `'=HYPERLINK("http://evil")`, rows[1][4], "a formula is text in a spreadsheet")
	yamlOut := runCLI(t, "audit", "query", "--server", url, "-o", "yaml").ok(t).stdout
	assert.Equal(t, 1, strings.Count(yamlOut, "---\n"))
	assert.Equal(t, exitUsage, runCLI(t, "audit", "query", "--server", url, "--decision", "maybe").code)

	// Nothing listens: not a usage error, not a failure of the bundle.
	stop()
	r = runCLI(t, "push", "bundle", file, "--server", url, "--channel", "prod")
	assert.Equal(t, exitError, r.code, r.stderr)
}
