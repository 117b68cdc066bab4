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

// listSummary is what an incremental update needs to know about a list
// without reading it: its last entry, whether it is complete, and a Bloom
// signature of its IDs (384 bits, two bits per ID: about one false "may
// hold" in ten for a list of 75). The summaries are one contiguous array of
// one cache line each, while the lists are scattered over the heap, so most
// of the pushes an update makes (a row that is neither listed nor good
// enough to enter) are turned away without reading the list.
//
// A list is complete when it holds every row that passes the filters;
// otherwise it holds the best len(list) of them, at least K, and every row
// outside is no better than its last entry.
type listSummary struct {
	sig      [sigWords]uint64
	last     Neighbor
	complete bool
}

const (
	sigWords = 6
	sigBits  = 64 * sigWords
)

// sigBits2 are the two signature bits of an ID, from two multiplicative
// hashes (they spread runs of consecutive IDs), each scaled to [0, sigBits)
// by a multiply and shift rather than a division.
func sigBits2(id int32) (a, b uint32) {
	h1 := uint32(id) * 2654435761
	h2 := uint32(id)*0x85ebca6b ^ uint32(id)>>7
	return uint32(uint64(h1) * sigBits >> 32), uint32(uint64(h2*0xc2b2ae35) * sigBits >> 32)
}

func summarize(l []Neighbor, complete bool) listSummary {
	s := listSummary{complete: complete}
	for _, n := range l {
		a, b := sigBits2(n.ID)
		s.sig[a/64] |= 1 << (a % 64)
		s.sig[b/64] |= 1 << (b % 64)
	}
	if len(l) > 0 {
		s.last = l[len(l)-1]
	}
	return s
}

// mayHold reports whether id might be in the list; false is certain.
func (s *listSummary) mayHold(id int32) bool {
	a, b := sigBits2(id)
	return s.sig[a/64]&(1<<(a%64)) != 0 && s.sig[b/64]&(1<<(b%64)) != 0
}

// unaffected reports, from the summary alone, that a row with similarity x
// (ok: passing the filters) is not in the list and does not enter it.
func (s *listSummary) unaffected(x Neighbor, ok bool) bool {
	return !s.mayHold(x.ID) && (!ok || !s.complete && !better(x, s.last))
}
