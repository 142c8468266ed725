package host_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/meshguard/meshguard/filters/wasmbuild"
	"github.com/meshguard/meshguard/host/hosttest"
)

// TestHostcallStatusCodes runs a module that calls the env hostcalls directly
// (no SDK in between) with good and bad arguments and compares every status
// with Envoy's: OK 0, NOT_FOUND 1, BAD_ARGUMENT 2, INVALID_MEMORY_ACCESS 6,
// EMPTY 7, CAS_MISMATCH 8, UNIMPLEMENTED 12.
func TestHostcallStatusCodes(t *testing.T) {
	h := hosttest.New(t, wasmbuild.ForTest(t, testfilters+"statuses"), hosttest.Name("statuses"), hosttest.Cluster("authz"))
	s := h.NewStream(nil)
	s.Request("GET", "/status", [2]string{"x-a", "1"})
	body := string(s.ExpectLocalReply(200).Body)
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(body), "\n") {
		k, v, ok := strings.Cut(line, "=")
		require.True(t, ok, line)
		got[k] = v
	}
	want := []struct{ call, status string }{
		{"get_header_map_value/present", "0"},
		{"get_header_map_value/missing", "1"},
		{"get_header_map_value/response_map_in_request", "2"},
		{"get_header_map_value/bad_map_type", "2"},
		{"get_header_map_value/bad_key_pointer", "6"},
		{"get_header_map_pairs/request", "0"},
		{"get_header_map_pairs/request_trailers_empty", "0"},
		{"get_header_map_pairs/empty_ptr", "0"},
		{"get_header_map_pairs/empty_size", "0"},
		{"get_header_map_size/request", "0"},
		{"set_header_map_pairs/valid", "0"},
		// Envoy decodes malformed pairs (trailing bytes) to an empty map: the
		// call succeeds and the headers are replaced with nothing.
		{"set_header_map_pairs/trailing_bytes", "0"},
		{"get_buffer_status/vm_config", "0"},
		{"get_buffer_bytes/vm_config", "0"},
		{"get_buffer_bytes/plugin_config_outside_configure", "1"},
		{"get_buffer_bytes/http_call_body_outside_callback", "1"},
		{"get_buffer_bytes/bad_type", "2"},
		{"set_effective_context/unknown", "2"},
		{"set_effective_context/self", "0"},
		{"continue_stream/upstream", "12"},
		{"continue_stream/bad_type", "2"},
		{"close_stream/bad_type", "2"},
		{"http_call/unknown_cluster", "2"},
		{"http_call/negative_timeout", "2"},
		{"http_call/missing_path", "2"},
		{"http_call/missing_method", "2"},
		{"http_call/missing_authority", "2"},
		{"http_call/bad_pointer", "6"},
		{"http_call/ok", "0"},
		{"grpc_call", "12"},
		{"get_shared_data/missing", "1"},
		{"set_shared_data/first", "0"},
		{"get_shared_data/present", "0"},
		{"set_shared_data/stale_cas", "8"},
		{"set_shared_data/current_cas", "0"},
		{"set_shared_data/old_cas", "8"},
		{"set_shared_data/zero_cas", "0"},
		{"register_shared_queue", "0"},
		{"resolve_shared_queue/known", "0"},
		{"resolve_shared_queue/unknown", "1"},
		{"dequeue_shared_queue/empty", "7"},
		{"dequeue_shared_queue/unknown", "1"},
		{"enqueue_shared_queue/unknown", "1"},
		{"enqueue_shared_queue/ok", "0"},
		{"dequeue_shared_queue/ok", "0"},
		{"get_property/missing", "1"},
		{"get_property/plugin_name", "0"},
		{"define_metric/bad_type", "2"},
		{"define_metric/counter", "0"},
		{"increment_metric/counter", "0"},
		{"increment_metric/unknown", "1"},
		{"get_metric/counter", "0"},
		{"get_metric/value", "2"},
		{"get_metric/unknown", "1"},
		{"call_foreign_function/unknown", "1"},
		{"call_foreign_function/compress", "0"},
		{"call_foreign_function/uncompress", "0"},
		{"call_foreign_function/round_trip", "1"},
		{"call_foreign_function/uncompress_garbage", "3"},
	}
	for _, w := range want {
		t.Run(w.call, func(t *testing.T) {
			assert.Equal(t, w.status, got[w.call])
		})
	}
	assert.Len(t, got, len(want), "every reported call is checked")
	assert.Empty(t, s.RequestHeadersNow(), "malformed pairs replaced the request headers with an empty map")
}
