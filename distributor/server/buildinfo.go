package server

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshguard/meshguard/internal/buildinfo"
)

// announceBuild logs which build is starting and exports it as
// meshguard_build_info (always 1; the build is in the labels), so a
// dashboard or alert can tell which release each replica runs.
func announceBuild(log *slog.Logger, reg prometheus.Registerer) {
	bi := buildinfo.Get()
	log.Info("meshguard distributor starting", "version", bi.Version, "commit", bi.Commit, "built", bi.Date, "go", bi.GoVersion)
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "meshguard_build_info",
		Help:        "The meshguard build serving: version, revision (git commit) and goversion labels; always 1.",
		ConstLabels: prometheus.Labels{"version": bi.Version, "revision": bi.Commit, "goversion": bi.GoVersion},
	})
	g.Set(1)
	reg.MustRegister(g)
}
