// Package bundle is the one package that knows what a meshguard policy
// bundle holds: Pack checks and compiles policies, adds the engine image
// and signs; Verify checks a bundle; Open also checks that its image is
// what its sources compile to (the distributor at publish, `meshguard
// policy verify`); Load returns the engine proxies enforce (the guard
// filter, `meshguard policy eval --bundle`); Keeper is the anti-rollback
// rule for a series of revisions.
//
// A bundle is one deterministic tar.gz file (fixed mtime, uid, gid and mode,
// entries sorted, gzip header without name or mtime) holding:
//
//	.manifest           JSON Manifest: version, revision, created, expires,
//	                    scope, kid and the sha256 of every other file
//	.signatures.json    {"signatures":["<compact JWS>"]}; the JWS payload is
//	                    the exact bytes of .manifest
//	compiled/engine.bin the policies compiled for proxies (ImageFile, an
//	                    engine image, see policies.UnmarshalEngine);
//	                    proxies load nothing else
//	policies/...        the policy-language files (YAML) it is compiled from
//	data/...            data files the policy language does not read
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
// A registry bundle (channel <channel>.registry, signed by the
// distributor's registry key) has the same format; its engine image may
// hold only DevicePolicy, VersionPolicy and Revocations content
// (policies.Engine.RegistryScope): PackRegistry, OpenRegistry and
// verify.LoadRegistry refuse more with ErrRegistryScope. See
// policies/README.md, "Registry-derived content".
//
// Verify checks, in order: size limits, tar structure and path sanity,
// signature, manifest (must equal the signed payload byte for byte), exact
// file set and hashes, validity window, scope and revision (anti-rollback).
// The checks, Load and Keeper live in package bundle/verify, which needs
// no JOSE library or YAML parser and is what the guard filter (GOOS=wasip1)
// links; this package adds packing, signing, the image check and key
// management on jwx and the policy-language front end. The names below
// re-export that package, so native code needs this one only.
package bundle

import (
	"github.com/meshguard/meshguard/policies/bundle/verify"
)

// FormatVersion is the manifest format version this package writes and reads.
const FormatVersion = verify.FormatVersion

// MediaType is the media type of a bundle file.
const MediaType = verify.MediaType

// Reserved entry names.
const (
	ManifestName   = verify.ManifestName
	SignaturesName = verify.SignaturesName
)

// JWSType is the typ header of bundle signatures.
const JWSType = verify.JWSType

// The directories a bundle's files live under, and the engine image.
const (
	CompiledDir = verify.CompiledDir
	SourcesDir  = verify.SourcesDir
	DataDir     = verify.DataDir
	ImageFile   = verify.ImageFile
)

// Roots are the only top-level directories a bundle's files may live under.
var Roots = verify.Roots

// Default limits; VerifyOptions.Limits overrides them when set.
const (
	DefaultMaxCompressed   = verify.DefaultMaxCompressed
	DefaultMaxUncompressed = verify.DefaultMaxUncompressed
	DefaultMaxFiles        = verify.DefaultMaxFiles
	// DefaultClockSkew is how far in the future Created may be.
	DefaultClockSkew = verify.DefaultClockSkew
)

// Sentinel errors (the same values as package verify's). Every error from
// Verify wraps exactly one of ErrFormat, ErrSignature, ErrFileSet,
// ErrExpired, ErrNotYetValid, ErrScope or ErrRollback (ErrTooLarge and
// ErrUnknownKey wrap ErrFormat and ErrSignature).
var (
	ErrFormat      = verify.ErrFormat
	ErrTooLarge    = verify.ErrTooLarge
	ErrSignature   = verify.ErrSignature
	ErrUnknownKey  = verify.ErrUnknownKey
	ErrFileSet     = verify.ErrFileSet
	ErrExpired     = verify.ErrExpired
	ErrNotYetValid = verify.ErrNotYetValid
	ErrScope       = verify.ErrScope
	ErrRollback    = verify.ErrRollback
	ErrNoImage     = verify.ErrNoImage
	ErrBadImage    = verify.ErrBadImage
	// ErrRegistryScope: a registry bundle holds more than registry-derived
	// content (it wraps ErrScope).
	ErrRegistryScope = verify.ErrRegistryScope
)

// Manifest describes a bundle; it is the signed payload.
type Manifest = verify.Manifest

// Bundle is a verified bundle.
type Bundle = verify.Bundle

// Policy is a loaded bundle: its engine and manifest.
type Policy = verify.Policy

// Keeper is the anti-rollback rule for a series of bundles.
type Keeper = verify.Keeper

// NewKeeper returns a keeper whose floor is the last revision accepted
// before it (see verify.NewKeeper).
func NewKeeper(floor uint64) *Keeper { return verify.NewKeeper(floor) }

// Limits bounds what Verify reads. Zero fields take the defaults.
type Limits = verify.Limits

func checkPath(name string) error { return verify.CheckPath(name) }

// signatures is the .signatures.json document.
type signatures = verify.Signatures
