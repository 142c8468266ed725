// Package scenario runs the grid demo end to end on one machine: the
// distributor, the example services and the dev proxy running guard.wasm,
// with a scripted sequence of callers and a policy change at runtime. The
// demo (make demo) prints its table; the end-to-end test asserts every row.
package scenario

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/meshguard/meshguard/examples/grid/upstream"
	"github.com/meshguard/meshguard/filters/guard/config"
	"github.com/meshguard/meshguard/internal/devca"
)

// TrustDomain is the scenario's trust domain.
var TrustDomain = spiffeid.RequireTrustDomainFromString("grid.example")

// ProxyID is the dev proxy's SPIFFE ID; JWT-SVIDs are issued for it (the
// guard accepts the audience of the service it guards: localAudience).
const ProxyID = "spiffe://grid.example/ns/grid/sa/grid-gateway"

// DeviceAudience is the audience of device attestation tokens.
const DeviceAudience = "grid.example/gateway"

// DeviceIssuer is the iss of device attestation tokens.
const DeviceIssuer = "https://devices.grid.example"

// Options configure a run.
type Options struct {
	// Root is the repository root (policies and built artifacts live there).
	Root string
	// Bin is the meshguard binary; GuardWasm the built guard module.
	Bin, GuardWasm string
	// Out receives progress and the decision table (nil: discard).
	Out io.Writer
	// WorkDir keeps state there instead of a temporary directory.
	WorkDir string
	// Timeout bounds the whole run.
	Timeout time.Duration
}

// Outcome is what one step observed.
type Outcome struct {
	Step     Step
	Status   int
	Decision string // allow, deny, dry-run (allowed but would be denied), error
	Rule     string
	Reason   string
	Revision string
	ID       string
}

// Report is the result of a run.
type Report struct {
	Outcomes    []Outcome
	AuditOK     bool
	AuditOutput string
	Records     int
	// Status is `meshguard status` at the end; StatusProblem says what it
	// lacks (empty when the dev proxy shows up polling the latest revision).
	Status        string
	StatusProblem string
}

type env struct {
	opts     Options
	work     string
	ca       *devca.CA
	devices  *devca.CA
	procs    *procs
	distURL  string
	proxyURL string
	// outboundURL is the controller's outbound proxy (plain HTTP).
	outboundURL string
	clients     map[string]*http.Client
}

func (e *env) logf(format string, a ...any) {
	if e.opts.Out != nil {
		fmt.Fprintf(e.opts.Out, format+"\n", a...)
	}
}

