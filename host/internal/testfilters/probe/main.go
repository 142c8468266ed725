// Command probe is a test filter that exercises the host's behaviours on
// request: each path asks for one thing (a property, shared data, a callout,
// a queue message, a trap, a runaway loop, memory) and reports the result in
// a local reply, so host tests can compare against Envoy's documented
// behaviour with a real module.
package main

import (
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	_ "github.com/meshguard/meshguard/filters/abi"
)

func main() {}

func init() { proxywasm.SetVMContext(&vm{}) }

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext { return &plugin{} }

type plugin struct {
	types.DefaultPluginContext
	queue   uint32
	ticks   int
	hog     [][]byte
	pending map[uint32]uint32 // callout id -> stream context id
}

func (p *plugin) OnPluginStart(int) types.OnPluginStartStatus {
	cfg, _ := proxywasm.GetPluginConfiguration()
	p.pending = map[uint32]uint32{}
	for _, kv := range strings.Split(string(cfg), ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "tick":
			ms, _ := strconv.Atoi(v)
			if err := proxywasm.SetTickPeriodMilliSeconds(uint32(ms)); err != nil {
				proxywasm.LogErrorf("tick: %v", err)
			}
		case "fail":
			return types.OnPluginStartStatusFailed
		}
	}
	id, err := proxywasm.RegisterSharedQueue("q")
	if err != nil {
		proxywasm.LogErrorf("register queue: %v", err)
	}
	p.queue = id
	vmCfg, _ := proxywasm.GetVMConfiguration()
	proxywasm.LogInfof("probe started vm_config=%q", vmCfg)
	return types.OnPluginStartStatusOK
}

func (p *plugin) OnTick() {
	p.ticks++
	proxywasm.LogInfof("tick %d", p.ticks)
}

func (p *plugin) OnQueueReady(id uint32) {
	for {
		b, err := proxywasm.DequeueSharedQueue(id)
		if err != nil {
			proxywasm.LogInfof("dequeue: %v", err)
			return
		}
		proxywasm.LogInfof("queue item %s", b)
	}
}

func (p *plugin) NewHttpContext(id uint32) types.HttpContext { return &stream{id: id, p: p} }

type stream struct {
	types.DefaultHttpContext
	id uint32
	p  *plugin
}

func reply(code uint32, body string, hdrs ...[2]string) types.Action {
	if err := proxywasm.SendHttpResponse(code, hdrs, []byte(body), -1); err != nil {
		proxywasm.LogErrorf("send: %v", err)
	}
	return types.ActionPause
}

