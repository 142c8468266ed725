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

func TestAuditVerifyOffline(t *testing.T) {
	data := t.TempDir()
	l, err := decisionlog.Open(filepath.Join(data, "decisions"), decisionlog.Options{})
	require.NoError(t, err)
	for i := range 5 {
		r, err := decisionlog.DecodeRecord(fmt.Appendf(nil, `{"time":"2026-11-23T08:00:0%dZ","decision":"deny","subject":"spiffe://grid.example/m%d"}`, i, i))
		require.NoError(t, err)
		_, err = l.Append([]decisionlog.Record{r})
		require.NoError(t, err)
	}
	require.NoError(t, l.Close())

	r := runCLI(t, "audit", "verify", "--data", data).ok(t)
	assert.Contains(t, r.stdout, "decision log intact: 5 records, head seq 5")
	r = runCLI(t, "audit", "verify", "--data", data, "-o", "csv").ok(t)
	assert.True(t, strings.HasPrefix(r.stdout, "intact,records,pruned,headSeq,headHash\ntrue,5,0,5,"), r.stdout)

	seg := filepath.Join(data, "decisions", "00000000000000000001.log")
	b, err := os.ReadFile(seg)
	require.NoError(t, err)

	// A crash in the middle of an unacknowledged batch: recoverable, exit 5.
	require.NoError(t, os.WriteFile(seg, append(append([]byte{}, b...), `{"decision":"deny","hash":"`...), 0o640))
	r = runCLI(t, "audit", "verify", "--data", data)
	assert.Equal(t, exitTornTail, r.code)
	assert.Contains(t, r.stderr, "decision log intact up to seq 5")
	assert.Contains(t, r.stderr, "recoverable")
	l, err = decisionlog.Open(filepath.Join(data, "decisions"), decisionlog.Options{})
	require.NoError(t, err, "the distributor recovers by cutting the torn bytes")
	require.NoError(t, l.Close())
	assert.Contains(t, runCLI(t, "audit", "verify", "--data", data).ok(t).stdout, "decision log intact: 5 records")

	require.NoError(t, os.WriteFile(seg, []byte(strings.Replace(string(b), "spiffe://grid.example/m3", "spiffe://grid.example/mX", 1)), 0o640))
	r = runCLI(t, "audit", "verify", "--data", data)
	assert.Equal(t, exitTampered, r.code)
	assert.Contains(t, r.stderr, "00000000000000000001.log:4: at seq 4: hash mismatch")
	assert.Empty(t, r.stdout)

	assert.Equal(t, exitUsage, runCLI(t, "audit", "verify").code, "neither --data nor --server")
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
