// Package contract declares, once, what crosses the wasm line and the
// network between meshguard's parts: the distributor's HTTP paths, the
// decision record the guard filter writes and the distributor stores, and
// the body of the guard's local replies. The guard filter (GOOS=wasip1),
// the distributor, the CLI and the examples import it; it is standard
// library only. The guard's configuration schema, the other document that
// crosses the wasm line, is package filters/guard/config, which takes its
// defaults from here.
package contract

import "time"

// Distributor HTTP API paths.
const (
	// BundlesPath: GET and POST BundlesPath/{channel}, GET
	// BundlesPath/{channel}/revisions[/{rev}].
	BundlesPath = "/v1/bundles"
	// DecisionsPath: POST a JSON array of Records (or ndjson), GET a query.
	DecisionsPath = "/v1/decisions"
	// DecisionsHeadPath is the decision log's head (size and tree root).
	DecisionsHeadPath = DecisionsPath + "/head"
	// DecisionsLogPath is the decision log export (ndjson, the stored
	// lines that are the Merkle tree's leaves).
	DecisionsLogPath = DecisionsPath + "/log"
	// DecisionsCheckpointPath: GET the latest signed checkpoint (a C2SP
	// tlog-checkpoint note), POST to sign one now.
	DecisionsCheckpointPath = DecisionsPath + "/checkpoint"
	// DecisionsKeyPath is the checkpoint verifier key (pin it out of band).
	DecisionsKeyPath = DecisionsCheckpointPath + "/key"
	// DecisionsProofPath: GET DecisionsProofPath/{seq}?size=N, the
	// inclusion proof of a record in the tree of N records.
	DecisionsProofPath = DecisionsPath + "/proof"
	// DecisionsConsistencyPath: GET ?from=M&size=N, the consistency proof
	// of the tree of M records with the tree of N.
	DecisionsConsistencyPath = DecisionsPath + "/consistency"
)

// ChannelPath is the path of a bundle channel (channel names never need
// escaping: [a-z0-9][a-z0-9._-]*).
func ChannelPath(channel string) string { return BundlesPath + "/" + channel }

// DecisionHeader is the default response header naming a decision's
// record (guard config decisionHeader).
const DecisionHeader = "x-meshguard-decision"

// Headers of the guard's bundle poll: which proxy polls (its xds.node.id)
// and which revision it enforces (0 for none), shown by the distributor's
// console and `meshguard status` beside the poller's authenticated identity.
const (
	ProxyHeader     = "x-meshguard-proxy"
	EnforcingHeader = "x-meshguard-enforcing"
)

// Decision values of a Record and of a Reply.
const (
	DecisionAllow      = "allow"
	DecisionDeny       = "deny"
	DecisionDryRunDeny = "dry-run-deny"
	DecisionError      = "error"
	// DecisionUnavailable answers a request while the guard has no usable
	// policy (503: no, expired or invalid bundle). These refusals are
	// recorded aggregated: one record per reason and flush interval whose
	// Count says how many requests it stands for, FirstTime and LastTime
	// when the first and last of them were refused. So are internal errors
	// (DecisionError), which can come in floods too.
	DecisionUnavailable = "unavailable"
	// DecisionGap marks where the trail is incomplete: the guard had to
	// drop Dropped records (its buffer was full for too long, or the
	// distributor refused them for good), the oldest first, decided
	// between FirstTime and LastTime. Reason says why.
	DecisionGap = "gap"
	// DecisionRegistry is a change of the distributor's registry (a
	// workload or device registered, updated or deregistered), written by
	// the distributor itself beside the decisions it causes: Subject is
	// who changed it, the registry_* fields what, before and after the
	// entry (null when absent). Uploads may not carry it.
	DecisionRegistry = "registry"
)

// RecordDecisions are the decision values a Record may carry.
var RecordDecisions = []string{DecisionAllow, DecisionDeny, DecisionDryRunDeny, DecisionError, DecisionUnavailable, DecisionGap, DecisionRegistry}

// Record field names (the JSON names of Record's fields).
const (
	FieldTime           = "time"
	FieldDecisionID     = "decision_id"
	FieldDecision       = "decision"
	FieldRuleIDs        = "rule_ids"
	FieldReason         = "reason"
	FieldBundleRevision = "bundle_revision"
	FieldSubject        = "subject"
	FieldDeviceID       = "device_id"
	FieldDeviceClass    = "device_class"
	FieldVersion        = "version"
	FieldMethod         = "method"
	FieldPath           = "path"
	FieldAuthority      = "authority"
	FieldProxy          = "proxy"
	FieldSource         = "source"
	FieldPeer           = "peer"
	FieldTokenSubject   = "token_subject"
	FieldForwarder      = "forwarder"
	FieldJTI            = "jti"
	FieldTargetDevice   = "target_device"
	FieldFirmware       = "firmware"
	FieldProxyID        = "proxy_id"
	FieldUser           = "user"
	FieldUserIssuer     = "user_issuer"
	FieldCount          = "count"
	FieldDropped        = "dropped"
	FieldFirstTime      = "first_time"
	FieldLastTime       = "last_time"
	// Fields of registry records (DecisionRegistry).
	FieldOrganisation = "organisation"
	FieldRegistryOp   = "registry_op"
	FieldRegistryKind = "registry_kind"
	FieldRegistryID   = "registry_id"
	FieldBefore       = "before"
	FieldAfter        = "after"
)

