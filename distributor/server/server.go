package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshguard/meshguard/distributor/auth"
	"github.com/meshguard/meshguard/distributor/bundles"
	"github.com/meshguard/meshguard/distributor/decisionlog"
	"github.com/meshguard/meshguard/distributor/pollers"
	"github.com/meshguard/meshguard/distributor/registry"
	"github.com/meshguard/meshguard/distributor/state"
	"github.com/meshguard/meshguard/distributor/state/postgres"
	"github.com/meshguard/meshguard/distributor/store"
)

// Options are dependencies that are not configuration.
type Options struct {
	// Logger for structured logs (default slog.Default()).
	Logger *slog.Logger
	// Verifier overrides the bundle verifier built from Config.Keys.
	Verifier bundles.Verifier
	// OCI and Modules override the /v2/ and /modules/ handlers.
	OCI, Modules http.Handler
}

// Server is a configured distributor.
type Server struct {
	cfg  Config
	log  *slog.Logger
	reg  *bundles.Registry
	dlog state.DecisionLog
	// bindings bind uploaders to the proxies they post for (nil: off).
	bindings *auth.ProxyBindings
	search   decisionlog.Searcher
	index    *decisionlog.Index
	pgSearch *postgres.Search // the searcher with state.backend postgres
	pollers  *pollers.Table
	policy   *auth.Policy
	limiter  *auth.Limiter
	// byteLimiter bounds ingest bytes per identity.
	byteLimiter *auth.Limiter
	disk        *diskWatch
	budgets     map[string]*budget // by request class
	m           *metrics
	verifier    bundles.Verifier
	keysErr     error
	tlsSrc      *auth.Source
	store       store.Store
	// db is the state database (state.backend postgres), nil otherwise.
	db       *postgres.DB
	mux      *http.ServeMux
	registry *registry.Service
	// regPub publishes registry bundles (nil: registry.bundles.disabled).
	regPub   *regPublisher
	attestor *registry.Attestor
	regOrgs  []registryOrg

	readyMu   sync.Mutex
	readyLast map[string]string // check -> last error text, to log changes

	expiryMu     sync.Mutex
	expiryWarned map[string]expiryWarning // channel -> last expiry warning logged

	// base is cancelled when shutdown begins so long polls end at once.
	base       context.Context
	cancelBase context.CancelFunc
	closeOnce  sync.Once
}

