package host

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/tetratelabs/wazero/api"
)

// WASI errno values Envoy returns.
const (
	errnoSuccess = 0
	errnoBadf    = 8
	errnoFault   = 21
	errnoInval   = 28
	errnoNoent   = 44
	errnoNosys   = 52
	errnoNotsup  = 58
	errnoNotdir  = 20
	maxRandomGet = 64 << 10
)

type wasiFn struct {
	params []api.ValueType
	result bool
	fn     func(vm *VM, s []uint64) uint32
}

// wasiImpl follows proxy-wasm-cpp-host's exports.cc for each function.
var wasiImpl = map[string]wasiFn{
	"fd_write":                {n32(4), true, wFdWrite},
	"fd_read":                 {n32(4), true, constErrno(errnoNosys)},
	"fd_seek":                 {[]api.ValueType{i32, i64, i32, i32}, true, constErrno(errnoSuccess)},
	"fd_close":                {n32(1), true, constErrno(errnoSuccess)},
	"fd_fdstat_get":           {n32(2), true, wFdstatGet},
	"environ_get":             {n32(2), true, wEnvironGet},
	"environ_sizes_get":       {n32(2), true, wEnvironSizesGet},
	"args_get":                {n32(2), true, constErrno(errnoSuccess)},
	"args_sizes_get":          {n32(2), true, wArgsSizesGet},
	"clock_time_get":          {[]api.ValueType{i32, i64, i32}, true, wClockTimeGet},
	"random_get":              {n32(2), true, wRandomGet},
	"proc_exit":               {n32(1), false, wProcExit},
	"path_open":               {[]api.ValueType{i32, i32, i32, i32, i32, i64, i64, i32, i32}, true, constErrno(errnoNoent)},
	"fd_prestat_get":          {n32(2), true, constErrno(errnoBadf)},
	"fd_prestat_dir_name":     {n32(3), true, constErrno(errnoNosys)},
	"fd_fdstat_set_flags":     {n32(2), true, constErrno(errnoNosys)},
	"sched_yield":             {nil, true, constErrno(errnoSuccess)},
	"poll_oneoff":             {n32(4), true, wPollOneoff},
	"clock_res_get":           {n32(2), true, wClockResGet},
	"fd_advise":               {[]api.ValueType{i32, i64, i64, i32}, true, stdioOnly(errnoSuccess)},
	"fd_allocate":             {[]api.ValueType{i32, i64, i64}, true, stdioOnly(errnoSuccess)},
	"fd_datasync":             {n32(1), true, stdioOnly(errnoSuccess)},
	"fd_fdstat_set_rights":    {[]api.ValueType{i32, i64, i64}, true, stdioOnly(errnoSuccess)},
	"fd_filestat_get":         {n32(2), true, constErrno(errnoBadf)},
	"fd_filestat_set_size":    {[]api.ValueType{i32, i64}, true, stdioOnly(errnoSuccess)},
	"fd_filestat_set_times":   {[]api.ValueType{i32, i64, i64, i32}, true, stdioOnly(errnoSuccess)},
	"fd_pread":                {[]api.ValueType{i32, i32, i32, i64, i32}, true, constErrno(errnoNosys)},
	"fd_pwrite":               {[]api.ValueType{i32, i32, i32, i64, i32}, true, wFdPwrite},
	"fd_readdir":              {[]api.ValueType{i32, i32, i32, i64, i32}, true, constErrno(errnoNotdir)},
	"fd_renumber":             {n32(2), true, stdioOnly(errnoNotsup)},
	"fd_sync":                 {n32(1), true, stdioOnly(errnoSuccess)},
	"fd_tell":                 {n32(2), true, wFdTell},
	"path_create_directory":   {n32(3), true, constErrno(errnoNotsup)},
	"path_filestat_get":       {n32(5), true, constErrno(errnoNotsup)},
	"path_filestat_set_times": {[]api.ValueType{i32, i32, i32, i32, i64, i64, i32}, true, constErrno(errnoNotsup)},
	"path_link":               {n32(7), true, constErrno(errnoNotsup)},
	"path_readlink":           {n32(6), true, constErrno(errnoNotsup)},
	"path_remove_directory":   {n32(3), true, constErrno(errnoNotsup)},
	"path_rename":             {n32(6), true, constErrno(errnoNotsup)},
	"path_symlink":            {n32(5), true, constErrno(errnoNotsup)},
	"path_unlink_file":        {n32(3), true, constErrno(errnoNotsup)},
	"proc_raise":              {n32(1), true, constErrno(errnoNotsup)},
	"sock_accept":             {n32(3), true, constErrno(errnoNotsup)},
	"sock_recv":               {n32(6), true, constErrno(errnoNotsup)},
	"sock_send":               {n32(5), true, constErrno(errnoNotsup)},
	"sock_shutdown":           {n32(2), true, constErrno(errnoNotsup)},
}

