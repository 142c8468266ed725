package abi

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/meshguard/meshguard/filters/wasmbuild"
	proxyhost "github.com/meshguard/meshguard/host"
	"github.com/meshguard/meshguard/host/hosttest"
)

const sdkModule = "github.com/tetratelabs/proxy-wasm-go-sdk"

// sdkDir is the SDK's source in the module cache, at the version go.mod pins.
func sdkDir(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", sdkModule).Output()
	require.NoError(t, err, "go list -m %s", sdkModule)
	dir := strings.TrimSpace(string(out))
	require.NotEmpty(t, dir)
	return dir
}

func parseFile(t *testing.T, path string) *ast.File {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ParseComments|parser.SkipObjectResolution)
	require.NoError(t, err)
	return f
}

// interfaceMethods returns name -> normalized signature of an interface type.
func interfaceMethods(t *testing.T, f *ast.File, name string) map[string]string {
	t.Helper()
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok {
			continue
		}
		for _, s := range gd.Specs {
			ts, ok := s.(*ast.TypeSpec)
			if !ok || ts.Name.Name != name {
				continue
			}
			it, ok := ts.Type.(*ast.InterfaceType)
			require.True(t, ok, "%s is not an interface", name)
			out := map[string]string{}
			for _, m := range it.Methods.List {
				ft := m.Type.(*ast.FuncType)
				out[m.Names[0].Name] = signature(ft)
			}
			return out
		}
	}
	t.Fatalf("interface %s not found", name)
	return nil
}

// internalNamed are the SDK's internal named types, all defined as uint32; the
// mirror spells them uint32.
var internalNamed = map[string]string{"LogLevel": "uint32", "MapType": "uint32", "BufferType": "uint32", "StreamType": "uint32", "MetricType": "uint32", "Status": "uint32"}

func typeString(e ast.Expr) string {
	switch v := e.(type) {
	case *ast.Ident:
		if n, ok := internalNamed[v.Name]; ok {
			return n
		}
		return v.Name
	case *ast.StarExpr:
		return "*" + typeString(v.X)
	case *ast.SelectorExpr:
		return typeString(v.X) + "." + v.Sel.Name
	default:
		return "?"
	}
}

func fieldTypes(fl *ast.FieldList) []string {
	if fl == nil {
		return nil
	}
	var out []string
	for _, f := range fl.List {
		n := len(f.Names)
		if n == 0 {
			n = 1
		}
		for range n {
			out = append(out, typeString(f.Type))
		}
	}
	return out
}

func signature(ft *ast.FuncType) string {
	return "(" + strings.Join(fieldTypes(ft.Params), ",") + ")" + strings.Join(fieldTypes(ft.Results), ",")
}

// TestMirrorMatchesSDK fails when the SDK's hostcall interface and the
// adapter's mirror differ in any method, so an SDK bump breaks a test and
// never production.
func TestMirrorMatchesSDK(t *testing.T) {
	sdk := interfaceMethods(t, parseFile(t, filepath.Join(sdkDir(t), "proxywasm/internal/abi_hostcalls_mock.go")), "ProxyWasmHost")
	mirror := interfaceMethods(t, parseFile(t, "host_wasip1.go"), "sdkHost")
	require.NotEmpty(t, sdk)
	assert.Equal(t, sdk, mirror, "filters/abi sdkHost must mirror the SDK's internal.ProxyWasmHost exactly")

	// keepMethods must call every method, or the linker drops it.
	src, err := os.ReadFile("host_wasip1.go")
	require.NoError(t, err)
	for name := range sdk {
		assert.Contains(t, string(src), "h."+name+"(", "keepMethods must call %s", name)
	}
}

// wasmSlots counts the wasm parameters a Go parameter list lowers to: one per
// parameter (pointers and ints are i32 in the ABI, int64/uint64 are i64).
func wasmSlots(fl *ast.FieldList) int { return len(fieldTypes(fl)) }

var (
	exportRe = regexp.MustCompile(`^//export (proxy_\w+)`)
	importRe = regexp.MustCompile(`^//go:wasmimport env (proxy_\w+)`)
)

func directiveFuncs(t *testing.T, f *ast.File, re *regexp.Regexp) map[string]*ast.FuncDecl {
	t.Helper()
	out := map[string]*ast.FuncDecl{}
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Doc == nil {
			continue
		}
		for _, c := range fd.Doc.List {
			if m := re.FindStringSubmatch(c.Text); m != nil {
				out[m[1]] = fd
			}
		}
	}
	return out
}

