package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/distributor/decisionlog"
	"github.com/meshguard/meshguard/distributor/server"
	"github.com/meshguard/meshguard/internal/buildinfo"
	"github.com/meshguard/meshguard/internal/contract"
	"github.com/meshguard/meshguard/internal/modsource"
	"github.com/meshguard/meshguard/internal/ociref"
	"github.com/meshguard/meshguard/policies"
	"github.com/meshguard/meshguard/policies/bundle"
)

// verbs lists every runnable leaf of the tree by its path ("policy check").
func verbs(root *cobra.Command) map[string]*cobra.Command {
	out := map[string]*cobra.Command{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if !c.HasSubCommands() && c.Runnable() {
			out[strings.TrimPrefix(c.CommandPath(), "meshguard ")] = c
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	return out
}

// TestUnknownSubVerbs: a typo under any group exits 2 with the closest
// verb, never a help page with exit 0; a bare group prints its help.
func TestUnknownSubVerbs(t *testing.T) {
	tests := []struct {
		args    []string
		code    int
		stderr  string
		hasHelp bool
	}{
		{[]string{"policy", "tset"}, exitUsage, `unknown command "tset" for "meshguard policy" (did you mean "test"?)`, false},
		{[]string{"tset"}, exitUsage, `unknown command "tset" for "meshguard"`, false},
		{[]string{"render", "istoi"}, exitUsage, `(did you mean "istio"?)`, false},
		{[]string{"push", "bundel", "x"}, exitUsage, `unknown command "bundel" for "meshguard push"`, false},
		{[]string{"pull", "modul"}, exitUsage, `unknown command "modul"`, false},
		{[]string{"keys", "gen"}, exitUsage, `unknown command "gen"`, false},
		{[]string{"audit", "verfy"}, exitUsage, `(did you mean "verify"?)`, false},
		{[]string{"policy"}, exitOK, "", true},
		{[]string{"render"}, exitOK, "", true},
		{[]string{}, exitOK, "", true},
		{[]string{"policy", "check", "--nope", "x"}, exitUsage, "unknown flag: --nope", false},
		{[]string{"policy", "verify"}, exitUsage, "accepts 1 arg(s), received 0", false},
		{[]string{"version", "extra"}, exitUsage, `unknown command "extra" for "meshguard version"`, false},
		{[]string{"serve", "--log-format", "xml"}, exitUsage, `"xml" is not one of text, json`, false},
		{[]string{"run", "--envoy", "envoy-1.20", "--module", "x"}, exitUsage, `"envoy-1.20" is not one of envoy-1.33, envoy-latest`, false},
		{[]string{"push", "bundle", "x"}, exitUsage, `required flag(s) "server" not set`, false},
		{[]string{"serve", "--verify-keys", "-"}, exitUsage, "--verify-keys -: the distributor reads its files again", false},
		{[]string{"serve", "--config", "/nonexistent/meshguard.yaml"}, exitUsage, "no such file", false},
		{[]string{"serve", "--listen", "0.0.0.0:0", "--insecure-http"}, exitUsage, "", false},
		{[]string{"run"}, exitUsage, "--module is required", false},
		{[]string{"run", "--module", "/nonexistent.wasm"}, exitUsage, "no such file", false},
		{[]string{"run", "--module", "oci://127.0.0.1:1"}, exitUsage, "no repository", false},
		{[]string{"run", "--module", "x.wasm", "--route", "v1=http://x"}, exitUsage, "want /PREFIX=http://host:port", false},
		{[]string{"run", "--module", "x.wasm", "--cluster", "authz"}, exitUsage, "want NAME=http://host:port", false},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runCLI(t, tc.args...)
			assert.Equal(t, tc.code, r.code, "%s", r.stderr)
			assert.Contains(t, r.stderr, tc.stderr)
			if tc.code == exitUsage {
				assert.Contains(t, r.stderr, "--help' for usage.")
			}
			if tc.hasHelp {
				assert.Contains(t, r.stdout, "Available Commands:")
			}
		})
	}
}