func n32(n int) []api.ValueType {
	out := make([]api.ValueType, n)
	for i := range out {
		out[i] = i32
	}
	return out
}

func constErrno(e uint32) func(*VM, []uint64) uint32 {
	return func(*VM, []uint64) uint32 { return e }
}

// stdioOnly answers e for stdout/stderr and BADF for any other descriptor.
func stdioOnly(e uint32) func(*VM, []uint64) uint32 {
	return func(_ *VM, s []uint64) uint32 {
		if fd := uint32(s[0]); fd != 1 && fd != 2 {
			return errnoBadf
		}
		return e
	}
}

func (r *Runtime) instantiateWASI(ctx context.Context) error {
	names := r.cfg.Profile.WASIFunctions()
	sort.Strings(names)
	profile := r.cfg.Profile
	for _, modName := range []string{"wasi_snapshot_preview1", "wasi_unstable"} {
		b := r.rt.NewHostModuleBuilder(modName)
		for _, name := range names {
			impl, ok := wasiImpl[name]
			if !ok {
				return fmt.Errorf("host: no WASI implementation for %s", name)
			}
			name := name
			var results []api.ValueType
			if impl.result {
				results = []api.ValueType{i32}
			}
			b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, _ api.Module, stack []uint64) {
				vm := ctx.Value(vmKey{}).(*VM)
				if vm.startup && !profile.startupAllowed(name) {
					panic(fmt.Errorf("%w: %s", errStartup, name))
				}
				e := impl.fn(vm, stack)
				if impl.result {
					stack[0] = uint64(e)
				}
			}), impl.params, results).Export(name)
		}
		if _, err := b.Instantiate(ctx); err != nil {
			return fmt.Errorf("host: %s module: %w", modName, err)
		}
	}
	return nil
}

// gather concatenates an iovec array.
func (vm *VM) gather(iovs, n uint32) ([]byte, bool) {
	var out []byte
	for i := range n {
		base, ok1 := vm.mem.ReadUint32Le(iovs + i*8)
		l, ok2 := vm.mem.ReadUint32Le(iovs + i*8 + 4)
		if !ok1 || !ok2 {
			return nil, false
		}
		if l == 0 {
			continue
		}
		b, ok := vm.mem.Read(base, l)
		if !ok {
			return nil, false
		}
		out = append(out, b...)
	}
	return out, true
}

// writev logs stdout at info and stderr at error, one trailing newline
// stripped; other descriptors are BADF.
func (vm *VM) writev(fd, iovs, n uint32) (uint32, uint32) {
	var level LogLevel
	switch fd {
	case 1:
		level = LogInfo
	case 2:
		level = LogError
	default:
		return 0, errnoBadf
	}
	b, ok := vm.gather(iovs, n)
	if !ok {
		return 0, errnoFault
	}
	written := uint32(len(b))
	if written > 0 {
		msg := b
		if msg[len(msg)-1] == '\n' {
			msg = msg[:len(msg)-1]
		}
		vm.plugin.rt.emitLog(LogEntry{Plugin: vm.plugin.cfg.Name, Worker: vm.worker, Level: level, Message: string(msg)})
	}
	return written, errnoSuccess
}

func wFdWrite(vm *VM, s []uint64) uint32 {
	n, e := vm.writev(uint32(s[0]), uint32(s[1]), uint32(s[2]))
	if e != errnoSuccess {
		return e
	}
	if !vm.putU32(s[3], n) {
		return errnoFault
	}
	return errnoSuccess
}

func wFdPwrite(vm *VM, s []uint64) uint32 {
	n, e := vm.writev(uint32(s[0]), uint32(s[1]), uint32(s[2]))
	if e != errnoSuccess {
		return e
	}
	if !vm.putU32(s[4], n) {
		return errnoFault
	}
	return errnoSuccess
}