// New opens storage, loads keys and builds the handler. Close releases it.
func New(ctx context.Context, cfg Config, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, log: opts.Logger, m: newMetrics(), mux: http.NewServeMux(), readyLast: map[string]string{}}
	announceBuild(s.log, s.m.reg)
	s.base, s.cancelBase = context.WithCancel(context.Background())
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()

	tokens, err := auth.LoadTokens(cfg.Tokens.File, cfg.Tokens.Env)
	if err != nil {
		return nil, err
	}
	if s.policy, err = auth.NewPolicy(cfg.Allow, tokens); err != nil {
		return nil, err
	}
	if err := s.policy.TrustXFCC(cfg.XFCC); err != nil {
		return nil, err
	}
	for name, ch := range cfg.Bundles.Channels {
		if ch.Allow != nil {
			if err := s.policy.Restrict(auth.KindChannel, name, ch.Allow); err != nil {
				return nil, fmt.Errorf("config: %w", err)
			}
		}
	}
	for name, rc := range cfg.Storage.Repositories {
		if err := s.policy.Restrict(auth.KindRepository, name, rc.Allow); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
	}
	if err := s.openRegistry(tokens); err != nil {
		return nil, err
	}
	s.limiter = auth.NewLimiter(cfg.Limits.IngestRate, cfg.Limits.IngestBurst)
	s.byteLimiter = auth.NewLimiter(float64(cfg.Limits.IngestBytesRate), int(cfg.Limits.IngestBytesBurst))
	s.disk = &diskWatch{dir: cfg.Data, min: int64(cfg.Limits.MinFreeBytes)}
	s.newBudgets()

	s.verifier = opts.Verifier
	if s.verifier == nil {
		if cfg.Keys == "" {
			s.keysErr = errNoKeys
		} else {
			kv, err := NewKeyVerifier(cfg.Keys, s.log)
			if err != nil {
				return nil, err
			}
			s.verifier = kv
		}
	}
	verifier := s.verifier
	if verifier == nil {
		verifier = noKeys{s.keysErr}
	}
	if s.regPub, err = s.newRegPublisher(); err != nil {
		return nil, err
	}
	chans := map[string]bundles.ChannelOptions{}
	for n, c := range cfg.Bundles.Channels {
		chans[n] = bundles.ChannelOptions{Scope: c.Scope, Retain: c.Retain}
	}
	if s.regPub != nil {
		verifier = routedVerifier{authors: verifier, registry: registryVerifier{keys: s.regPub.pubs}}
		for n, scope := range s.regPub.channels {
			chans[n] = bundles.ChannelOptions{Scope: scope}
		}
	}
	chanStore, err := s.openState(ctx)
	if err != nil {
		return nil, err
	}
	if s.reg, err = bundles.Open(bundles.Options{
		Store: chanStore, Verifier: verifier, Retain: cfg.Bundles.Retain,
		Channels: chans, AutoChannels: cfg.Bundles.AutoChannels, Logger: s.log,
	}); err != nil {
		return nil, err
	}
	// Follow other replicas' publishes (shared state) until Close.
	go s.reg.Run(s.base)
	if s.regPub != nil {
		s.regPub.recover()
		if err := s.regPub.publish(ctx); err != nil {
			s.log.Error("first registry bundle publish failed; retrying", "err", err)
		}
		go s.regPub.run(s.base)
	}
	s.expiryWarned = map[string]expiryWarning{}
	for ch, ri := range s.reg.LatestInfos() {
		s.m.revision.WithLabelValues(ch).Set(float64(ri.Revision))
		s.setExpiry(ch, ri)
	}
	keyPath := cfg.Decisions.CheckpointKey
	if keyPath == "" {
		keyPath = filepath.Join(cfg.Data, "checkpoint.key")
	}
	ckey, err := decisionlog.LoadOrCreateKey(keyPath, cfg.Decisions.LogName)
	if err != nil {
		return nil, err
	}
	s.log.Info("decision log checkpoints are signed by", "verifier_key", ckey.Public, "key_file", keyPath)
	if s.db != nil {
		// One log for the deployment, in the database; the key file must be
		// the same on every replica (a mounted Secret).
		s.dlog = s.db.Decisions(&ckey, cfg.Decisions.CheckpointInterval, s.log)
		s.pgSearch = s.db.Search(s.dlog.(*postgres.Decisions), 0, s.log)
		s.search = s.pgSearch
	} else {
		flog, err := decisionlog.Open(filepath.Join(cfg.Data, "decisions"), decisionlog.Options{
			SegmentBytes: int64(cfg.Decisions.SegmentBytes), Logger: s.log,
			Retention: cfg.Decisions.Retention, RetainBytes: int64(cfg.Decisions.RetainBytes),
			Key: &ckey, CheckpointEvery: cfg.Decisions.CheckpointInterval,
		})
		if err != nil {
			return nil, err
		}
		s.dlog = flog
		s.index = decisionlog.OpenIndex(flog, decisionlog.IndexOptions{Logger: s.log})
		s.search = s.index
	}
	if len(cfg.Decisions.ProxyBindings) > 0 {
		if s.bindings, err = auth.CompileProxyBindings(cfg.Decisions.ProxyBindings); err != nil {
			s.dlog.Close()
			return nil, fmt.Errorf("config: decisions.proxy_bindings: %w", err)
		}
	}
	s.m.decisionSeq.Set(float64(s.dlog.Head().Seq))
	s.pollers = pollers.New(cfg.Bundles.Pollers, 0)

	if cfg.TLS.Enabled() {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		s.tlsSrc, err = auth.NewSource(wctx, cfg.TLS.SVIDConfig)
		cancel()
		if err != nil {
			return nil, err
		}
		s.log.Info("TLS identity loaded", "spiffe_id", s.tlsSrc.ID.String())
	}
	if err := s.routes(opts); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// errNoKeys: publishing is impossible until keys are configured (503).
