package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// progressLine reports a long operation on stderr: on a terminal one line
// rewritten in place once the run is past a second, elsewhere (CI logs) a
// plain line every few seconds once the run is slow. Fast runs print
// nothing.
type progressLine struct {
	w                io.Writer
	tty              bool
	delay, interval  time.Duration
	mu               sync.Mutex
	stage            string
	done, total      int
	printed          bool
	stop, stopped    chan struct{}
	start, lastPrint time.Time
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// newProgressLine starts reporting to w (a terminal or not).
func newProgressLine(w io.Writer) *progressLine {
	p := &progressLine{w: w, tty: isTerminal(w), delay: 5 * time.Second, interval: 5 * time.Second}
	if p.tty {
		p.delay, p.interval = time.Second, 200*time.Millisecond
	}
	return p.run()
}

func (p *progressLine) run() *progressLine {
	p.start, p.stop, p.stopped = time.Now(), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(p.stopped)
		t := time.NewTicker(p.interval / 4)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case now := <-t.C:
				p.tick(now)
			}
		}
	}()
	return p
}

// update is a policies.Progress.
func (p *progressLine) update(stage string, done, total int) {
	p.mu.Lock()
	p.stage, p.done, p.total = stage, done, total
	p.mu.Unlock()
}

func (p *progressLine) tick(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stage == "" || now.Sub(p.start) < p.delay || now.Sub(p.lastPrint) < p.interval {
		return
	}
	p.lastPrint = now
	elapsed := now.Sub(p.start).Round(100 * time.Millisecond)
	var line string
	switch p.stage {
	case "parse":
		line = fmt.Sprintf("meshguard: parsing: %d/%d files (%s)", p.done, p.total, elapsed)
	case "check":
		line = fmt.Sprintf("meshguard: checking: %d/%d rules (%s)", p.done, p.total, elapsed)
	default:
		line = fmt.Sprintf("meshguard: %s (%s)", p.stage, elapsed)
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
	} else {
		fmt.Fprintln(p.w, line)
	}
	p.printed = true
}

// finish stops reporting and clears a terminal line.
func (p *progressLine) finish() {
	close(p.stop)
	<-p.stopped
	if p.tty && p.printed {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