// TestEveryDataVerbTakesOutput: every verb that prints data has -o with
// the formats it speaks, each completable; the ones that do not print
// data are the servers.
func TestEveryDataVerbTakesOutput(t *testing.T) {
	noData := map[string]bool{"run": true, "serve": true}
	want := map[string][]string{
		"policy eval":   {"json", "yaml", "table", "csv"},
		"policy test":   testFormats,
		"audit query":   {"json", "yaml", "table", "csv"},
		"render istio":  {"yaml", "json"},
		"render kuma":   {"yaml", "json"},
		"render envoy":  {"yaml", "json"},
		"default other": {"table", "json", "yaml", "csv"},
	}
	root := newRootCmd()
	all := verbs(root)
	for _, name := range []string{"policy check", "policy eval", "policy test", "policy bundle", "policy verify", "keys generate",
		"push bundle", "push module", "pull module", "render istio", "render kuma", "render envoy", "audit verify", "audit query",
		"check-module", "version", "run", "serve"} {
		require.Contains(t, all, name)
	}
	for name, c := range all {
		if strings.HasPrefix(name, "completion") || name == "help" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			f := c.Flags().Lookup("output")
			if noData[name] {
				assert.Nil(t, f)
				return
			}
			require.NotNil(t, f, "%s prints data: it takes -o", name)
			assert.Equal(t, "o", f.Shorthand)
			formats, ok := want[name]
			if !ok {
				formats = want["default other"]
			}
			assert.Equal(t, formats, f.Value.(enumValue).Values())
			comp := runCLI(t, append(append([]string{"__complete"}, strings.Fields(name)...), "-o", "")...).ok(t)
			assert.Equal(t, strings.Join(formats, "\n")+"\n:4\n", comp.stdout)
		})
	}
}

// TestEnumCompletion: enum flags complete their words (what shells show).
func TestEnumCompletion(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"run", "--envoy", ""}, []string{"envoy-1.33", "envoy-latest"}},
		{[]string{"check-module", "--envoy", ""}, []string{"envoy-1.33", "envoy-latest"}},
		{[]string{"run", "--failure-policy", ""}, []string{"FAIL_CLOSED", "FAIL_OPEN", "FAIL_RELOAD"}},
		{[]string{"run", "--log-level", ""}, []string{"trace", "debug", "info", "warn", "error", "critical"}},
		{[]string{"render", "istio", "--fail-strategy", ""}, []string{"FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"}},
		{[]string{"render", "istio", "--phase", ""}, []string{"AUTHN", "AUTHZ", "STATS"}},
		{[]string{"render", "istio", "--match-mode", ""}, []string{"CLIENT", "CLIENT_AND_SERVER", "SERVER"}},
		{[]string{"render", "istio", "--distributor-tls", ""}, []string{"DISABLE", "ISTIO_MUTUAL", "SIMPLE"}},
		{[]string{"render", "istio", "--image-pull-policy", ""}, []string{"Always", "IfNotPresent"}},
		{[]string{"render", "kuma", "--mode", ""}, []string{"enforce", "dry-run"}},
		{[]string{"policy", "eval", "--paths", ""}, []string{"refuse", "normalize", "merge-slashes"}},
		{[]string{"push", "module", "--format", ""}, []string{"oci-image", "docker", "oci-artifact"}},
		{[]string{"keys", "generate", "--alg", ""}, []string{"ed25519", "es256"}},
		{[]string{"audit", "query", "--decision", ""}, contract.RecordDecisions},
		{[]string{"serve", "--log-format", ""}, []string{"text", "json"}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := runCLI(t, append([]string{"__complete"}, tc.args...)...).ok(t)
			assert.Equal(t, strings.Join(tc.want, "\n")+"\n:4\n", r.stdout)
		})
	}
	// The shells' scripts exist.
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		assert.Contains(t, runCLI(t, "completion", sh).ok(t).stdout, "meshguard")
	}
}