var errNoKeys = fmt.Errorf("%w: none configured (keys: in the config, or --keys)", errKeysUnavailable)

// noKeys refuses every publish while no keys are configured.
type noKeys struct{ err error }

func (n noKeys) Verify([]byte, string, uint64) (bundles.Verified, error) {
	return bundles.Verified{}, n.err
}

// Handler is the distributor's HTTP handler.
func (s *Server) Handler() http.Handler { return s.mux }

// TLSConfig is the server TLS configuration, nil for plain HTTP.
func (s *Server) TLSConfig() *tls.Config {
	if s.tlsSrc == nil {
		return nil
	}
	return s.tlsSrc.ServerTLS(s.cfg.TLS.RequireClientCert)
}

// Registry is the bundle registry.
func (s *Server) Registry() *bundles.Registry { return s.reg }

// DecisionLog is the file decision log (nil with state.backend postgres,
// whose log is in the database).
func (s *Server) DecisionLog() *decisionlog.Log {
	l, _ := s.dlog.(*decisionlog.Log)
	return l
}

// Search answers the console's queries over the decision log.
func (s *Server) Search() decisionlog.Searcher { return s.search }

// CheckListen refuses plain HTTP on a non-loopback address unless forced,
// and TLS without an SVID source.
func CheckListen(cfg Config) error {
	if !cfg.InsecureHTTP {
		if !cfg.TLS.Enabled() {
			return errors.New("TLS needs an X509-SVID (tls.cert/key/bundle or tls.workload_socket); use --insecure-http for a plain-HTTP demo on loopback")
		}
		return nil
	}
	host, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", cfg.Listen, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	if cfg.ForceInsecure {
		return nil
	}
	return fmt.Errorf("refusing plain HTTP on non-loopback address %q: use TLS, or add --force-insecure if you really mean it", cfg.Listen)
}

// Serve serves on ln until ctx is cancelled, then shuts down gracefully:
// the listener closes, long polls end with 304, in-flight uploads finish
// (bounded by shutdown_timeout), and storage is closed.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return s.base },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	maxConns := int64(s.cfg.Limits.MaxConnections)
	if maxConns <= 0 {
		maxConns = defaultMaxConnections()
	}
	ln = &connLimit{Listener: ln, max: maxConns, refused: s.m.connsRefused, openConn: s.m.conns}
	srv.TLSConfig = s.TLSConfig()
	useTLS := srv.TLSConfig != nil
	s.log.Info("distributor listening", "addr", ln.Addr().String(), "tls", useTLS)
	go s.watchExpiry(ctx, time.Minute)
	go s.scrubLoop(ctx, s.cfg.Storage.ScrubInterval)
	errc := make(chan error, 1)
	go func() {
		if useTLS {
			// ServeTLS adds HTTP/2 (ALPN h2) to the SPIFFE TLS config.
			errc <- srv.ServeTLS(ln, "", "")
			return
		}
		errc <- srv.Serve(ln)
	}()
	select {
	case err := <-errc:
		s.Close()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.log.Info("shutting down")
	timeout := s.cfg.ShutdownTimeout
	if timeout <= 0 {
		timeout = 20 * time.Second
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	s.cancelBase()
	err := srv.Shutdown(sctx)
	<-errc
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	s.log.Info("shut down cleanly")
	return nil
}

// Close releases storage and the SVID source.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.cancelBase()
		if s.index != nil {
			s.index.Close()
		}
		if s.pgSearch != nil {
			s.pgSearch.Close()
		}
		if s.dlog != nil {
			err = s.dlog.Close()
		}
		if s.tlsSrc != nil {
			s.tlsSrc.Close()
		}
		if c, ok := s.store.(io.Closer); ok {
			_ = c.Close()
		}
		if s.db != nil {
			s.db.Close()
		}
	})
	return err
}

func retryAfter(d time.Duration) string {
	sec := int(d / time.Second)
	if d%time.Second != 0 {
		sec++
	}
	if sec < 1 {
		sec = 1
	}
	return strconv.Itoa(sec)
}

func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{})
}
