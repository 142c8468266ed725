// Package auth is the distributor's access control: TLS and mTLS with SPIFFE
// X509-SVIDs (from files or the SPIFFE Workload API), per-action allowlists of
// SPIFFE IDs and bearer tokens, and per-identity token-bucket rate limits.
package auth

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Action is a class of requests with its own allowlist.
type Action string

// Actions the distributor authorises.
const (
	ActionRead    Action = "read"    // pull bundles and modules
	ActionPublish Action = "publish" // publish policy bundles
	ActionPush    Action = "push"    // push filter modules
	ActionIngest  Action = "ingest"  // upload decision records
	ActionAudit   Action = "audit"   // query and export the decision log
	ActionMetrics Action = "metrics" // scrape /metrics
	// ActionRegistry: use the workload and device registry (each caller
	// then acts only for its own organisation).
	ActionRegistry Action = "registry"
	// ActionAttest: ask for a nonce and attest a registered device (the
	// device proves possession of its registered key; devices are not
	// organisation members).
	ActionAttest Action = "attest"
)

// Actions lists every action.
var Actions = []Action{ActionRead, ActionPublish, ActionPush, ActionIngest, ActionAudit, ActionMetrics, ActionRegistry, ActionAttest}

// Identity is who made a request.
type Identity struct {
	// SPIFFEID is the verified peer certificate's SPIFFE ID, or the one a
	// trusted sidecar forwarded in x-forwarded-client-cert, if any.
	SPIFFEID string
	// Token is the name of the bearer token presented, if any.
	Token string
	// Loopback is true when the request came straight from a process on
	// this host (127.0.0.1 or ::1, no proxy forwarding headers), never for
	// traffic a sidecar forwarded (127.0.0.6 and the like).
	Loopback bool
	// Remote is the peer address.
	Remote string
}

// Key identifies the caller for rate limiting.
func (id Identity) Key() string {
	switch {
	case id.Token != "":
		return "token:" + id.Token
	case id.SPIFFEID != "":
		return id.SPIFFEID
	}
	host, _, err := net.SplitHostPort(id.Remote)
	if err != nil {
		host = id.Remote
	}
	return "addr:" + host
}

// String names the identity for logs.
func (id Identity) String() string {
	switch {
	case id.Token != "" && id.SPIFFEID != "":
		return id.SPIFFEID + "+token:" + id.Token
	case id.Token != "":
		return "token:" + id.Token
	case id.SPIFFEID != "":
		return id.SPIFFEID
	}
	return "anonymous@" + id.Remote
}

// Principal names the identity without connection details: an anonymous
// caller is its host, not its ephemeral port, so one client is the same
// principal on every connection (decision records' received_by).
func (id Identity) Principal() string {
	if id.Token != "" || id.SPIFFEID != "" {
		return id.String()
	}
	host, _, err := net.SplitHostPort(id.Remote)
	if err != nil {
		host = id.Remote
	}
	return "anonymous@" + host
}

// ErrBadToken is returned for a bearer token that matches no configured token.
var ErrBadToken = errors.New("unknown bearer token")

type matcher struct {
	any, loopback bool
	token         string
	id            string // exact SPIFFE ID
	prefix        string // "spiffe://td/path/" for "spiffe://td/path/*"
}

func (m matcher) match(id Identity) bool {
	switch {
	case m.any:
		return true
	case m.loopback:
		return id.Loopback
	case m.token != "":
		return id.Token == m.token
	case m.id != "":
		return id.SPIFFEID == m.id
	case m.prefix != "":
		return strings.HasPrefix(id.SPIFFEID, m.prefix)
	}
	return false
}

// Policy maps actions to allowlists and holds the bearer tokens.
type Policy struct {
	rules  map[Action][]matcher
	tokens []token
	xfcc   *xfccTrust
	// scoped are allowlists of single resources (a channel, a repository
	// or repositories under a prefix), which replace the action's global
	// allowlist for that resource, as scopes of registry tokens do.
	scoped []scopedRules
}

// Resource is what a request acts on, for per-resource allowlists.
type Resource struct {
	Kind string // "channel" or "repository"; "" for none
	Name string
}

// Resource kinds.
const (
	KindChannel    = "channel"
	KindRepository = "repository"
)

type scopedRules struct {
	kind, name string // name exact, or a prefix ending in "/" for "x/*"
	prefix     bool
	rules      map[Action][]matcher
}

type token struct {
	name string
	sum  [32]byte
}

