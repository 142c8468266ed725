package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
)

// RuntimeConfig configures a Runtime (one per emulated proxy).
type RuntimeConfig struct {
	// Profile is the emulated Envoy release; default ProfileEnvoyLatest.
	Profile Profile
	// CompilationCacheDir keeps compiled modules on disk across processes;
	// empty keeps them in memory only (shared by every Runtime of the process).
	CompilationCacheDir string
	// MemoryLimitPages caps each VM's linear memory (64 KiB pages); default
	// 16384 (1 GiB, Envoy's maximum).
	MemoryLimitPages uint32
	// CallbackDeadline bounds one callback; a VM that overruns is discarded.
	// Zero disables the deadline.
	CallbackDeadline time.Duration
	// Clock drives time, ticks and callout timeouts; default the wall clock.
	Clock Clock
	// Logger receives module logs (proxy_log, fd_write) and host events.
	Logger *slog.Logger
	// LogLevel is the proxy's log level (what get_log_level reports and the
	// lowest level emitted); default LogInfo.
	LogLevel LogLevel
	// LogSink, when set, also receives every emitted module log line.
	LogSink func(LogEntry)
}

// LogLevel is a Proxy-Wasm log level.
type LogLevel uint32

// Proxy-Wasm log levels.
const (
	LogTrace LogLevel = iota
	LogDebug
	LogInfo
	LogWarn
	LogError
	LogCritical
)

func (l LogLevel) String() string {
	switch l {
	case LogTrace:
		return "trace"
	case LogDebug:
		return "debug"
	case LogInfo:
		return "info"
	case LogWarn:
		return "warn"
	case LogError:
		return "error"
	case LogCritical:
		return "critical"
	}
	return fmt.Sprintf("level(%d)", uint32(l))
}

// Slog maps the level to a log/slog level.
func (l LogLevel) Slog() slog.Level {
	switch l {
	case LogTrace, LogDebug:
		return slog.LevelDebug
	case LogInfo:
		return slog.LevelInfo
	case LogWarn:
		return slog.LevelWarn
	}
	return slog.LevelError
}

// LogEntry is one module log line.
type LogEntry struct {
	Plugin  string
	Worker  int
	Level   LogLevel
	Message string
}

// Runtime holds the wazero runtime, the host modules of one Envoy profile,
// and the proxy-wide state shared by all plugins: shared data and queues per
// vm_id, and the stats store.
type Runtime struct {
	cfg   RuntimeConfig
	rt    wazero.Runtime
	cache wazero.CompilationCache
	log   *slog.Logger

	mu      sync.Mutex
	shared  map[string]*sharedData
	queues  *queueRegistry
	stats   *Stats
	vms     map[*VM]struct{}
	closing chan struct{}
	wg      sync.WaitGroup
}

var (
	memCacheOnce sync.Once
	memCache     wazero.CompilationCache
)

// NewRuntime creates a runtime with the profile's WASI and the env hostcalls.
func NewRuntime(ctx context.Context, cfg RuntimeConfig) (*Runtime, error) {
	if cfg.Profile == "" {
		cfg.Profile = ProfileEnvoyLatest
	}
	if _, err := ParseProfile(string(cfg.Profile)); err != nil {
		return nil, err
	}
	if cfg.MemoryLimitPages == 0 {
		cfg.MemoryLimitPages = 16384
	}
	if cfg.Clock == nil {
		cfg.Clock = WallClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LogLevel == 0 && cfg.LogSink == nil {
		cfg.LogLevel = LogInfo
	}
	var cache wazero.CompilationCache
	if cfg.CompilationCacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(cfg.CompilationCacheDir)
		if err != nil {
			return nil, fmt.Errorf("host: compilation cache %s: %w", cfg.CompilationCacheDir, err)
		}
		cache = c
	} else {
		memCacheOnce.Do(func() { memCache = wazero.NewCompilationCache() })
		cache = memCache
	}
	rc := wazero.NewRuntimeConfigCompiler().
		WithCompilationCache(cache).
		WithMemoryLimitPages(cfg.MemoryLimitPages).
		WithCloseOnContextDone(cfg.CallbackDeadline > 0)
	r := &Runtime{
		cfg:     cfg,
		rt:      wazero.NewRuntimeWithConfig(ctx, rc),
		cache:   cache,
		log:     cfg.Logger,
		shared:  map[string]*sharedData{},
		queues:  newQueueRegistry(),
		stats:   newStats(),
		vms:     map[*VM]struct{}{},
		closing: make(chan struct{}),
	}
	if err := r.instantiateEnv(ctx); err != nil {
		return nil, err
	}
	if err := r.instantiateWASI(ctx); err != nil {
		return nil, err
	}
	if cfg.CallbackDeadline > 0 {
		r.wg.Add(1)
		go r.watchdog()
	}
	return r, nil
}

// Profile is the emulated Envoy release.
func (r *Runtime) Profile() Profile { return r.cfg.Profile }

// Stats is the proxy-wide stats store (module metrics and host counters).
func (r *Runtime) Stats() *Stats { return r.stats }

// Close stops the runtime and every VM.
func (r *Runtime) Close(ctx context.Context) error {
	select {
	case <-r.closing:
	default:
		close(r.closing)
	}
	r.wg.Wait()
	return r.rt.Close(ctx)
}

