package policies

import (
	"math"
	"strings"
)

// upstream writes the caller's-side tables (image v4, after the forest):
// the registry in id order, then the upstream rules in source order.
func (w *imgWriter) upstream(u *upstreamTables) {
	keys := sortedKeys(u.registry)
	w.uint(uint64(len(keys)))
	for _, k := range keys {
		d := u.registry[k]
		w.str(d.id)
		w.str(d.class)
		w.str(d.vendor)
		w.str(d.model)
		w.str(d.firmware)
	}
	w.uint(uint64(len(u.rules)))
	for i := range u.rules {
		r := &u.rules[i]
		w.str(r.id)
		w.b = append(w.b, b2byte(r.dryRun), b2byte(r.src.PeerVersion), b2byte(r.src.DeviceFirmware))
		w.str(r.src.MetaFilter)
		w.str(r.src.MetaKey)
		if r.subs == nil {
			w.uint(0)
		} else {
			w.uint(uint64(len(r.subs)) + 1)
			for _, p := range r.subs {
				w.str(strings.Join(p, "/"))
			}
		}
		w.strs(r.classes)
		w.uint(uint64(len(r.allowed)))
		for _, a := range r.allowed {
			w.str(a.text)
			w.vrange(a.r)
			w.uint(uint64(a.until))
		}
		for _, l := range [2][]version{r.deniedAll, r.deniedExt} {
			w.uint(uint64(len(l)))
			for _, d := range l {
				w.version(d)
			}
		}
	}
}

// upstream reads what imgWriter.upstream wrote, checking every field, so
// no image can make DecideUpstream misbehave.
func (r *imgReader) upstream(u *upstreamTables) {
	n := r.count(5)
	u.registry = make(map[string]*cregistered, n)
	for range n {
		d := &cregistered{id: r.str(), class: r.str(), vendor: r.str(), model: r.str(), firmware: r.str()}
		if r.err != nil {
			return
		}
		k := asciiLower(d.id)
		if d.id == "" || len(d.id) > MaxDeviceIDLen || u.registry[k] != nil {
			r.fail("registry device %q: empty, too long or repeated", d.id)
			return
		}
		u.registry[k] = d
	}
	n = r.count(8)
	if n == 0 {
		return
	}
	u.rules = make([]cupstream, n)
	for i := range u.rules {
		c := &u.rules[i]
		c.id = r.str()
		dry, peer, fw := r.byte(), r.byte(), r.byte()
		c.dryRun, c.src.PeerVersion, c.src.DeviceFirmware = dry != 0, peer != 0, fw != 0
		c.src.MetaFilter, c.src.MetaKey = r.str(), r.str()
		sources := int(b2byte(c.src.PeerVersion)) + int(b2byte(c.src.DeviceFirmware))
		if c.src.MetaFilter != "" {
			sources++
		}
		if r.err == nil && (dry > 1 || peer > 1 || fw > 1 || sources != 1 || (c.src.MetaFilter == "") != (c.src.MetaKey == "")) {
			r.fail("upstream rule %d: bad flags or source", i)
			return
		}
		if ns := r.int(math.MaxInt32); ns > 0 {
			c.subs = make([][]string, 0, min(ns-1, r.left()))
			for range ns - 1 {
				p := r.str()
				segs := strings.Split(p, "/")
				if r.err == nil && (p == "" || segs[0] == "*" || segs[0] == "**") {
					r.fail("upstream rule %d: bad upstream pattern %q", i, p)
				}
				if r.err != nil {
					return
				}
				c.subs = append(c.subs, segs)
			}
		}
		c.classes = r.strs()
		if r.err == nil && c.subs == nil && len(c.classes) == 0 {
			r.fail("upstream rule %d selects nothing", i)
		}
		if m := r.count(4); m > 0 {
			c.allowed = make([]allowEntry, m)
			for k := range c.allowed {
				a := &c.allowed[k]
				a.text, a.r = r.str(), r.vrange()
				if len(a.r) == 0 && r.err == nil {
					r.fail("upstream rule %d: allowed entry %d has an empty range", i, k)
				}
				if t := r.uint(); t != 0 {
					if t >= uint64(maxInstant.UnixNano()) {
						r.fail("upstream rule %d: allowed entry %d: until %d out of range", i, k, t)
					}
					a.until = int64(t)
					a.reason = sunsetReason(a.text, a.until)
				}
			}
		}
		for _, l := range [2]*[]version{&c.deniedAll, &c.deniedExt} {
			if m := r.count(5); m > 0 {
				*l = make([]version, m)
				for k := range *l {
					(*l)[k] = r.version()
				}
			}
		}
		if r.err != nil {
			return
		}
		if !c.dryRun && len(c.classes) > 0 {
			u.classful = true
		}
	}
}
