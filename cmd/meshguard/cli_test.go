package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// cliResult is one command line's outcome.
type cliResult struct {
	stdout, stderr string
	code           int
}

// runCLI runs one command line as main does, on a fresh command tree (so no
// flag value survives from another run), with an empty stdin.
func runCLI(t *testing.T, args ...string) cliResult {
	t.Helper()
	return runCLIStdin(t, "", args...)
}

// runCLIStdin is runCLI with stdin.
func runCLIStdin(t *testing.T, stdin string, args ...string) cliResult {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return cliResult{stdout: out.String(), stderr: errOut.String(), code: code}
}

// ok fails the test unless the command exited 0.
func (r cliResult) ok(t *testing.T) cliResult {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	return r
}