// watchdog cancels VMs whose current callback overran the deadline; wazero
// then aborts the call (CloseOnContextDone) and the VM is discarded.
func (r *Runtime) watchdog() {
	defer r.wg.Done()
	period := max(r.cfg.CallbackDeadline/4, time.Millisecond)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-r.closing:
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		r.mu.Lock()
		for vm := range r.vms {
			if d := vm.deadline.Load(); d != 0 && now > d {
				vm.cancel()
			}
		}
		r.mu.Unlock()
	}
}

// Module is a compiled module that passed Envoy's load checks.
type Module struct {
	compiled wazero.CompiledModule
	// ABIVersion is the Proxy-Wasm ABI the module declares ("0_2_1", ...).
	ABIVersion string
	// Imports are the imported functions as "module.name".
	Imports []string
	// Exports are the exported function names.
	Exports []string
	// Size is the module's size in bytes.
	Size int
	// Allocator is the export the host allocates guest memory with.
	Allocator string
}

// LoadError is a module the emulated Envoy refuses to load.
type LoadError struct {
	// Missing lists imports the profile does not provide.
	Missing []string
	Msg     string
}

func (e *LoadError) Error() string { return e.Msg }

var abiMarkers = []string{"proxy_abi_version_0_2_1", "proxy_abi_version_0_2_0", "proxy_abi_version_0_1_0"}

// Compile checks and compiles a module the way Envoy loads it: the wasm magic,
// a Proxy-Wasm ABI marker export, an allocator, and every import provided by
// the profile (else "Failed to load Wasm module due to a missing import: ...").
func (r *Runtime) Compile(ctx context.Context, wasm []byte) (*Module, error) {
	if !bytes.HasPrefix(wasm, []byte("\x00asm")) {
		return nil, &LoadError{Msg: "Failed to load Wasm code: not a Wasm binary (missing \\0asm magic)"}
	}
	compiled, err := r.rt.CompileModule(ctx, wasm)
	if err != nil {
		return nil, &LoadError{Msg: fmt.Sprintf("Failed to load Wasm code: %v", err)}
	}
	m := &Module{compiled: compiled, Size: len(wasm)}
	exports := compiled.ExportedFunctions()
	for name := range exports {
		m.Exports = append(m.Exports, name)
	}
	sort.Strings(m.Exports)
	for _, mk := range abiMarkers {
		if _, ok := exports[mk]; ok {
			m.ABIVersion = strings.TrimPrefix(mk, "proxy_abi_version_")
			break
		}
	}
	var missing []string
	wasi := r.cfg.Profile.WASIFunctions()
	for _, imp := range compiled.ImportedFunctions() {
		mod, name, _ := imp.Import()
		full := mod + "." + name
		m.Imports = append(m.Imports, full)
		switch mod {
		case "env":
			if !slices.Contains(envFunctionNames, name) {
				missing = append(missing, full)
			}
		case "wasi_snapshot_preview1", "wasi_unstable":
			if !slices.Contains(wasi, name) {
				missing = append(missing, full)
			}
		default:
			missing = append(missing, full)
		}
	}
	sort.Strings(m.Imports)
	switch {
	case m.ABIVersion == "":
		_ = compiled.Close(ctx)
		return m, &LoadError{Msg: "Failed to load Wasm module due to a missing proxy-wasm ABI version export (proxy_abi_version_0_2_1, _0_2_0 or _0_1_0)"}
	case len(missing) > 0:
		_ = compiled.Close(ctx)
		return m, &LoadError{Missing: missing, Msg: "Failed to load Wasm module due to a missing import: " + strings.Join(missing, ", ")}
	}
	if _, ok := exports["malloc"]; ok {
		m.Allocator = "malloc"
	} else if _, ok := exports["proxy_on_memory_allocate"]; ok {
		m.Allocator = "proxy_on_memory_allocate"
	} else {
		_ = compiled.Close(ctx)
		return m, &LoadError{Msg: "Failed to load Wasm module due to a missing malloc or proxy_on_memory_allocate export"}
	}
	return m, nil
}

// Close releases the compiled module.
func (m *Module) Close(ctx context.Context) error { return m.compiled.Close(ctx) }

// sharedDataFor returns the shared data store of a vm_id.
func (r *Runtime) sharedDataFor(vmID string) *sharedData {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.shared[vmID]
	if !ok {
		s = &sharedData{m: map[string]*sharedValue{}}
		r.shared[vmID] = s
	}
	return s
}

func (r *Runtime) trackVM(vm *VM, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if on {
		r.vms[vm] = struct{}{}
	} else {
		delete(r.vms, vm)
	}
}

// emitLog routes a module log line.
func (r *Runtime) emitLog(e LogEntry) {
	if e.Level < r.cfg.LogLevel {
		return
	}
	if r.cfg.LogSink != nil {
		r.cfg.LogSink(e)
	}
	if r.log.Enabled(context.Background(), e.Level.Slog()) {
		r.log.Log(context.Background(), e.Level.Slog(), e.Message, "plugin", e.Plugin, "worker", e.Worker, "wasm_level", e.Level.String())
	}
}

// errStartup is the trap raised by a hostcall Envoy forbids during start-up.
var errStartup = errors.New("hostcall not allowed during VM start-up")
