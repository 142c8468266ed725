package main

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/meshguard/meshguard/distributor/decisionlog"
	"github.com/meshguard/meshguard/distributor/server"
	"github.com/meshguard/meshguard/internal/modsource"
	"github.com/meshguard/meshguard/internal/ociref"
	"github.com/meshguard/meshguard/policies"
	"github.com/meshguard/meshguard/policies/bundle"
)

// Exit codes, one table for every verb. exitCode is the only place an
// error becomes a code; `meshguard --help` prints the table and the README
// carries it (TestExitCodeTableInREADME keeps them equal).
const (
	exitOK       = 0
	exitFailed   = 1
	exitUsage    = 2
	exitConflict = 3
	exitTampered = 4
	exitTornTail = 5
	exitError    = 6
)

// exitCodes is the table as people read it.
var exitCodes = []struct {
	code    int
	meaning string
}{
	{exitOK, "success"},
	{exitFailed, "policy or verification failure: policy errors, failing policy tests, a deny with --fail, warnings with --fail-on-warnings, a bundle or module that does not verify (also a bundle the distributor refuses, 422), a module an Envoy release would refuse"},
	{exitUsage, "usage: unknown verb or flag, a bad or missing argument, an input that cannot be read or parsed (also a registry entry the distributor refuses as invalid, 400)"},
	{exitConflict, "conflict: the channel already has this bundle revision or a later one (409); a registry entry exists already (409) or changed since its ETag (412)"},
	{exitTampered, "tampering: the decision log does not verify (a record edited, removed or reordered, truncation, a signed checkpoint or proof that does not verify, a log that does not extend an earlier checkpoint)"},
	{exitTornTail, "interrupted write: the decision log is intact, then ends in a batch a crash cut short before it was acknowledged (the distributor cuts it off when it starts)"},
	{exitError, "any other error: the network, the distributor or registry (other answers), writing output"},
}

// exitCodeHelp is the table for --help.
func exitCodeHelp() string {
	var b strings.Builder
	b.WriteString("Exit codes (every verb):\n")
	for _, e := range exitCodes {
		fmt.Fprintf(&b, "  %d  %s\n", e.code, e.meaning)
	}
	return b.String()
}

// codeError gives an error its exit code where the code is known from the
// context, not the error's type: an unreadable input file is a usage error,
// a failing policy test a failure.
type codeError struct {
	code int
	err  error
}

func (e *codeError) Error() string { return e.err.Error() }
func (e *codeError) Unwrap() error { return e.err }

// usage marks err as a usage error (exit 2).
func usage(err error) error {
	if err == nil {
		return nil
	}
	return &codeError{code: exitUsage, err: err}
}

// usagef is usage(fmt.Errorf(...)).
func usagef(format string, a ...any) error { return usage(fmt.Errorf(format, a...)) }

// failed marks err as a policy or verification failure (exit 1).
func failed(err error) error {
	if err == nil {
		return nil
	}
	return &codeError{code: exitFailed, err: err}
}

// failedf is failed(fmt.Errorf(...)).
func failedf(format string, a ...any) error { return failed(fmt.Errorf(format, a...)) }

// failures are the libraries' verification errors: the bundle or module
// is bad, not the command line.
var failures = []error{bundle.ErrFormat, bundle.ErrSignature, bundle.ErrFileSet, bundle.ErrExpired,
	bundle.ErrNotYetValid, bundle.ErrScope, bundle.ErrRollback, modsource.ErrDigest}

// usages are the libraries' errors about what the command line says.
var usages = []error{ociref.ErrReference, modsource.ErrNoDigest}

// exitCode classifies err: an explicit mark (usage, failed) first, then the
// libraries' typed errors, else exitError.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ce *codeError
	if errors.As(err, &ce) {
		return ce.code
	}
	var api *server.APIError
	if errors.As(err, &api) {
		switch api.Code {
		case http.StatusConflict, http.StatusPreconditionFailed:
			return exitConflict
		case http.StatusUnprocessableEntity:
			return exitFailed
		}
		return exitError
	}
	var torn *decisionlog.TornTailError
	if errors.As(err, &torn) {
		return exitTornTail
	}
	var chain *decisionlog.ChainError
	if errors.As(err, &chain) || errors.Is(err, decisionlog.ErrInconsistent) || errors.Is(err, decisionlog.ErrCheckpoint) {
		return exitTampered
	}
	var list policies.ErrorList
	if errors.As(err, &list) {
		return exitFailed
	}
	for _, f := range failures {
		if errors.Is(err, f) {
			return exitFailed
		}
	}
	for _, u := range usages {
		if errors.Is(err, u) {
			return exitUsage
		}
	}
	return exitError
}