// mg runs a meshguard CLI verb to completion and returns its stdout.
func (e *env) mg(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, e.opts.Bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("meshguard %s: %w\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// Run executes the scenario.
func Run(ctx context.Context, opts Options) (rep *Report, err error) {
	if opts.Timeout == 0 {
		opts.Timeout = 4 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	work := opts.WorkDir
	if work == "" {
		if work, err = os.MkdirTemp("", "meshguard-demo-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(work)
	}
	e := &env{opts: opts, work: work, procs: &procs{dir: work}, clients: map[string]*http.Client{}}
	defer e.procs.stopAll(10 * time.Second)
	if err := e.setup(ctx); err != nil {
		return nil, err
	}
	return e.play(ctx)
}

func listen() (net.Listener, string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	return ln, ln.Addr().String(), nil
}

func (e *env) setup(ctx context.Context) error {
	var err error
	keys := filepath.Join(e.work, "keys")
	if _, err = e.mg(ctx, "keys", "generate", "--alg", "ed25519", "--out", keys); err != nil {
		return err
	}
	if e.ca, err = devca.New(TrustDomain); err != nil {
		return err
	}
	if e.devices, err = devca.New(spiffeid.RequireTrustDomainFromString("devices.grid.example")); err != nil {
		return err
	}
	caDir := filepath.Join(e.work, "ca")
	if err = e.ca.Save(caDir); err != nil {
		return err
	}

	// Example services, in this process.
	meter, meterAddr, err := listen()
	if err != nil {
		return err
	}
	der, derAddr, err := listen()
	if err != nil {
		return err
	}
	meterSrv := &http.Server{Handler: upstream.MeterAPI(), ReadHeaderTimeout: 5 * time.Second}
	derSrv := &http.Server{Handler: upstream.NewDERAPI().Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = meterSrv.Serve(meter) }()
	go func() { _ = derSrv.Serve(der) }()
	go func() { <-ctx.Done(); meterSrv.Close(); derSrv.Close() }()
	e.logf("services: meter-data API on %s, inverter control API on %s", meterAddr, derAddr)

	// Distributor.
	distPort, err := freePort()
	if err != nil {
		return err
	}
	distAddr := fmt.Sprintf("127.0.0.1:%d", distPort)
	e.distURL = "http://" + distAddr
	// Channels are configured (a publish creates none); the grid channel's
	// scope is its name, which the demo's bundles carry.
	distCfg := filepath.Join(e.work, "distributor.yaml")
	if err := os.WriteFile(distCfg, []byte("bundles:\n  channels:\n    grid: {}\n"), 0o644); err != nil {
		return err
	}
	dist, err := e.procs.start(ctx, "distributor", e.opts.Bin, "serve", "--config", distCfg, "--listen", distAddr, "--data", filepath.Join(e.work, "distributor"),
		"--insecure-http", "--verify-keys", filepath.Join(keys, "verify.jwk"))
	if err != nil {
		return err
	}
	if err := waitReady(ctx, http.DefaultClient, e.distURL+"/readyz", dist, 30*time.Second); err != nil {
		return err
	}
	e.logf("distributor: %s", e.distURL)

	// Module: push, then the proxy pulls it by manifest digest.
	out, err := e.mg(ctx, "push", "module", e.opts.GuardWasm, distAddr+"/meshguard/guard:demo")
	if err != nil {
		return err
	}
	digest := strings.TrimSpace(lastLine(out))
	e.logf("module: pushed guard.wasm as %s/meshguard/guard@%s", distAddr, digest)

	// Policy bundle revision 1.
	if err := e.publish(ctx, 1, "policies"); err != nil {
		return err
	}

	// Guard configuration and the dev proxy.
	cfgPath, err := e.guardConfig(keys)
	if err != nil {
		return err
	}
	proxyPort, err := freePort()
	if err != nil {
		return err
	}
	proxyAddr := fmt.Sprintf("127.0.0.1:%d", proxyPort)
	e.proxyURL = "https://" + proxyAddr
	proxy, err := e.procs.start(ctx, "proxy", e.opts.Bin, "run", "--listen", proxyAddr,
		"--module", "oci://"+distAddr+"/meshguard/guard@"+digest, "--sha256", digest,
		"--plugin-config", cfgPath, "--ca", caDir, "--spiffe-id", ProxyID,
		"--route", "/v1/meters="+"http://"+meterAddr, "--route", "/v1/inverters="+"http://"+derAddr,
		"--cluster", "distributor="+e.distURL, "--workers", "2")
	if err != nil {
		return err
	}
	probe := e.client("/ns/metering/sa/meter-reader")
	if err := waitPolicy(ctx, probe, e.proxyURL+"/v1/meters/mtr-0001/readings", proxy); err != nil {
		return err
	}
	e.logf("proxy: %s running guard.wasm on 2 worker VMs", e.proxyURL)

	// The controller's outbound proxy: the guard on the caller's side, in
	// front of the inverter control API, as a sidecar's outbound listener.
	outCfg, err := e.outboundConfig(keys)
	if err != nil {
		return err
	}
	outPort, err := freePort()
	if err != nil {
		return err
	}
	outAddr := fmt.Sprintf("127.0.0.1:%d", outPort)
	e.outboundURL = "http://" + outAddr
	outbound, err := e.procs.start(ctx, "outbound-proxy", e.opts.Bin, "run", "--listen", outAddr, "--insecure-http",
		"--module", "oci://"+distAddr+"/meshguard/guard@"+digest, "--sha256", digest,
		"--plugin-config", outCfg, "--node-id", "controller-outbound~"+outAddr,
		"--route", "/v1/inverters="+"http://"+derAddr, "--cluster", "distributor="+e.distURL, "--workers", "1")
	if err != nil {
		return err
	}
	if err := waitPolicy(ctx, &http.Client{Timeout: 5 * time.Second}, e.outboundURL+"/v1/inverters/inv-0042/status", outbound); err != nil {
		return err
	}
	e.logf("outbound proxy: %s running guard.wasm with direction outbound (the controller's side)", e.outboundURL)
	return nil
}

// outboundConfig is the controller's outbound guard: the same bundle
// channel, direction outbound, no caller identity, every decision logged.
func (e *env) outboundConfig(keys string) (string, error) {
	verify, err := os.ReadFile(filepath.Join(keys, "verify.jwk"))
	if err != nil {
		return "", err
	}
	cfg := config.Config{
		Direction: config.DirectionOutbound,
		Policy: config.PolicySource{
			VerifyKeys: verify,
			Scope:      "grid",
			Distributor: &config.Distributor{Cluster: "distributor", Channel: "grid",
				PollInterval: config.Duration{Duration: time.Second}, Timeout: config.Duration{Duration: 2 * time.Second}},
		},
		Audit: config.Audit{LogAllows: true, Sink: &config.AuditSink{Cluster: "distributor", FlushInterval: config.Duration{Duration: time.Second}}},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return "", err
	}
	p := filepath.Join(e.work, "guard-outbound.json")
	return p, os.WriteFile(p, b, 0o600)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// publish bundles examples/grid/<dir> as revision rev and pushes it.
func (e *env) publish(ctx context.Context, rev int, dir string) error {
	out := filepath.Join(e.work, fmt.Sprintf("grid-r%d.bundle", rev))
	src := filepath.Join(e.opts.Root, "examples", "grid", dir)
	if _, err := e.mg(ctx, "policy", "bundle", "--signing-key", filepath.Join(e.work, "keys", "signing.jwk"), "--revision", fmt.Sprint(rev),
		"--expires", "24h", "--scope", "grid", "--output-file", out, src); err != nil {
		return err
	}
	if _, err := e.mg(ctx, "push", "bundle", out, "--server", e.distURL, "--channel", "grid"); err != nil {
		return err
	}
	e.logf("policy: published bundle revision %d from examples/grid/%s", rev, dir)
	return nil
}

func (e *env) guardConfig(keys string) (string, error) {
	verify, err := os.ReadFile(filepath.Join(keys, "verify.jwk"))
	if err != nil {
		return "", err
	}
	jwks, err := e.ca.JWKS()
	if err != nil {
		return "", err
	}
	deviceJWKS, err := e.devices.JWKS()
	if err != nil {
		return "", err
	}
	// The typed schema (filters/guard/config), so a renamed field fails to
	// compile here rather than at the guard's configure.
	cfg := config.Config{
		Policy: config.PolicySource{
			VerifyKeys: verify,
			Scope:      "grid",
			Distributor: &config.Distributor{Cluster: "distributor", Channel: "grid",
				PollInterval: config.Duration{Duration: time.Second}, Timeout: config.Duration{Duration: 2 * time.Second}},
		},
		Identity: config.Identity{
			PeerCertificate: true,
			JWTSVID:         &config.JWTSVID{LocalAudience: true, TrustDomains: map[string]json.RawMessage{"grid.example": jwks}},
			Device: &config.Device{
				Issuers:   map[string]json.RawMessage{DeviceIssuer: deviceJWKS},
				Audiences: []string{DeviceAudience},
				Claims:    config.DeviceClaims{ID: "ueid", Class: "devclass", Vendor: "oemid", Model: "hwmodel", Firmware: "swversion"},
			},
			StripHeaders: []string{"x-device-token", "authorization", "x-meshguard-identity"},
		},
		Audit: config.Audit{LogAllows: true, Sink: &config.AuditSink{Cluster: "distributor", FlushInterval: config.Duration{Duration: time.Second}}},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return "", err
	}
	p := filepath.Join(e.work, "guard.json")
	return p, os.WriteFile(p, b, 0o600)
}

// client is an mTLS client holding an X509-SVID for path.
func (e *env) client(path string) *http.Client {
	if c, ok := e.clients[path]; ok {
		return c
	}
	svid, err := e.ca.IssueX509SVID(spiffeid.RequireFromPath(TrustDomain, path), devca.X509Options{})
	if err != nil {
		panic(err) // the CA was just created; this cannot fail for a valid path
	}
	c := e.mtlsClient(tlsconfig.MTLSClientConfig(svid, e.ca.X509Bundle(), e.proxyID()))
	e.clients[path] = c
	return c
}

// certClient presents a certificate of the CA with exactly these URI SANs.
func (e *env) certClient(uris []string) (*http.Client, error) {
	cert, err := e.ca.IssueCertificate(uris, devca.X509Options{})
	if err != nil {
		return nil, err
	}
	cfg := tlsconfig.TLSClientConfig(e.ca.X509Bundle(), e.proxyID())
	cfg.Certificates = []tls.Certificate{cert}
	return e.mtlsClient(cfg), nil
}

func (e *env) proxyID() tlsconfig.Authorizer {
	return tlsconfig.AuthorizeID(spiffeid.RequireFromPath(TrustDomain, "/ns/grid/sa/grid-gateway"))
}

func (e *env) mtlsClient(cfg *tls.Config) *http.Client {
	return &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

// waitPolicy waits until the proxy answers with something other than the
// fail-closed 503 it gives before the first bundle is verified.
func waitPolicy(ctx context.Context, c *http.Client, url string, pr *proc) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var last string
	ok := 0
	for {
		if err := pr.exited(); err != nil {
			return err
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			// Every worker VM must have verified the bundle: several answers
			// in a row (workers take streams round robin).
			if resp.StatusCode != http.StatusServiceUnavailable {
				ok++
				if ok == 6 {
					return nil
				}
				continue
			}
			ok = 0
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("proxy never enforced a policy (last answer: %s); log:\n%s", last, tail(pr.log, 40))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Table prints the outcomes.
func (r *Report) Table(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tCALLER\tDEVICE\tVERSION\tREQUEST\tSTATUS\tDECISION\tRULE\tREV")
	for i := range r.Outcomes {
		o := &r.Outcomes[i]
		device := ""
		if d := o.Step.Device; d != nil {
			device = d.ID + " fw " + d.Firmware
		}
		caller := strings.TrimPrefix(o.Step.Caller, "/ns/")
		if o.Step.Outbound {
			caller += " (outbound guard)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s %s\t%d\t%s\t%s\t%s\n", i+1, caller, dash(device), dash(o.Step.Version), o.Step.Method, o.Step.Path, o.Status, normalize(*o), dash(o.Rule), dash(o.Revision))
	}
	_ = tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

var errMismatch = errors.New("scenario: decisions differ from the expected ones")
