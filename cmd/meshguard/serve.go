package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/spf13/cobra"

	"github.com/meshguard/meshguard/distributor/server"
	"github.com/meshguard/meshguard/internal/enumflag"
)

func newServeCmd() *cobra.Command {
	var (
		configFile, listen, data, keys, logLevel, logFormat string
		insecure, force, printDefault                       bool
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the distributor: policy bundles, filter modules (OCI), decision logs",
		Long: `Run the meshguard distributor.

Bundles:   POST/GET /v1/bundles/{channel}[?wait=30s], /v1/bundles/{channel}/revisions[/{rev}]
Decisions: POST/GET /v1/decisions, GET /v1/decisions/head, GET /v1/decisions/log,
           GET /v1/decisions/search, /records/{seq}, /stats, /values/{column}
Console:   /ui/ (read-only, the audit action; its API also under /ui/api/), GET /v1/status
Modules:   /v2/ (OCI distribution), /modules/
Ops:       /healthz, /readyz, /metrics

TLS uses an X509-SVID from files or the SPIFFE Workload API (see --print-default-config).
Plain HTTP needs --insecure-http and a loopback listen address (or --force-insecure).`,
		Example: `  meshguard serve --data ./data --insecure-http --verify-keys verify.jwk
  meshguard serve --config /etc/meshguard/distributor.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if printDefault {
				_, err := cmd.OutOrStdout().Write(server.DefaultConfigYAML)
				return err
			}
			for name, v := range map[string]string{"--config": configFile, "--verify-keys": keys, "--data": data} {
				if v == stdio {
					return usagef("%s -: the distributor reads its files again while it serves (keys on every use); give a path", name)
				}
			}
			cfg := server.DefaultConfig()
			if configFile != "" {
				var err error
				if cfg, err = server.LoadConfig(configFile); err != nil {
					return usage(err)
				}
			}
			f := cmd.Flags()
			if f.Changed("listen") {
				cfg.Listen = listen
			}
			if f.Changed("data") {
				cfg.Data = data
			}
			if f.Changed("verify-keys") || f.Changed("keys") {
				cfg.Keys = keys
			}
			if f.Changed("insecure-http") {
				cfg.InsecureHTTP = insecure
			}
			if f.Changed("force-insecure") {
				cfg.ForceInsecure = force
			}
			log := newLogger(cmd.ErrOrStderr(), logLevel, logFormat)
			if err := cfg.Validate(); err != nil {
				return usage(err)
			}
			if err := server.CheckListen(cfg); err != nil {
				return usage(err)
			}
			ctx := cmd.Context()
			srv, err := server.New(ctx, cfg, server.Options{Logger: log})
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", cfg.Listen)
			if err != nil {
				srv.Close()
				return fmt.Errorf("listen: %w", err)
			}
			return srv.Serve(ctx, ln)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "YAML configuration file (over the embedded default)")
	f.StringVar(&listen, "listen", "127.0.0.1:8443", "listen address")
	f.StringVar(&data, "data", "", "data directory (bundles/, decisions/, module storage)")
	f.StringVar(&keys, "verify-keys", "", "public JWK Set file with the bundle verification keys (verify.jwk)")
	aliasFlag(f, "verify-keys", "keys")
	f.BoolVar(&insecure, "insecure-http", false, "serve plain HTTP (loopback only unless --force-insecure)")
	f.BoolVar(&force, "force-insecure", false, "allow plain HTTP on a non-loopback address")
	f.BoolVar(&printDefault, "print-default-config", false, "print the embedded default configuration and exit")
	enumflag.Var(f, &logLevel, "log-level", "", "info", []string{"debug", "info", "warn", "error"}, "log level")
	enumflag.Var(f, &logFormat, "log-format", "", "text", []string{"text", "json"}, "log format")
	return cmd
}

// newLogger is the distributor's logger on w; level and format are
// enumflag values, so they parse.
func newLogger(w io.Writer, level, format string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
