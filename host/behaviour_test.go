package host_test

import (
	"context"
	"encoding/binary"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/wasmbuild"
	"github.com/meshguard/meshguard/host"
	"github.com/meshguard/meshguard/host/hosttest"
)

const testfilters = "github.com/meshguard/meshguard/host/internal/testfilters/"

func probe(t *testing.T, opts ...hosttest.Option) *hosttest.Harness {
	t.Helper()
	return hosttest.New(t, wasmbuild.ForTest(t, testfilters+"probe"), opts...)
}

func TestProperties(t *testing.T) {
	plugin := host.NewProps().SetString("xds.cluster_name", "inbound|8443||meter-api").SetString("xds.listener_direction", "INBOUND")
	h := probe(t, hosttest.Name("grid.guard"), hosttest.Properties(plugin))
	props := host.NewProps().
		SetString("connection.uri_san_peer_certificate", "spiffe://grid.example/ns/grid/sa/billing").
		SetBool("connection.mtls", true).
		SetInt("source.port", 51234).
		SetPeer("downstream_peer", map[string]string{"workload": "billing", "namespace": "grid", "version": "v3"}, map[string]string{"app": "billing"})
	cases := []struct {
		path string
		code uint32
		want []byte
	}{
		{"connection.uri_san_peer_certificate", 200, []byte("spiffe://grid.example/ns/grid/sa/billing")},
		{"connection.mtls", 200, []byte{1}},
		{"source.port", 200, binary.LittleEndian.AppendUint64(nil, 51234)},
		{"request.path", 200, []byte("/prop?path=request.path")},
		{"request.url_path", 200, []byte("/prop")},
		{"request.method", 200, []byte("GET")},
		{"request.host", 200, []byte("meter-api")},
		{"plugin_name", 200, []byte("grid.guard")},
		{"plugin_vm_id", 200, []byte("grid.guard")},
		{"xds.cluster_name", 200, []byte("inbound|8443||meter-api")},
		{"filter_state.downstream_peer.workload", 200, []byte("billing")},
		{"filter_state.downstream_peer.labels.app", 200, []byte("billing")},
		{"connection.unknown", 404, nil},
		{"nosuch", 404, nil},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			s := h.NewStream(props)
			s.Request("GET", "/prop?path="+tc.path, [2]string{":authority", "meter-api"})
			lr := s.ExpectLocalReply(tc.code)
			if tc.want != nil {
				assert.Equal(t, tc.want, lr.Body)
			}
		})
	}
	// set_property writes filter state wasm.<name>, read back by name.
	s := h.NewStream(nil)
	assert.Equal(t, host.Continue, s.Request("GET", "/setprop?k=tenant&v=dso-north").Action)
	s.ExpectNoLocalReply()
}

func TestHeaderEdits(t *testing.T) {
	h := probe(t)
	s := h.NewStream(nil)
	assert.Equal(t, host.Continue, s.Request("GET", "/header", [2]string{"X-Probe", "a"}, [2]string{"x-probe", "b"}, [2]string{"x-remove", "1"}).Action)
	s.ExpectNoLocalReply()
	v, ok := s.RequestHeader("x-probe")
	assert.True(t, ok)
	assert.Equal(t, "replaced", v)
	_, ok = s.RequestHeader("x-remove")
	assert.False(t, ok)
	n := 0
	for _, kv := range s.RequestHeadersNow() {
		if kv[0] == "x-probe" {
			n++
		}
	}
	assert.Equal(t, 1, n, "replace leaves one value")
}

func TestBodyRewrite(t *testing.T) {
	h := probe(t)
	s := h.NewStream(nil)
	require.Equal(t, host.Continue, s.RequestHeaders(host.Headers{{":method", "POST"}, {":path", "/body"}, {":authority", "x"}}, false).Action)
	assert.Equal(t, host.Pause, s.RequestBody([]byte("set"), false).Action, "a paused body is buffered")
	assert.Equal(t, host.Continue, s.RequestBody([]byte("point"), true).Action)
	assert.Equal(t, "SETPOINT", string(s.RequestBodyNow()))
}

