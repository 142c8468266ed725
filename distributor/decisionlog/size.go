package decisionlog

import (
	"fmt"
	"os"
	"path/filepath"
)

// Size is the number of segment files and their total size in bytes.
func (l *Log) Size() (segs int, bytes int64, err error) {
	ss, err := segments(l.dir)
	if err != nil {
		return 0, 0, err
	}
	for _, s := range ss {
		st, err := os.Stat(filepath.Join(l.dir, s.name))
		if err != nil {
			return 0, 0, fmt.Errorf("decision log: %w", err)
		}
		bytes += st.Size()
	}
	return len(ss), bytes, nil
}