func (s *stream) OnHttpRequestHeaders(int, bool) types.Action {
	raw, _ := proxywasm.GetHttpRequestHeader(":path")
	u, _ := url.Parse(raw)
	q := u.Query()
	switch u.Path {
	case "/env":
		return reply(200, os.Getenv(q.Get("k")))
	case "/print":
		fmt.Println("to stdout")
		fmt.Fprintln(os.Stderr, "to stderr")
		return reply(200, "printed")
	case "/panic":
		panic("probe: asked to panic")
	case "/loop":
		for i := 0; ; i++ {
			if i < 0 {
				return types.ActionContinue
			}
		}
	case "/memory":
		mb, _ := strconv.Atoi(q.Get("mb"))
		for range mb {
			s.p.hog = append(s.p.hog, make([]byte, 1<<20))
		}
		return reply(200, fmt.Sprintf("holding %d MiB", len(s.p.hog)))
	case "/prop":
		v, err := proxywasm.GetProperty(strings.Split(q.Get("path"), "."))
		if err != nil {
			return reply(404, err.Error())
		}
		return reply(200, string(v))
	case "/setprop":
		if err := proxywasm.SetProperty([]string{q.Get("k")}, []byte(q.Get("v"))); err != nil {
			return reply(500, err.Error())
		}
		return types.ActionContinue
	case "/shared/set":
		cas, _ := strconv.ParseUint(q.Get("cas"), 10, 32)
		if err := proxywasm.SetSharedData(q.Get("k"), []byte(q.Get("v")), uint32(cas)); err != nil {
			return reply(409, err.Error())
		}
		return reply(200, "ok")
	case "/shared/get":
		v, cas, err := proxywasm.GetSharedData(q.Get("k"))
		if err != nil {
			return reply(404, err.Error())
		}
		return reply(200, string(v), [2]string{"x-cas", strconv.FormatUint(uint64(cas), 10)})
	case "/enqueue":
		id, err := proxywasm.ResolveSharedQueue(q.Get("vm"), "q")
		if err != nil {
			return reply(404, err.Error())
		}
		if err := proxywasm.EnqueueSharedQueue(id, []byte(q.Get("v"))); err != nil {
			return reply(500, err.Error())
		}
		return reply(200, "queued")
	case "/callout":
		timeout, _ := strconv.Atoi(q.Get("timeout"))
		if timeout == 0 {
			timeout = 5000
		}
		hdrs := [][2]string{{":method", "GET"}, {":path", "/check"}, {":authority", "upstream"}}
		if q.Get("nopath") != "" {
			hdrs = hdrs[:0]
		}
		id, err := proxywasm.DispatchHttpCall(q.Get("cluster"), hdrs, nil, nil, uint32(timeout), s.onCallout)
		if err != nil {
			return reply(500, "dispatch: "+err.Error())
		}
		s.p.pending[id] = s.id
		return types.ActionPause
	case "/metric":
		c := proxywasm.DefineCounterMetric("probe_counter")
		c.Increment(3)
		g := proxywasm.DefineGaugeMetric("probe_gauge")
		g.Add(-2)
		h := proxywasm.DefineHistogramMetric("probe_hist")
		h.Record(42)
		return reply(200, fmt.Sprintf("counter=%d gauge=%d", c.Value(), g.Value()))
	case "/header":
		if err := proxywasm.ReplaceHttpRequestHeader("x-probe", "replaced"); err != nil {
			return reply(500, err.Error())
		}
		if err := proxywasm.RemoveHttpRequestHeader("x-remove"); err != nil {
			return reply(500, err.Error())
		}
		if _, err := proxywasm.GetHttpRequestHeader("x-missing"); err == nil {
			return reply(500, "missing header found")
		}
		return types.ActionContinue
	}
	return types.ActionContinue
}

func (s *stream) onCallout(numHeaders, bodySize, _ int) {
	// The response is only readable on the root context (as in Envoy), so read
	// it before switching to the stream.
	var body []byte
	var status string
	if numHeaders > 0 {
		body, _ = proxywasm.GetHttpCallResponseBody(0, bodySize)
		hdrs, _ := proxywasm.GetHttpCallResponseHeaders()
		for _, kv := range hdrs {
			if kv[0] == ":status" {
				status = kv[1]
			}
		}
	}
	if err := proxywasm.SetEffectiveContext(s.id); err != nil {
		proxywasm.LogErrorf("effective context: %v", err)
		return
	}
	if numHeaders == 0 {
		reply(502, "callout failed")
		return
	}
	if status != "200" {
		reply(403, "callout said "+status)
		return
	}
	if err := proxywasm.AddHttpRequestHeader("x-callout", string(body)); err != nil {
		proxywasm.LogErrorf("add header: %v", err)
	}
	if err := proxywasm.ResumeHttpRequest(); err != nil {
		proxywasm.LogErrorf("resume: %v", err)
	}
}

func (s *stream) OnHttpRequestBody(size int, eos bool) types.Action {
	if !eos {
		return types.ActionPause
	}
	b, err := proxywasm.GetHttpRequestBody(0, size)
	if err != nil {
		proxywasm.LogErrorf("body: %v", err)
		return types.ActionContinue
	}
	if err := proxywasm.ReplaceHttpRequestBody([]byte(strings.ToUpper(string(b)))); err != nil {
		proxywasm.LogErrorf("replace body: %v", err)
	}
	return types.ActionContinue
}