func TestSharedDataCASAcrossWorkers(t *testing.T) {
	h := probe(t, hosttest.Workers(2))
	set := func(worker int, q string) *host.LocalReply {
		s := h.NewStreamOn(worker, nil)
		return s.Request("GET", "/shared/set?"+q).Reply
	}
	get := func(worker int) *host.LocalReply {
		s := h.NewStreamOn(worker, nil)
		return s.Request("GET", "/shared/get?k=budget").Reply
	}
	assert.Equal(t, uint32(404), get(0).Status, "missing key is NOT_FOUND")
	assert.Equal(t, uint32(200), set(0, "k=budget&v=10").Status)
	r := get(1)
	require.Equal(t, uint32(200), r.Status, "worker 1 sees worker 0's write (same vm_id)")
	assert.Equal(t, "10", string(r.Body))
	cas, _ := r.Headers.Get("x-cas")
	assert.Equal(t, uint32(200), set(1, "k=budget&v=9&cas="+cas).Status)
	assert.Equal(t, uint32(409), set(0, "k=budget&v=8&cas="+cas).Status, "a stale cas is CAS_MISMATCH")
	assert.Equal(t, "9", string(get(0).Body))
}

func TestQueues(t *testing.T) {
	h := probe(t, hosttest.Workers(2), hosttest.Name("q-vm"))
	s := h.NewStreamOn(1, nil)
	s.Request("GET", "/enqueue?vm=q-vm&v=hello")
	s.ExpectLocalReply(200)
	h.ExpectLog("queue item hello")
	h.ExpectLog("dequeue: error status returned by host: empty")
	s = h.NewStreamOn(0, nil)
	s.Request("GET", "/enqueue?vm=other&v=x")
	s.ExpectLocalReply(404)
}

func TestCallouts(t *testing.T) {
	h := probe(t, hosttest.Cluster("authz"))
	t.Run("success resumes the request", func(t *testing.T) {
		s := h.NewStream(nil)
		assert.Equal(t, host.Pause, s.Request("GET", "/callout?cluster=authz").Action)
		assert.Equal(t, host.Pause, s.Verdict().Action, "paused until the callout returns")
		c := h.NextCallout()
		assert.Equal(t, "/check", c.Header(":path"))
		assert.Equal(t, "authz", c.Request.Cluster)
		c.Respond("200", nil, []byte("ok-from-authz"))
		s.WaitContinued()
		v, _ := s.RequestHeader("x-callout")
		assert.Equal(t, "ok-from-authz", v)
		s.ExpectNoLocalReply()
	})
	t.Run("non-200 gets a local reply from the root context", func(t *testing.T) {
		s := h.NewStream(nil)
		s.Request("GET", "/callout?cluster=authz")
		h.NextCallout().Respond("503", nil, nil)
		s.ExpectLocalReply(403)
	})
	t.Run("failure is num_headers 0", func(t *testing.T) {
		s := h.NewStream(nil)
		s.Request("GET", "/callout?cluster=authz")
		h.NextCallout().Fail()
		s.ExpectLocalReply(502)
	})
	t.Run("timeout fails the call", func(t *testing.T) {
		s := h.NewStream(nil)
		s.Request("GET", "/callout?cluster=authz&timeout=100")
		require.Len(t, h.Callouts(), 1)
		h.Advance(150 * time.Millisecond)
		s.ExpectLocalReply(502)
	})
	t.Run("unknown cluster is BAD_ARGUMENT", func(t *testing.T) {
		s := h.NewStream(nil)
		s.Request("GET", "/callout?cluster=nosuch")
		assert.Contains(t, string(s.ExpectLocalReply(500).Body), "bad argument")
	})
	t.Run("missing :path is BAD_ARGUMENT", func(t *testing.T) {
		s := h.NewStream(nil)
		s.Request("GET", "/callout?cluster=authz&nopath=1")
		assert.Contains(t, string(s.ExpectLocalReply(500).Body), "bad argument")
	})
}

