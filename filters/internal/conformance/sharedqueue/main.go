// Command sharedqueue runs as two plugins of one vm_id (SDK example
// "shared_queue"): root_id "receiver" registers queues and logs what arrives;
// root_id "sender" resolves them and enqueues each request and response header
// as JSON.
package main

import (
	"encoding/json"

	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm"
	"github.com/tetratelabs/proxy-wasm-go-sdk/proxywasm/types"

	_ "github.com/meshguard/meshguard/filters/abi"
)

const vmID = "sharedqueue"

var queueNames = []string{"http_request_headers", "http_response_headers"}

func main() { proxywasm.SetVMContext(&vm{}) }

type vm struct{ types.DefaultVMContext }

func (*vm) NewPluginContext(uint32) types.PluginContext {
	return &plugin{names: map[uint32]string{}}
}

type plugin struct {
	types.DefaultPluginContext
	receiver bool
	names    map[uint32]string // receiver: queue id → name
	req, res uint32            // sender: resolved queue ids
}

func (p *plugin) OnPluginStart(int) types.OnPluginStartStatus {
	root, err := proxywasm.GetProperty([]string{"plugin_root_id"})
	if err != nil {
		proxywasm.LogCriticalf("plugin_root_id: %v", err)
		return types.OnPluginStartStatusFailed
	}
	switch string(root) {
	case "receiver":
		p.receiver = true
		for _, n := range queueNames {
			id, err := proxywasm.RegisterSharedQueue(n)
			if err != nil {
				proxywasm.LogCriticalf("register queue %s: %v", n, err)
				return types.OnPluginStartStatusFailed
			}
			p.names[id] = n
			proxywasm.LogInfof("queue %q registered as %d", n, id)
		}
	case "sender":
		var err1, err2 error
		p.req, err1 = proxywasm.ResolveSharedQueue(vmID, queueNames[0])
		p.res, err2 = proxywasm.ResolveSharedQueue(vmID, queueNames[1])
		if err1 != nil || err2 != nil {
			proxywasm.LogCriticalf("resolve queues: %v %v", err1, err2)
			return types.OnPluginStartStatusFailed
		}
	default:
		proxywasm.LogCriticalf("unknown root id %q", root)
		return types.OnPluginStartStatusFailed
	}
	return types.OnPluginStartStatusOK
}

func (p *plugin) OnQueueReady(id uint32) {
	data, err := proxywasm.DequeueSharedQueue(id)
	switch err {
	case nil:
		proxywasm.LogInfof("dequeued data from %s (%d): %s", p.names[id], id, data)
	case types.ErrorStatusEmpty:
	default:
		proxywasm.LogCriticalf("dequeue %d: %v", id, err)
	}
}

func (p *plugin) NewHttpContext(uint32) types.HttpContext {
	if p.receiver {
		return &types.DefaultHttpContext{}
	}
	return &stream{p: p}
}

type stream struct {
	types.DefaultHttpContext
	p *plugin
}

func enqueue(queue uint32, get func() ([][2]string, error)) {
	hs, err := get()
	if err != nil {
		proxywasm.LogCriticalf("headers: %v", err)
		return
	}
	for _, h := range hs {
		msg, _ := json.Marshal(struct {
			Key   string `json:"key"`
			Value string `json:"value"`
		}{h[0], h[1]})
		if err := proxywasm.EnqueueSharedQueue(queue, msg); err != nil {
			proxywasm.LogCriticalf("enqueue: %v", err)
			continue
		}
		proxywasm.LogInfof("enqueued data: %s", msg)
	}
}

func (s *stream) OnHttpRequestHeaders(int, bool) types.Action {
	enqueue(s.p.req, proxywasm.GetHttpRequestHeaders)
	return types.ActionContinue
}

func (s *stream) OnHttpResponseHeaders(int, bool) types.Action {
	enqueue(s.p.res, proxywasm.GetHttpResponseHeaders)
	return types.ActionContinue
}