func wFdTell(vm *VM, s []uint64) uint32 {
	if fd := uint32(s[0]); fd != 1 && fd != 2 {
		return errnoBadf
	}
	if !vm.writeU64(uint32(s[1]), 0) {
		return errnoFault
	}
	return errnoSuccess
}

func wFdstatGet(vm *VM, s []uint64) uint32 {
	if fd := uint32(s[0]); fd != 1 && fd != 2 {
		return errnoBadf
	}
	p := uint32(s[1])
	// 24 bytes: filetype/flags zeroed, fs_rights_base = FD_WRITE (64).
	if !vm.writeU64(p, 0) || !vm.writeU64(p+8, 64) || !vm.writeU64(p+16, 0) {
		return errnoFault
	}
	return errnoSuccess
}

func (vm *VM) environ() []string {
	env := vm.plugin.cfg.Env
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

func wEnvironSizesGet(vm *VM, s []uint64) uint32 {
	env := vm.environ()
	size := 0
	for _, e := range env {
		size += len(e) + 1
	}
	if !vm.putU32(s[0], uint32(len(env))) || !vm.putU32(s[1], uint32(size)) {
		return errnoFault
	}
	return errnoSuccess
}

func wEnvironGet(vm *VM, s []uint64) uint32 {
	arr, buf := uint32(s[0]), uint32(s[1])
	for i, e := range vm.environ() {
		if !vm.mem.WriteUint32Le(arr+uint32(i)*4, buf) {
			return errnoFault
		}
		if !vm.mem.WriteString(buf, e) || !vm.mem.WriteByte(buf+uint32(len(e)), 0) {
			return errnoFault
		}
		buf += uint32(len(e)) + 1
	}
	return errnoSuccess
}

func wArgsSizesGet(vm *VM, s []uint64) uint32 {
	if !vm.putU32(s[0], 0) || !vm.putU32(s[1], 0) {
		return errnoFault
	}
	return errnoSuccess
}

func (vm *VM) clockNanos(id uint32) (uint64, bool) {
	switch id {
	case 0:
		return uint64(vm.plugin.rt.cfg.Clock.Now().UnixNano()), true
	case 1:
		return uint64(monotonic(vm.plugin.rt.cfg.Clock)), true
	}
	return 0, false
}

var processStart = time.Now()

func monotonic(c Clock) int64 {
	if _, ok := c.(WallClock); ok {
		return int64(time.Since(processStart))
	}
	return c.Now().UnixNano()
}

func wClockTimeGet(vm *VM, s []uint64) uint32 {
	v, ok := vm.clockNanos(uint32(s[0]))
	if !ok {
		return errnoNotsup
	}
	if !vm.writeU64(uint32(s[2]), v) {
		return errnoFault
	}
	return errnoSuccess
}

func wClockResGet(vm *VM, s []uint64) uint32 {
	if id := uint32(s[0]); id > 1 {
		return errnoNotsup
	}
	if !vm.writeU64(uint32(s[1]), 1) {
		return errnoFault
	}
	return errnoSuccess
}

func wRandomGet(vm *VM, s []uint64) uint32 {
	n := uint32(s[1])
	if n > maxRandomGet {
		return errnoInval
	}
	if n == 0 {
		return errnoSuccess
	}
	buf, ok := vm.mem.Read(uint32(s[0]), n)
	if !ok {
		return errnoFault
	}
	_, _ = rand.Read(buf)
	return errnoSuccess
}

func wPollOneoff(vm *VM, s []uint64) uint32 {
	if !vm.plugin.rt.cfg.Profile.pollSucceeds() {
		return errnoNosys
	}
	if !vm.putU32(s[3], 0) {
		return errnoFault
	}
	return errnoSuccess
}

func wProcExit(vm *VM, s []uint64) uint32 {
	// Envoy only logs; the module keeps running (and typically traps next).
	vm.plugin.rt.emitLog(LogEntry{Plugin: vm.plugin.cfg.Name, Worker: vm.worker, Level: LogError, Message: fmt.Sprintf("wasi_unstable proc_exit(%d)", uint32(s[0]))})
	return 0
}