// TestWait checks the driver's view of a paused stream: Wait returns Pause
// while the module has not decided (its context ended first), then the
// verdict the module reached from its callout callback.
func TestWait(t *testing.T) {
	h := probe(t, hosttest.Cluster("authz"))
	cases := []struct {
		name   string
		answer func(c *hosttest.Callout)
		want   host.Action
		status uint32
	}{
		{"resumed", func(c *hosttest.Callout) { c.Respond("200", nil, []byte("ok")) }, host.Continue, 0},
		{"answered", func(c *hosttest.Callout) { c.Respond("500", nil, nil) }, host.Reply, 403},
		{"failed callout", (*hosttest.Callout).Fail, host.Reply, 502},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := h.NewStream(nil)
			require.Equal(t, host.Pause, s.Request("GET", "/callout?cluster=authz").Action)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			assert.Equal(t, host.Verdict{Action: host.Pause}, s.Stream.Wait(ctx), "no decision before the callout returns")
			go tc.answer(h.NextCallout())
			v := s.Stream.Wait(context.Background())
			assert.Equal(t, tc.want, v.Action)
			if tc.status != 0 {
				require.NotNil(t, v.Reply)
				assert.Equal(t, tc.status, v.Reply.Status)
			}
			assert.Equal(t, v, s.Stream.Wait(context.Background()), "a decided stream answers at once")
		})
	}
}

func TestTicks(t *testing.T) {
	h := probe(t, hosttest.PluginConfig([]byte("tick=100")), hosttest.Workers(2))
	h.Advance(350 * time.Millisecond)
	n := 0
	for _, m := range h.LogMessages(host.LogInfo) {
		if m == "tick 3" {
			n++
		}
	}
	assert.Equal(t, 2, n, "each worker's root context ticks every 100ms")
}

func TestMetrics(t *testing.T) {
	h := probe(t)
	s := h.NewStream(nil)
	s.Request("GET", "/metric")
	assert.Equal(t, "counter=3 gauge=-2", string(s.ExpectLocalReply(200).Body))
	assert.Equal(t, int64(3), h.Counter("wasmcustom.probe_counter"))
	assert.Equal(t, int64(-2), h.Counter("wasmcustom.probe_gauge"))
	hist, ok := h.Runtime.Stats().Histogram("wasmcustom.probe_hist")
	assert.True(t, ok)
	assert.Equal(t, []uint64{42}, hist)
}

func TestWASIBehaviour(t *testing.T) {
	h := probe(t, hosttest.Env(map[string]string{"GRID_REGION": "north"}), hosttest.VMConfig([]byte("vmcfg")))
	s := h.NewStream(nil)
	s.Request("GET", "/env?k=GRID_REGION")
	assert.Equal(t, "north", string(s.ExpectLocalReply(200).Body), "environ_* serve vm_config.environment_variables")
	s = h.NewStream(nil)
	s.Request("GET", "/print")
	var info, errs []string
	for _, e := range h.Logs() {
		switch e.Level {
		case host.LogInfo:
			info = append(info, e.Message)
		case host.LogError:
			errs = append(errs, e.Message)
		}
	}
	assert.Contains(t, info, "to stdout", "fd 1 logs at info, trailing newline stripped")
	assert.Contains(t, errs, "to stderr", "fd 2 logs at error")
	h.ExpectLog(`probe started vm_config="vmcfg"`)
}

