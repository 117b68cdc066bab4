package recsys

// dict maps string IDs to dense int32 indices in first-seen order, so that
// two processes reading the same file assign the same indices: shards
// computed on different workers can then be merged by index.
type dict struct {
	index map[string]int32
	names []string
}

func newDict() *dict { return &dict{index: map[string]int32{}} }

func (d *dict) lookup(name string) (int32, bool) {
	i, ok := d.index[name]
	return i, ok
}

// intern returns name's index, adding it when new. The caller checks the
// size limit before calling with a new name.
func (d *dict) intern(name string) (idx int32, added bool) {
	if i, ok := d.index[name]; ok {
		return i, false
	}
	i := int32(len(d.names))
	d.index[name] = i
	d.names = append(d.names, name)
	return i, true
}

func (d *dict) len() int { return len(d.names) }

func (d *dict) name(i int32) string { return d.names[i] }
