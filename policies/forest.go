package policies

import (
	"slices"
)

// A forest holds every trie of a compiled engine — the workload subject trie,
// each device policy's subject and control-path tries, and the path tries
// hanging off subject nodes — in three flat arrays. Compile builds pointer
// tries (convenient while inserting) and flattens them; Decide walks the flat
// form. Flat arrays make an engine cheap to serialise and to load: a handful
// of allocations instead of one per node and map, which is what lets a proxy
// swap in a bundle of ten thousand rules without stalling its worker.
//
// Nodes are numbered in preorder, so every child index is greater than its
// parent's: a walk always terminates, which UnmarshalEngine checks.
type forest struct {
	nodes []fnode
	edges []fedge // a node's literal children, sorted by segment
	ints  []int32 // payload lists: rule, version or control marks
}

// span is the half-open range [lo, hi) of a forest array.
type span struct{ lo, hi int32 }

func (s span) empty() bool { return s.lo == s.hi }

// fnode is a trie node. Path and control nodes use end and rest; subject
// nodes use endPaths/restPath (roots of path tries) and endVers/restVers.
type fnode struct {
	edges              span
	wild               int32 // "*" or "{param}" child, none if absent
	end, rest          span  // patterns ending here / ending here with "**"
	endPaths, restPath int32
	endVers, restVers  span
}

type fedge struct {
	seg   string
	child int32
}

// none marks an absent node.
const none int32 = -1

// child returns n's literal child for seg, or none.
func (f *forest) child(n int32, seg string) int32 {
	e := f.nodes[n].edges
	lo, hi := e.lo, e.hi
	for lo < hi {
		m := int32(uint32(lo+hi) >> 1)
		if f.edges[m].seg < seg {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < e.hi && f.edges[lo].seg == seg {
		return f.edges[lo].child
	}
	return none
}

func (f *forest) list(s span) []int32 { return f.ints[s.lo:s.hi] }

func (f *forest) addInts(l []int32) span {
	lo := int32(len(f.ints))
	f.ints = append(f.ints, l...)
	return span{lo, int32(len(f.ints))}
}

// addPaths flattens a path (or control) trie; nil gives none.
func (f *forest) addPaths(p *pnode) int32 {
	if p == nil {
		return none
	}
	id := f.reserve()
	end, rest := f.addInts(p.end), f.addInts(p.rest)
	edges := addChildren(f, p.lit, f.addPaths)
	f.nodes[id] = fnode{edges: edges, wild: f.addPaths(p.wild), end: end, rest: rest, endPaths: none, restPath: none}
	return id
}

// addSubjects flattens a subject trie with its path tries; nil gives none.
func (f *forest) addSubjects(s *snode) int32 {
	if s == nil {
		return none
	}
	id := f.reserve()
	endVers, restVers := f.addInts(s.endVers), f.addInts(s.restVers)
	edges := addChildren(f, s.lit, f.addSubjects)
	wild := f.addSubjects(s.wild)
	endPaths, restPath := f.addPaths(s.endPaths), f.addPaths(s.restPath)
	f.nodes[id] = fnode{edges: edges, wild: wild, endPaths: endPaths, restPath: restPath, endVers: endVers, restVers: restVers}
	return id
}

// reserve appends a node to fill in once its children are numbered
// (preorder: the parent's index comes first).
func (f *forest) reserve() int32 {
	f.nodes = append(f.nodes, fnode{wild: none, endPaths: none, restPath: none})
	return int32(len(f.nodes) - 1)
}

// addChildren writes a node's literal edges, sorted and contiguous, then
// flattens each child with add.
func addChildren[N any](f *forest, lit map[string]*N, add func(*N) int32) span {
	keys := sortedKeys(lit)
	e0 := int32(len(f.edges))
	for _, k := range keys {
		f.edges = append(f.edges, fedge{seg: k, child: none})
	}
	for i, k := range keys {
		f.edges[e0+int32(i)].child = add(lit[k])
	}
	return span{e0, e0 + int32(len(keys))}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// matchAny reports whether any pattern of the path trie at n matches path.
func (f *forest) matchAny(n int32, path string, done bool) bool {
	nd := &f.nodes[n]
	if !nd.rest.empty() {
		return true
	}
	if done {
		return !nd.end.empty()
	}
	seg, rest, last := next(path)
	if c := f.child(n, seg); c != none && f.matchAny(c, rest, last) {
		return true
	}
	return nd.wild != none && seg != "" && f.matchAny(nd.wild, rest, last)
}
