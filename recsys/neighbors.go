package recsys

// Neighbor is one entry of a top-K list: a row index and its similarity.
// Lists are ordered best first: higher Sim, then lower ID, so that equal
// similarities order the same way in every build.
type Neighbor struct {
	ID  int32
	Sim float32
}

// better is the list order: higher similarity first, ties to the lower ID.
func better(a, b Neighbor) bool {
	return a.Sim > b.Sim || (a.Sim == b.Sim && a.ID < b.ID)
}

func (a Neighbor) outranks(b Neighbor) bool { return better(a, b) }

func cmpNeighbor(a, b Neighbor) int {
	switch {
	case better(a, b):
		return -1
	case better(b, a):
		return 1
	}
	return 0
}

// slab hands out small slices carved from large blocks, so a rebuild of a
// hundred thousand lists makes a few hundred allocations instead of one per
// list. Each slice's capacity equals its length: an incremental update that
// grows a list reallocates that list alone.
type slab struct{ block []Neighbor }

const slabBlock = 64 << 10

func (s *slab) copy(src []Neighbor) []Neighbor {
	if len(src) == 0 {
		return nil
	}
	if len(src) > cap(s.block)-len(s.block) {
		s.block = make([]Neighbor, 0, max(slabBlock, len(src)))
	}
	lo := len(s.block)
	s.block = append(s.block, src...)
	return s.block[lo:len(s.block):len(s.block)]
}
