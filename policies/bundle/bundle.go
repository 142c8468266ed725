// Package bundle builds and verifies signed meshguard policy bundles.
//
// A bundle is one deterministic tar.gz file (fixed mtime, uid, gid and mode,
// entries sorted, gzip header without name or mtime) holding:
//
//	.manifest           JSON Manifest: version, revision, created, expires,
//	                    scope, kid and the sha256 of every other file
//	.signatures.json    {"signatures":["<compact JWS>"]}; the JWS payload is
//	                    the exact bytes of .manifest
//	compiled/...        the policies compiled for proxies (an engine image,
//	                    see policies.UnmarshalEngine), optional
//	policies/...        policy-language files (YAML)
//	data/...            data files (revocation lists, JWT key sets, ...)
//
// Entries are sorted, so compiled/ comes right after the manifest and the
// signatures: a verifier that needs only the compiled form (VerifyOptions.
// Subset) stops reading there and never inflates or hashes the sources.
//
// The JWS protected header holds only alg, kid and typ. Accepted algorithms
// are EdDSA (Ed25519 keys) and ES256 (P-256 keys); the header alg must be the
// one the key's type implies, so alg confusion (none, HMAC with a public key
// as secret, ES256 over an Ed25519 kid) is rejected before any crypto runs.
//
// Verify checks, in order: size limits, tar structure and path sanity,
// signature, manifest (must equal the signed payload byte for byte), exact
// file set and hashes, validity window, scope and revision (anti-rollback).
// The package builds for GOOS=wasip1 so the guard filter verifies bundles
// itself.
package bundle

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"
)

// FormatVersion is the manifest format version this package writes and reads.
const FormatVersion = 1

// MediaType is the media type of a bundle file.
const MediaType = "application/vnd.meshguard.bundle.v1+tar+gzip"

// Reserved entry names.
const (
	ManifestName   = ".manifest"
	SignaturesName = ".signatures.json"
)

// JWSType is the typ header of bundle signatures.
const JWSType = "meshguard-bundle+jws"

// Roots are the only top-level directories a bundle's files may live under.
var Roots = []string{"compiled/", "policies/", "data/"}

// Default limits; VerifyOptions.Limits overrides them when set.
const (
	DefaultMaxCompressed   = 16 << 20
	DefaultMaxUncompressed = 64 << 20
	DefaultMaxFiles        = 4096
	// DefaultClockSkew is how far in the future Created may be.
	DefaultClockSkew = 5 * time.Minute
	maxPathLen       = 512
)

// Sentinel errors. Every error from Verify wraps exactly one of ErrFormat,
// ErrSignature, ErrFileSet, ErrExpired, ErrNotYetValid, ErrScope or
// ErrRollback (ErrTooLarge and ErrUnknownKey wrap ErrFormat and ErrSignature).
var (
	// ErrFormat: the file is not a well-formed bundle (gzip, tar, paths,
	// entry types, manifest syntax).
	ErrFormat = errors.New("malformed bundle")
	// ErrTooLarge: a size or count limit was exceeded.
	ErrTooLarge = wrapSentinel(ErrFormat, "bundle too large")
	// ErrSignature: the signature is missing, invalid, uses a forbidden or
	// mismatched algorithm, or does not cover this manifest.
	ErrSignature = errors.New("bad bundle signature")
	// ErrUnknownKey: the signature's kid is not in the key set.
	ErrUnknownKey = wrapSentinel(ErrSignature, "unknown signing key")
	// ErrFileSet: the files differ from the manifest (missing, extra or
	// hash mismatch).
	ErrFileSet = errors.New("bundle files do not match the manifest")
	// ErrExpired: the bundle's expiry time has passed.
	ErrExpired = errors.New("bundle expired")
	// ErrNotYetValid: the bundle was created in the future (beyond skew).
	ErrNotYetValid = errors.New("bundle not yet valid")
	// ErrScope: the bundle is not meant for this audience.
	ErrScope = errors.New("bundle scope mismatch")
	// ErrRollback: the revision is not above the last accepted one.
	ErrRollback = errors.New("bundle revision rollback")
)

type sentinel struct {
	parent error
	msg    string
}

func (s *sentinel) Error() string { return s.msg }
func (s *sentinel) Unwrap() error { return s.parent }

func wrapSentinel(parent error, msg string) error { return &sentinel{parent: parent, msg: msg} }

// Manifest describes a bundle; it is the signed payload.
type Manifest struct {
	// Version is the format version (FormatVersion).
	Version int `json:"version"`
	// Revision increases with every published bundle; verifiers refuse a
	// revision at or below the last one they accepted.
	Revision uint64 `json:"revision"`
	// Created and Expires bound the validity window (UTC, whole seconds).
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	// Scope lists the audiences (e.g. mesh or channel names) the bundle is
	// for; empty means any.
	Scope []string `json:"scope"`
	// KeyID is the kid of the signing key; it must equal the JWS kid.
	KeyID string `json:"kid"`
	// Files maps every file's path to its lowercase hex sha256.
	Files map[string]string `json:"files"`
}

// Bundle is a verified bundle.
type Bundle struct {
	Manifest Manifest
	// Files holds the policy and data files (not .manifest or
	// .signatures.json), keyed by path.
	Files map[string][]byte
	// Digest is "sha256:<hex>" of the bundle file bytes.
	Digest string
}

// Limits bounds what Verify reads. Zero fields take the defaults.
type Limits struct {
	// MaxCompressed bounds the bundle file's size.
	MaxCompressed int64
	// MaxUncompressed bounds the decompressed tar stream (headers, padding
	// and contents), so a gzip bomb stops there.
	MaxUncompressed int64
	// MaxFiles bounds the policy and data files (not counting .manifest and
	// .signatures.json).
	MaxFiles int
}

func (l Limits) withDefaults() Limits {
	if l.MaxCompressed <= 0 {
		l.MaxCompressed = DefaultMaxCompressed
	}
	if l.MaxUncompressed <= 0 {
		l.MaxUncompressed = DefaultMaxUncompressed
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	return l
}

func digestOf(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}
