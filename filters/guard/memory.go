package main

import "runtime/debug"

// gcPercent is the guard's GOGC. A VM runs in every worker of every sidecar
// and its linear memory never shrinks, so the heap is held close to its live
// size (policy engine, caches): the default 100 lets a small heap grow to a
// 4 MiB goal before collecting. Decisions allocate nothing, so the extra
// collections cost little CPU.
const gcPercent = 25

func init() { debug.SetGCPercent(gcPercent) }
