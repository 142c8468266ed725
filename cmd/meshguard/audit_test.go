package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/decisionlog"
	"github.com/meshguard/meshguard/internal/output"
)

// testLogKey writes a checkpoint key for a log under data and returns it
// and the path of its verifier key file.
func testLogKey(t *testing.T, data string) (*decisionlog.Key, string) {
	k, err := decisionlog.LoadOrCreateKey(filepath.Join(data, "checkpoint.key"), "meshguard/decisions")
	require.NoError(t, err)
	return &k, filepath.Join(data, "checkpoint.key.pub")
}

func TestAuditVerifyOffline(t *testing.T) {
	data := t.TempDir()
	key, pub := testLogKey(t, data)
	l, err := decisionlog.Open(filepath.Join(data, "decisions"), decisionlog.Options{Key: key})
	require.NoError(t, err)
	for i := range 5 {
		r, err := decisionlog.DecodeRecord(fmt.Appendf(nil, `{"time":"2026-11-23T08:00:0%dZ","decision":"deny","subject":"spiffe://grid.example/m%d"}`, i, i))
		require.NoError(t, err)
		_, err = l.Append([]decisionlog.Record{r})
		require.NoError(t, err)
	}
	require.NoError(t, l.Close())

	r := runCLI(t, "audit", "verify", "--data", data, "--log-key", pub).ok(t)
	assert.Contains(t, r.stdout, "decision log intact: 5 records, head seq 5")
	assert.Contains(t, r.stdout, "signed checkpoint of 5 records")
	r = runCLI(t, "audit", "verify", "--data", data).ok(t)
	assert.Contains(t, r.stdout, "signed checkpoint not checked: give --log-key")
	r = runCLI(t, "audit", "verify", "--data", data, "--log-key", pub, "-o", "csv").ok(t)
	assert.True(t, strings.HasPrefix(r.stdout, "intact,records,pruned,headSeq,headHash,checkpointSize,checkpointRoot,consistentWith\ntrue,5,0,5,"), r.stdout)

	seg := filepath.Join(data, "decisions", "00000000000000000001.log")
	b, err := os.ReadFile(seg)
	require.NoError(t, err)

	// A crash in the middle of an unacknowledged batch: recoverable, exit 5.
	require.NoError(t, os.WriteFile(seg, append(append([]byte{}, b...), `{"decision":"deny","seq":"`...), 0o640))
	r = runCLI(t, "audit", "verify", "--data", data, "--log-key", pub)
	assert.Equal(t, exitTornTail, r.code)
	assert.Contains(t, r.stderr, "decision log intact up to seq 5")
	assert.Contains(t, r.stderr, "recoverable")
	l, err = decisionlog.Open(filepath.Join(data, "decisions"), decisionlog.Options{Key: key})
	require.NoError(t, err, "the distributor recovers by cutting the torn bytes")
	require.NoError(t, l.Close())
	assert.Contains(t, runCLI(t, "audit", "verify", "--data", data, "--log-key", pub).ok(t).stdout, "decision log intact: 5 records")

	require.NoError(t, os.WriteFile(seg, []byte(strings.Replace(string(b), "spiffe://grid.example/m3", "spiffe://grid.example/mX", 1)), 0o640))
	r = runCLI(t, "audit", "verify", "--data", data, "--log-key", pub)
	assert.Equal(t, exitTampered, r.code)
	assert.Contains(t, r.stderr, "00000000000000000001.log:4: at seq 4: tree.hash does not hold the tree hashes of this record")
	assert.Empty(t, r.stdout)

	assert.Equal(t, exitUsage, runCLI(t, "audit", "verify").code, "neither --data nor --server")
	assert.Equal(t, exitUsage, runCLI(t, "audit", "verify", "--data", data, "--checkpoint", seg).code, "an earlier checkpoint needs --log-key")
}

// FuzzRecordRow: any record the distributor may send gives a row of every
// column or an error, and its table form carries no control character.
func FuzzRecordRow(f *testing.F) {
	for _, s := range []string{`{"seq":1,"rule_ids":["a","b"],"path":"/x"}`, `{"path":"\u001b]0;x\u0007"}`, `{"seq":"1"}`, `[]`, `{"rule_ids":[1,{}]}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		row, err := recordRow([]byte(in))
		if err != nil {
			return
		}
		require.Len(t, row, len(recordColumns))
		var b strings.Builder
		tw := output.NewTableWriter(&b, recordColumns)
		tw.Row(row...)
		require.NoError(t, tw.Flush())
		for _, r := range b.String() {
			require.False(t, r < 0x20 && r != '\n' && r != ' ', "%q in %q", r, b.String())
		}
	})
}
