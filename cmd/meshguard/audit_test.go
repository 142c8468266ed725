package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/decisionlog"
)

// runDistCLI runs the CLI with the flags of the distributor verbs reset
// (cobra keeps flag values between executions in one process).
func runDistCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	for _, parent := range []*cobra.Command{auditCmd, pushCmd} {
		for _, c := range parent.Commands() {
			c.Flags().VisitAll(func(f *pflag.Flag) {
				if f.Value.Type() != "stringSlice" && f.Value.Type() != "stringArray" {
					_ = f.Value.Set(f.DefValue)
				}
				f.Changed = false
			})
		}
	}
	var out bytes.Buffer
	rootCmd.SetOut(&out)
	rootCmd.SetErr(&out)
	rootCmd.SetArgs(args)
	err := rootCmd.Execute()
	return out.String(), err
}

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

	out, err := runDistCLI(t, "audit", "verify", "--data", data)
	require.NoError(t, err)
	assert.Contains(t, out, "decision log intact: 5 records, head seq 5")

	seg := filepath.Join(data, "decisions", "00000000000000000001.log")
	b, err := os.ReadFile(seg)
	require.NoError(t, err)

	// A crash in the middle of an unacknowledged batch: recoverable, exit 4.
	require.NoError(t, os.WriteFile(seg, append(append([]byte{}, b...), `{"decision":"deny","hash":"`...), 0o640))
	_, err = runDistCLI(t, "audit", "verify", "--data", data)
	var torn *exitError
	require.True(t, errors.As(err, &torn), "%v", err)
	assert.Equal(t, 4, torn.code)
	assert.Contains(t, err.Error(), "decision log intact up to seq 5")
	assert.Contains(t, err.Error(), "recoverable")
	l, err = decisionlog.Open(filepath.Join(data, "decisions"), decisionlog.Options{})
	require.NoError(t, err, "the distributor recovers by cutting the torn bytes")
	require.NoError(t, l.Close())
	out, err = runDistCLI(t, "audit", "verify", "--data", data)
	require.NoError(t, err)
	assert.Contains(t, out, "decision log intact: 5 records")
	require.NoError(t, os.WriteFile(seg, []byte(strings.Replace(string(b), "spiffe://grid.example/m3", "spiffe://grid.example/mX", 1)), 0o640))
	_, err = runDistCLI(t, "audit", "verify", "--data", data)
	var ee *exitError
	require.True(t, errors.As(err, &ee), "%v", err)
	assert.Equal(t, 3, ee.code)
	assert.Contains(t, err.Error(), "00000000000000000001.log:4: at seq 4: hash mismatch")
}