// TestExitCodeClassification: the one place errors become codes.
func TestExitCodeClassification(t *testing.T) {
	tests := []struct {
		name string
		err  error
		code int
	}{
		{"nil", nil, exitOK},
		{"usage mark", usagef("--input is required"), exitUsage},
		{"failure mark", failedf("decision: deny (--fail)"), exitFailed},
		{"the outermost mark wins", usage(failedf("x")), exitUsage},
		{"409", fmt.Errorf("publish: %w", &server.APIError{Code: http.StatusConflict}), exitConflict},
		{"422", fmt.Errorf("publish: %w", &server.APIError{Code: http.StatusUnprocessableEntity}), exitFailed},
		{"503", &server.APIError{Code: http.StatusServiceUnavailable}, exitError},
		{"403", &server.APIError{Code: http.StatusForbidden}, exitError},
		{"broken chain", fmt.Errorf("decision log NOT intact: %w", &decisionlog.ChainError{File: "1.log", Line: 4, Problem: "hash mismatch"}), exitTampered},
		{"torn tail", fmt.Errorf("intact up to seq 5: %w", &decisionlog.TornTailError{File: "1.log", Offset: 10, Bytes: 27}), exitTornTail},
		{"policy errors", policies.ErrorList{{Msg: "bad"}}, exitFailed},
		{"bundle signature", fmt.Errorf("b: %w", bundle.ErrSignature), exitFailed},
		{"bundle rollback", bundle.ErrRollback, exitFailed},
		{"bundle expired", bundle.ErrExpired, exitFailed},
		{"a reference that would go to Docker Hub", fmt.Errorf("x: %w", ociref.ErrReference), exitUsage},
		{"a module URL without its sha256", modsource.ErrNoDigest, exitUsage},
		{"a module that is not the pinned one", fmt.Errorf("x: %w", modsource.ErrDigest), exitFailed},
		{"anything else", errors.New("connection refused"), exitError},
		{"a cancelled run", context.Canceled, exitError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.code, exitCode(tc.err))
		})
	}
	// The table lists each code once, in order.
	for i, e := range exitCodes {
		assert.Equal(t, i, e.code)
	}
}

// TestVersion: the version verb and --version say the same build.
func TestVersion(t *testing.T) {
	bi := buildinfo.Get()
	assert.Equal(t, "meshguard "+bi.String()+"\n", runCLI(t, "--version").ok(t).stdout)
	table := runCLI(t, "version").ok(t).stdout
	assert.Equal(t, fmt.Sprintf("meshguard %s\ncommit:  %s\nbuilt:   %s\ngo:      %s\n", bi.Version, bi.Commit, bi.Date, bi.GoVersion), table)
	var got buildinfo.Info
	require.NoError(t, json.Unmarshal([]byte(runCLI(t, "version", "-o", "json").ok(t).stdout), &got))
	assert.Equal(t, bi, got)
	assert.Equal(t, "version,commit,date,goVersion\n"+strings.Join([]string{bi.Version, bi.Commit, bi.Date, bi.GoVersion}, ",")+"\n",
		runCLI(t, "version", "-o", "csv").ok(t).stdout)
}

// TestRootsAreFresh: two trees share no flag state, so a test (or a
// library user) can run many command lines in one process.
func TestRootsAreFresh(t *testing.T) {
	a, b := newRootCmd(), newRootCmd()
	a.SetArgs([]string{"policy", "eval", "--fail", "--paths", "normalize", "--input", "/nonexistent", "x"})
	a.SetOut(io.Discard)
	a.SetErr(io.Discard)
	_ = a.Execute()
	fa, _, err := a.Find([]string{"policy", "eval"})
	require.NoError(t, err)
	fb, _, err := b.Find([]string{"policy", "eval"})
	require.NoError(t, err)
	assert.Equal(t, "normalize", fa.Flags().Lookup("paths").Value.String())
	assert.Equal(t, "refuse", fb.Flags().Lookup("paths").Value.String())
	assert.False(t, fb.Flags().Lookup("fail").Changed)
}