// NewPolicy builds a policy. Allowlist entries are:
//
//	"anonymous"              anyone
//	"loopback"               a request straight from this host (127.0.0.1 or ::1),
//	                         never one a sidecar forwarded (127.0.0.6, proxy headers)
//	"spiffe://td/a/b"        exactly this SPIFFE ID (from the verified client certificate)
//	"spiffe://td/a/*"        any SPIFFE ID under spiffe://td/a/
//	"spiffe://td/*"          any SPIFFE ID of trust domain td
//	"token:NAME"             the bearer token named NAME
//
// An action without entries denies everyone. tokens maps names to secrets.
func NewPolicy(allow map[Action][]string, tokens map[string]string) (*Policy, error) {
	p := &Policy{rules: map[Action][]matcher{}}
	names := make([]string, 0, len(tokens))
	for n := range tokens {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if tokens[n] == "" {
			return nil, fmt.Errorf("auth: token %q is empty", n)
		}
		p.tokens = append(p.tokens, token{name: n, sum: sha256.Sum256([]byte(tokens[n]))})
	}
	for a, entries := range allow {
		known := false
		for _, k := range Actions {
			known = known || k == a
		}
		if !known {
			return nil, fmt.Errorf("auth: unknown action %q (want one of %v)", a, Actions)
		}
		for _, e := range entries {
			m, err := parseEntry(e)
			if err != nil {
				return nil, fmt.Errorf("auth: allowlist for %s: %w", a, err)
			}
			if m.token != "" {
				if _, ok := tokens[m.token]; !ok {
					return nil, fmt.Errorf("auth: allowlist for %s names token %q, which is not configured", a, m.token)
				}
			}
			p.rules[a] = append(p.rules[a], m)
		}
	}
	return p, nil
}

func parseEntry(e string) (matcher, error) {
	switch {
	case e == "anonymous":
		return matcher{any: true}, nil
	case e == "loopback":
		return matcher{loopback: true}, nil
	case strings.HasPrefix(e, "token:"):
		if len(e) == len("token:") {
			return matcher{}, errors.New(`"token:" needs a token name`)
		}
		return matcher{token: strings.TrimPrefix(e, "token:")}, nil
	case strings.HasPrefix(e, "spiffe://"):
		if pre, ok := strings.CutSuffix(e, "/*"); ok {
			if _, err := spiffeid.FromString(pre); err != nil {
				if _, err := spiffeid.TrustDomainFromString(pre); err != nil {
					return matcher{}, fmt.Errorf("%q: %w", e, err)
				}
			}
			return matcher{prefix: pre + "/"}, nil
		}
		id, err := spiffeid.FromString(e)
		if err != nil {
			return matcher{}, fmt.Errorf("%q: %w", e, err)
		}
		return matcher{id: id.String()}, nil
	}
	return matcher{}, fmt.Errorf("%q is not anonymous, loopback, token:NAME or a spiffe:// ID", e)
}

// TrustXFCC makes Identify take the caller's SPIFFE ID from the
// x-forwarded-client-cert header a sidecar sets (see XFCCConfig).
func (p *Policy) TrustXFCC(c XFCCConfig) error {
	t, err := newXFCCTrust(c)
	if err != nil {
		return err
	}
	p.xfcc = t
	return nil
}

// Identify extracts the identity of a request: the SPIFFE ID of a verified
// client certificate (or, when configured, of the sidecar's
// x-forwarded-client-cert) and the name of a presented bearer token. The
// token is compared in constant time against every configured token.
func (p *Policy) Identify(r *http.Request) (Identity, error) {
	id := Identity{Remote: r.RemoteAddr}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip := net.ParseIP(host)
	id.Loopback = directLoopback(ip, r.Header)
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		// The handshake verified the chain against the SPIFFE bundle.
		if sid, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0]); err == nil {
			id.SPIFFEID = sid.String()
		}
	} else if xf := r.Header.Values(HeaderXFCC); len(xf) > 0 && p.xfcc != nil && ip != nil && p.xfcc.fromProxy(ip) {
		sid, err := p.xfcc.identify(strings.Join(xf, ","))
		if err != nil {
			return id, err
		}
		id.SPIFFEID = sid
	}
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Basic") {
			// Registry clients (pull secrets): the password is the token.
			if _, pass, bok := r.BasicAuth(); bok && pass != "" {
				tok = pass
			} else {
				return id, fmt.Errorf("%w: malformed Basic credentials", ErrBadToken)
			}
		} else if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
			return id, fmt.Errorf("%w: Authorization must be \"Bearer <token>\" (or Basic with the token as password)", ErrBadToken)
		}
		sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		found := ""
		for _, t := range p.tokens {
			if subtle.ConstantTimeCompare(sum[:], t.sum[:]) == 1 {
				found = t.name
			}
		}
		if found == "" {
			return id, ErrBadToken
		}
		id.Token = found
	}
	return id, nil
}

