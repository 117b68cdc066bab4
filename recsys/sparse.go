package recsys

import "slices"

// sparseRows is a sparse matrix kept row by row: row r's column indices are
// idx[r], sorted ascending, with values val[r]. One row per slice (rather
// than one CSR array) lets an incremental update insert into a row without
// moving the others, while a compacted matrix still lies in two contiguous
// arenas, so the full rebuild reads it like CSR.
type sparseRows struct {
	idx [][]int32
	val [][]float32
}

func (s *sparseRows) rows() int { return len(s.idx) }

func (s *sparseRows) addRow() {
	s.idx = append(s.idx, nil)
	s.val = append(s.val, nil)
}

// add adds delta to entry (r, c) and reports whether the entry is new. The
// sum is taken in float64 and stored as float32: every copy of a cell (row
// and transpose) goes through this same operation in the same order, so the
// copies stay bit-identical, and so do a rebuild and an incremental replay of
// the same events.
func (s *sparseRows) add(r, c int32, delta float64) bool {
	ids, vals := s.idx[r], s.val[r]
	n := len(ids)
	if n == 0 || ids[n-1] < c { // arrival in index order: append
		s.idx[r] = append(ids, c)
		s.val[r] = append(vals, float32(delta))
		return true
	}
	p, found := slices.BinarySearch(ids, c)
	if found {
		vals[p] = float32(float64(vals[p]) + delta)
		return false
	}
	s.idx[r] = slices.Insert(ids, p, c)
	s.val[r] = slices.Insert(vals, p, float32(delta))
	return true
}

// get returns entry (r, c), or 0, false.
func (s *sparseRows) get(r, c int32) (float32, bool) {
	p, found := slices.BinarySearch(s.idx[r], c)
	if !found {
		return 0, false
	}
	return s.val[r][p], true
}

// compact copies every row into one arena per array, with capacity equal to
// length, so a full rebuild streams through memory and a later insert into a
// row reallocates only that row.
func (s *sparseRows) compact() {
	var nnz int
	for _, r := range s.idx {
		nnz += len(r)
	}
	ia := make([]int32, 0, nnz)
	va := make([]float32, 0, nnz)
	for r := range s.idx {
		lo := len(ia)
		ia = append(ia, s.idx[r]...)
		va = append(va, s.val[r]...)
		s.idx[r] = ia[lo:len(ia):len(ia)]
		s.val[r] = va[lo:len(va):len(va)]
	}
}