func TestFailurePolicies(t *testing.T) {
	cases := []struct {
		name       string
		policy     host.FailurePolicy
		wantAction host.Action
		wantStatus uint32
		nextOK     bool
	}{
		{"fail closed", host.FailClosed, host.Reply, 503, false},
		{"fail open", host.FailOpen, host.Continue, 0, false},
		{"fail reload", host.FailReload, host.Reply, 503, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := probe(t, hosttest.FailurePolicy(tc.policy), hosttest.Name("fp"))
			s := h.NewStreamOn(0, nil)
			assert.Equal(t, tc.wantAction, s.Request("GET", "/panic").Action)
			if tc.wantStatus != 0 {
				assert.Equal(t, "wasm_fail_stream", s.ExpectLocalReply(tc.wantStatus).Details)
			} else {
				s.ExpectNoLocalReply()
			}
			h.ExpectLog("probe: asked to panic")
			assert.Equal(t, int64(1), h.Counter("wasm.fp.vm_failed"))
			assert.True(t, h.Plugin.Worker(0).Failed(), "a trapped VM is never run again")

			next := h.NewStreamOn(0, nil)
			next.Request("GET", "/metric")
			if tc.nextOK {
				next.ExpectLocalReply(200)
				assert.Equal(t, int64(1), h.Counter("wasm.fp.vm_reloaded"))
			} else if tc.policy == host.FailClosed {
				next.ExpectLocalReply(503)
			} else {
				next.ExpectNoLocalReply()
			}
		})
	}
}

func TestCallbackDeadline(t *testing.T) {
	h := probe(t, hosttest.CallbackDeadline(200*time.Millisecond), hosttest.Name("slow"))
	s := h.NewStream(nil)
	assert.Equal(t, host.Reply, s.Request("GET", "/loop").Action, "an overrun callback fails the stream closed")
	s.ExpectLocalReply(503)
	assert.True(t, h.Plugin.Worker(0).Failed())
	assert.ErrorContains(t, h.Plugin.Worker(0).Err(), "deadline")
}

func TestMemoryCap(t *testing.T) {
	h := probe(t, hosttest.MemoryLimitPages(256), hosttest.Name("mem"))
	s := h.NewStream(nil)
	s.Request("GET", "/memory?mb=2")
	s.ExpectLocalReply(200)
	s = h.NewStream(nil)
	s.Request("GET", "/memory?mb=64")
	s.ExpectLocalReply(503)
	assert.True(t, h.Plugin.Worker(0).Failed(), "growing past the cap traps the VM")
}

func TestStartupFailures(t *testing.T) {
	_, err := hosttest.Start(t, wasmbuild.ForTest(t, testfilters+"probe"), hosttest.PluginConfig([]byte("fail")))
	assert.ErrorContains(t, err, "proxy_on_configure returned false")

	_, err = hosttest.Start(t, wasmbuild.ForTest(t, testfilters+"initcall"))
	assert.ErrorContains(t, err, "not allowed during VM start-up")
}

func TestLoadChecksPerProfile(t *testing.T) {
	newWASI, err := os.ReadFile(wasmbuild.ForTest(t, testfilters+"newwasi"))
	require.NoError(t, err)
	hello, err := os.ReadFile(wasmbuild.ForTest(t, "github.com/meshguard/meshguard/filters/hello"))
	require.NoError(t, err)
	ctx := context.Background()
	cases := []struct {
		name    string
		profile host.Profile
		bin     []byte
		wantErr string
	}{
		{"go filter on 1.33", host.ProfileEnvoy133, hello, ""},
		{"go filter on latest", host.ProfileEnvoyLatest, hello, ""},
		{"new WASI on 1.33", host.ProfileEnvoy133, newWASI, "Failed to load Wasm module due to a missing import: wasi_snapshot_preview1.fd_readdir"},
		{"new WASI on latest", host.ProfileEnvoyLatest, newWASI, ""},
		{"not wasm", host.ProfileEnvoyLatest, []byte("#!/bin/sh\n"), "missing \\0asm magic"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep := host.CheckModule(ctx, tc.bin, host.CheckOptions{Profile: tc.profile})
			if tc.wantErr == "" {
				assert.True(t, rep.Loadable(), rep.Failure())
				assert.Equal(t, "0_2_1", rep.ABIVersion)
				return
			}
			assert.False(t, rep.Loadable())
			assert.Contains(t, rep.Failure(), tc.wantErr)
		})
	}
}