// Allowed reports whether id may perform action a (global allowlists).
func (p *Policy) Allowed(a Action, id Identity) bool {
	return matchAny(p.rules[a], id)
}

func matchAny(ms []matcher, id Identity) bool {
	for _, m := range ms {
		if m.match(id) {
			return true
		}
	}
	return false
}

// Restrict gives one resource its own allowlists: pattern is a channel
// name, a repository name, or "prefix/*" for every repository under
// prefix. For each action it names, its list replaces the global one on
// that resource (an empty list denies everyone); actions it leaves out
// keep the global list. The most specific pattern applies: an exact name,
// then the longest prefix.
func (p *Policy) Restrict(kind, pattern string, allow map[Action][]string) error {
	sr := scopedRules{kind: kind, name: pattern, rules: map[Action][]matcher{}}
	if pre, ok := strings.CutSuffix(pattern, "/*"); ok && kind == KindRepository {
		sr.name, sr.prefix = pre+"/", true
	}
	for a, entries := range allow {
		if !slices.Contains(Actions, a) {
			return fmt.Errorf("auth: %s %q: unknown action %q (want one of %v)", kind, pattern, a, Actions)
		}
		sr.rules[a] = []matcher{}
		for _, e := range entries {
			m, err := parseEntry(e)
			if err != nil {
				return fmt.Errorf("auth: %s %q allowlist for %s: %w", kind, pattern, a, err)
			}
			if m.token != "" && !slices.ContainsFunc(p.tokens, func(t token) bool { return t.name == m.token }) {
				return fmt.Errorf("auth: %s %q allowlist for %s names token %q, which is not configured", kind, pattern, a, m.token)
			}
			sr.rules[a] = append(sr.rules[a], m)
		}
	}
	p.scoped = append(p.scoped, sr)
	return nil
}

// AllowedOn reports whether id may perform a on res: the resource's own
// allowlist for a when one is configured, else the global one.
func (p *Policy) AllowedOn(a Action, id Identity, res Resource) bool {
	if res.Kind != "" {
		var best *scopedRules
		for i := range p.scoped {
			sr := &p.scoped[i]
			if sr.kind != res.Kind || sr.rules[a] == nil {
				continue
			}
			switch {
			case !sr.prefix && sr.name == res.Name:
				return matchAny(sr.rules[a], id)
			case sr.prefix && strings.HasPrefix(res.Name, sr.name) && (best == nil || len(sr.name) > len(best.name)):
				best = sr
			}
		}
		if best != nil {
			return matchAny(best.rules[a], id)
		}
	}
	return p.Allowed(a, id)
}

// ParseTokens reads "name:secret" (or "name=secret") entries, one per line
// or comma-separated; blank lines and # comments are skipped.
func ParseTokens(data []byte) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	line := 0
	for sc.Scan() {
		line++
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		for _, e := range strings.Split(l, ",") {
			e = strings.TrimSpace(e)
			if e == "" {
				continue
			}
			i := strings.IndexAny(e, ":=")
			if i <= 0 || i == len(e)-1 {
				return nil, fmt.Errorf("line %d: want name:secret", line)
			}
			name, secret := strings.TrimSpace(e[:i]), strings.TrimSpace(e[i+1:])
			if _, dup := out[name]; dup {
				return nil, fmt.Errorf("line %d: token %q defined twice", line, name)
			}
			out[name] = secret
		}
	}
	return out, sc.Err()
}

// LoadTokens reads tokens from a file and/or an environment variable.
func LoadTokens(file, env string) (map[string]string, error) {
	out := map[string]string{}
	add := func(src string, data []byte) error {
		m, err := ParseTokens(data)
		if err != nil {
			return fmt.Errorf("auth: tokens from %s: %w", src, err)
		}
		for k, v := range m {
			if _, dup := out[k]; dup {
				return fmt.Errorf("auth: token %q defined twice", k)
			}
			out[k] = v
		}
		return nil
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
		if err := add(file, b); err != nil {
			return nil, err
		}
	}
	if env != "" {
		if v := os.Getenv(env); v != "" {
			if err := add("$"+env, []byte(v)); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}
