package decisionlog

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

var proofRecords = flag.Int("proof-records", 10_000_000, "records in the tree of BenchmarkProofs")

// proofTree is a stored tree of *proofRecords leaves, built once: only the
// tree hashes (tree.hash), as the log stores them, without segment files.
var proofTree struct {
	once sync.Once
	log  *Log
	dir  string
	err  error
	took time.Duration
}

func leafLine(seq uint64) []byte { return fmt.Appendf(nil, `{"decision":"allow","seq":%d}`, seq) }

func benchTree(b *testing.B) *Log {
	proofTree.once.Do(func() {
		proofTree.dir = filepath.Join(b.TempDir(), "tree")
		start := time.Now()
		s, err := openHashStore(proofTree.dir)
		if err != nil {
			proofTree.err = err
			return
		}
		n := int64(*proofRecords)
		for i := range n {
			if err := s.add(i, LeafHash(leafLine(uint64(i+1)))); err != nil {
				proofTree.err = err
				return
			}
			if len(s.pend) >= 1<<20 {
				if err := s.flush(); err != nil {
					proofTree.err = err
					return
				}
			}
		}
		if err := s.flush(); err != nil {
			proofTree.err = err
			return
		}
		root, err := tlog.TreeHash(n, s)
		proofTree.err = err
		proofTree.took = time.Since(start)
		proofTree.log = &Log{tree: s, head: Head{Seq: uint64(n), Hash: root.String()}}
	})
	if proofTree.err != nil {
		b.Fatal(proofTree.err)
	}
	b.Logf("tree of %d records built in %s", *proofRecords, proofTree.took.Round(time.Millisecond))
	return proofTree.log
}

// BenchmarkProofs times an inclusion proof of a random record and a
// consistency proof from a random earlier size, in a tree of
// -proof-records records read from its tree.hash file (the page cache
// holds it after the build), and checks every proof with tlog.
func BenchmarkProofs(b *testing.B) {
	l := benchTree(b)
	n := l.head.Seq
	root, _ := tlog.ParseHash(l.head.Hash)
	rnd := rand.New(rand.NewPCG(1, 2))
	b.Run("inclusion", func(b *testing.B) {
		for b.Loop() {
			seq := 1 + rnd.Uint64N(n)
			line := leafLine(seq)
			p, err := l.ProveInclusion(seq, n, line)
			if err != nil {
				b.Fatal(err)
			}
			if err := tlog.CheckRecord(p.Proof, int64(n), root, int64(seq-1), LeafHash(line)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("consistency", func(b *testing.B) {
		for b.Loop() {
			from := 1 + rnd.Uint64N(n-1)
			p, err := l.ProveConsistency(from, n)
			if err != nil {
				b.Fatal(err)
			}
			old, err := tlog.TreeHash(int64(from), l.TreeReader(from))
			if err != nil {
				b.Fatal(err)
			}
			if err := tlog.CheckTree(p.Proof, int64(n), root, int64(from), old); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkIngestWithCheckpoints appends batches of 100 records from 8
// concurrent writers (group commit, one fsync per group) while a
// checkpoint is signed every 100ms, and reports records/s.
func BenchmarkIngestWithCheckpoints(b *testing.B) {
	l, err := Open(b.TempDir(), Options{Key: testKey, CheckpointEvery: 100 * time.Millisecond, Logger: quiet()})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	const writers, batch = 8, 100
	b.SetParallelism(writers / 2) // 2 CPUs here: 8 writers
	var mu sync.Mutex
	next := 0
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		// Each writer's batch is decoded once (decoding is the HTTP
		// layer's cost, measured with the server); the log seals,
		// canonicalises, hashes and stores every record it is handed.
		mu.Lock()
		w := next
		next++
		mu.Unlock()
		recs := make([]Record, batch)
		for j := range recs {
			recs[j] = rec(b, w*batch+j, "deny", "spiffe://grid.example/meter")
			delete(recs[j], FieldDecisionID)
		}
		for pb.Next() {
			if _, err := l.Append(recs); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "records/s")
	cp, err := l.Checkpoint()
	if err != nil || cp.Size != uint64(b.N*batch) {
		b.Fatalf("checkpoint %d of %d records: %v", cp.Size, b.N*batch, err)
	}
}