// TestImportsMatchABI checks every hostcall the SDK declares for TinyGo has a
// wasmimport here with the same name and arity, using only 32/64-bit integer
// or pointer types (Go's int would be rejected, and would be i64 anyway).
func TestImportsMatchABI(t *testing.T) {
	sdk := directiveFuncs(t, parseFile(t, filepath.Join(sdkDir(t), "proxywasm/internal/abi_hostcalls.go")), exportRe)
	ours := directiveFuncs(t, parseFile(t, "imports_wasip1.go"), importRe)
	require.NotEmpty(t, sdk)
	names := func(m map[string]*ast.FuncDecl) []string {
		var s []string
		for k := range m {
			s = append(s, k)
		}
		sort.Strings(s)
		return s
	}
	assert.Equal(t, names(sdk), names(ours))
	allowed := map[string]bool{"uint32": true, "int32": true, "int64": true, "uint64": true, "unsafe.Pointer": true}
	for name, fd := range ours {
		if s, ok := sdk[name]; ok {
			assert.Equal(t, wasmSlots(s.Type.Params), wasmSlots(fd.Type.Params), "%s arity", name)
		}
		for _, ty := range fieldTypes(fd.Type.Params) {
			assert.True(t, allowed[ty], "%s has parameter type %s", name, ty)
		}
		assert.Equal(t, []string{"uint32"}, fieldTypes(fd.Type.Results), "%s returns a status", name)
	}
}

// TestBuiltModuleShape builds the example filter with the standard toolchain
// and checks what a Proxy-Wasm host sees: the ABI marker, every callback the
// SDK implements, the allocator, and imports that are i32/i64 only.
func TestBuiltModuleShape(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a wasm module")
	}
	path := wasmbuild.ForTest(t, "github.com/meshguard/meshguard/filters/hello")
	bin, err := os.ReadFile(path)
	require.NoError(t, err)
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	mod, err := rt.CompileModule(ctx, bin)
	require.NoError(t, err)

	exports := mod.ExportedFunctions()
	for _, name := range []string{
		"_initialize", "proxy_abi_version_0_2_1", "proxy_on_memory_allocate",
		"proxy_on_context_create", "proxy_on_vm_start", "proxy_on_configure", "proxy_on_tick",
		"proxy_on_queue_ready", "proxy_on_new_connection", "proxy_on_downstream_data",
		"proxy_on_downstream_connection_close", "proxy_on_upstream_data", "proxy_on_upstream_connection_close",
		"proxy_on_request_headers", "proxy_on_request_body", "proxy_on_request_trailers",
		"proxy_on_response_headers", "proxy_on_response_body", "proxy_on_response_trailers",
		"proxy_on_http_call_response", "proxy_on_log", "proxy_on_done", "proxy_on_delete",
	} {
		_, ok := exports[name]
		assert.True(t, ok, "export %s", name)
	}
	_, old := exports["proxy_abi_version_0_2_0"]
	assert.False(t, old, "only the 0.2.1 marker is exported")
	assert.Equal(t, []api.ValueType{api.ValueTypeI32}, exports["proxy_on_memory_allocate"].ResultTypes())
	assert.Equal(t, []api.ValueType{api.ValueTypeI32, api.ValueTypeI32, api.ValueTypeI32}, exports["proxy_on_request_headers"].ParamTypes())

	for _, imp := range mod.ImportedFunctions() {
		modName, name, _ := imp.Import()
		if modName != "env" {
			assert.Equal(t, "wasi_snapshot_preview1", modName, name)
			// The adapter itself must not pull in WASI calls the oldest
			// supported Envoy lacks (the module would fail to load).
			assert.Contains(t, proxyhost.ProfileEnvoy133.WASIFunctions(), name, "WASI import missing from Envoy 1.33")
			continue
		}
		assert.True(t, strings.HasPrefix(name, "proxy_"), name)
		for _, p := range imp.ParamTypes() {
			assert.Contains(t, []api.ValueType{api.ValueTypeI32, api.ValueTypeI64}, p, "%s params", name)
		}
		if name == "proxy_increment_metric" {
			assert.Equal(t, []api.ValueType{api.ValueTypeI32, api.ValueTypeI64}, imp.ParamTypes())
		}
	}
}

func TestScratch(t *testing.T) {
	wasm := wasmbuild.ForTest(t, "github.com/meshguard/meshguard/filters/abi/internal/scratchprobe")
	h := hosttest.New(t, wasm)
	for range 3 { // the arena is reused across requests
		s := h.NewStream(nil)
		s.Request("GET", "/", [2]string{"x-a", strings.Repeat("a", 100)}, [2]string{"x-big", strings.Repeat("z", 40<<10)},
			[2]string{"x-b", strings.Repeat("b", 200)})
		lr := s.ExpectLocalReply(200)
		require.Equal(t, uint32(200), lr.Status, "%s", lr.Body)
	}
}
