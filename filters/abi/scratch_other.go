//go:build !wasip1

package abi

func scratchBegin() bool { return false }
func scratchEnd()        {}