// Reply field names besides FieldDecision, FieldDecisionID and
// FieldReason (the JSON names of Reply's fields).
const (
	FieldRule  = "rule"
	FieldError = "error"
)

// RecordStringFields are the Record fields whose value is a JSON string.
var RecordStringFields = []string{FieldDecisionID, FieldReason, FieldSubject, FieldDeviceID, FieldDeviceClass,
	FieldVersion, FieldMethod, FieldPath, FieldAuthority, FieldProxy, FieldSource,
	FieldPeer, FieldTokenSubject, FieldForwarder, FieldJTI, FieldTargetDevice, FieldFirmware, FieldProxyID,
	FieldUser, FieldUserIssuer}

// RecordCountFields are the Record fields whose value is a non-negative
// JSON integer when present (aggregated and gap records only).
var RecordCountFields = []string{FieldCount, FieldDropped}

// RecordTimeFields are the Record fields whose value is an RFC 3339 string
// when present (aggregated and gap records only), besides FieldTime.
var RecordTimeFields = []string{FieldFirstTime, FieldLastTime}

// Record is one decision as the guard filter records it. The JSON names are
// the Field constants; the distributor keeps fields it does not know.
type Record struct {
	Time           time.Time `json:"time"`
	DecisionID     string    `json:"decision_id"`
	Decision       string    `json:"decision"` // one of RecordDecisions
	RuleIDs        []string  `json:"rule_ids"`
	Reason         string    `json:"reason"`
	BundleRevision uint64    `json:"bundle_revision"`
	// Subject is the caller the policy decided on ("" when the request
	// carried two callers and was refused).
	Subject     string `json:"subject"`
	DeviceID    string `json:"device_id"`
	DeviceClass string `json:"device_class"`
	// Version is the version the request presented to the policy's
	// version rule (whichever source that rule reads: a header, a JWT-SVID
	// claim, the Istio peer label or the device firmware); without a
	// version rule, the Istio peer label when the guard reads it.
	Version   string `json:"version"`
	Method    string `json:"method"`
	Path      string `json:"path"`
	Authority string `json:"authority"`
	Proxy     string `json:"proxy"`
	Source    string `json:"source"`
	// Peer is the mTLS peer's SPIFFE ID, TokenSubject the verified
	// JWT-SVID's subject and JTI its jti, each as presented; Forwarder is
	// the peer when it is a trusted forwarder relaying TokenSubject's token.
	Peer         string `json:"peer"`
	TokenSubject string `json:"token_subject"`
	Forwarder    string `json:"forwarder"`
	JTI          string `json:"jti"`
	// TargetDevice is the device the request names (path, header), which
	// the device token must attest.
	TargetDevice string `json:"target_device"`
	// Firmware is the device token's firmware version.
	Firmware string `json:"firmware"`
	// ProxyID is the proxy's own SPIFFE ID (the URI SAN of its certificate
	// on the request's connection; "" on plain HTTP); Proxy is its node id.
	ProxyID string `json:"proxy_id"`
	// User is the verified end-user access token's subject (sub), or its
	// keyed pseudonym "hmac-sha256:" + base64url(HMAC-SHA256(key, iss
	// NUL sub)) when the guard is configured with a pseudonym key;
	// UserIssuer is the token's iss. Both "" without an end-user token.
	User       string `json:"user"`
	UserIssuer string `json:"user_issuer"`
	// Count is how many requests an aggregated record (unavailable, error)
	// stands for, Dropped how many records a gap record stands for;
	// FirstTime and LastTime bound their times. All four are absent from
	// records of one decision.
	Count     uint64    `json:"count,omitzero"`
	Dropped   uint64    `json:"dropped,omitzero"`
	FirstTime time.Time `json:"first_time,omitzero"`
	LastTime  time.Time `json:"last_time,omitzero"`
}

// Reply is the JSON body of the guard's local replies: a deny (403, 429)
// names its record and rule; an error (500, 503) or an unavailable policy
// (503) says what failed.
type Reply struct {
	Decision   string `json:"decision"`
	DecisionID string `json:"decision_id,omitempty"`
	Rule       string `json:"rule,omitempty"`
	Error      string `json:"error,omitempty"`
	Reason     string `json:"reason"`
}
