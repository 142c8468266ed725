package decide

// Headers are request headers as the host hands them over: pairs in order,
// names lower-case.
type Headers [][2]string

// Get returns the first value of name (lower-case), as Envoy's
// get_header_map_value does.
func (h *Headers) Get(name string) (string, bool) {
	for _, kv := range *h {
		if kv[0] == name {
			return kv[1], true
		}
	}
	return "", false
}

// remove drops every value of name, in place; it reports whether there
// was one.
func (h *Headers) remove(name string) bool {
	out := (*h)[:0]
	for _, kv := range *h {
		if kv[0] != name {
			out = append(out, kv)
		}
	}
	removed := len(out) != len(*h)
	clear((*h)[len(out):])
	*h = out
	return removed
}

// set makes v the value of the first name (the host replaced it).
func (h *Headers) set(name, v string) {
	for i := range *h {
		if (*h)[i][0] == name {
			(*h)[i][1] = v
			return
		}
	}
}
