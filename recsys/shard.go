package recsys

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
)

// Shard files carry a shard from the worker that computed it to the one
// that merges: a fixed header, the lists, and a CRC-32 of everything before
// it, so a truncated or corrupted artifact is refused rather than merged.
//
//	magic "TNDMSHRD" | version u32 | side u32 | lo, hi, rows u64 | fingerprint u64
//	per row: count u32, then count x (id i32, sim f32)
//	crc32 (IEEE) u32
//
// All integers are little-endian.
const (
	shardMagic   = "TNDMSHRD"
	shardVersion = 1
)

// WriteTo writes the shard in the shard file format.
func (s *Shard) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	bw := bufio.NewWriterSize(cw, 256<<10)
	crc := crc32.NewIEEE()
	out := io.MultiWriter(bw, crc)
	var b []byte
	b = append(b, shardMagic...)
	b = binary.LittleEndian.AppendUint32(b, shardVersion)
	b = binary.LittleEndian.AppendUint32(b, uint32(s.Side))
	b = binary.LittleEndian.AppendUint64(b, uint64(s.Lo))
	b = binary.LittleEndian.AppendUint64(b, uint64(s.Hi))
	b = binary.LittleEndian.AppendUint64(b, uint64(s.Rows))
	b = binary.LittleEndian.AppendUint64(b, s.Fingerprint)
	if _, err := out.Write(b); err != nil {
		return cw.n, err
	}
	for _, l := range s.Lists {
		b = binary.LittleEndian.AppendUint32(b[:0], uint32(len(l)))
		for _, n := range l {
			b = binary.LittleEndian.AppendUint32(b, uint32(n.ID))
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(n.Sim))
		}
		if _, err := out.Write(b); err != nil {
			return cw.n, err
		}
	}
	if _, err := bw.Write(binary.LittleEndian.AppendUint32(nil, crc.Sum32())); err != nil {
		return cw.n, err
	}
	err := bw.Flush()
	return cw.n, err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// ReadShard reads a shard file, checking its checksum and that every count
// and index is within lim (MaxUsers or MaxItems rows, MaxK per list).
func ReadShard(r io.Reader, lim Limits) (*Shard, error) {
	lim = lim.withDefaults()
	crc := crc32.NewIEEE()
	br := bufio.NewReaderSize(r, 256<<10)
	tr := io.TeeReader(br, crc)
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: shard file: %s", ErrBadInput, fmt.Sprintf(format, args...))
	}
	var hdr [8 + 4 + 4 + 8*4]byte
	if _, err := io.ReadFull(tr, hdr[:]); err != nil {
		return nil, bad("header: %v", err)
	}
	if string(hdr[:8]) != shardMagic {
		return nil, bad("not a shard file (magic %q)", hdr[:8])
	}
	le := binary.LittleEndian
	if v := le.Uint32(hdr[8:]); v != shardVersion {
		return nil, bad("version %d, this build reads %d", v, shardVersion)
	}
	side := Side(le.Uint32(hdr[12:]))
	lo, hi, rows := le.Uint64(hdr[16:]), le.Uint64(hdr[24:]), le.Uint64(hdr[32:])
	s := &Shard{Side: side, Fingerprint: le.Uint64(hdr[40:])}
	maxRows := uint64(lim.MaxUsers)
	if side == SideItems {
		maxRows = uint64(lim.MaxItems)
	} else if side != SideUsers {
		return nil, bad("unknown side %d", side)
	}
	if rows > maxRows || hi > rows || lo > hi {
		return nil, bad("range [%d, %d) of %d rows is invalid or over the limit of %d", lo, hi, rows, maxRows)
	}
	s.Lo, s.Hi, s.Rows = int(lo), int(hi), int(rows)
	s.Lists = make([][]Neighbor, 0, min(hi-lo, 1<<20))
	var buf []byte
	var cnt [4]byte
	for r := s.Lo; r < s.Hi; r++ {
		if _, err := io.ReadFull(tr, cnt[:]); err != nil {
			return nil, bad("row %d: %v", r, err)
		}
		n := le.Uint32(cnt[:])
		if n > uint32(lim.MaxK) {
			return nil, bad("row %d has %d neighbours, over the limit of %d", r, n, lim.MaxK)
		}
		if need := int(n) * 8; cap(buf) < need {
			buf = make([]byte, need)
		}
		buf = buf[:n*8]
		if _, err := io.ReadFull(tr, buf); err != nil {
			return nil, bad("row %d: %v", r, err)
		}
		var l []Neighbor
		if n > 0 {
			l = make([]Neighbor, n)
		}
		for k := range l {
			id := int32(le.Uint32(buf[8*k:]))
			sim := math.Float32frombits(le.Uint32(buf[8*k+4:]))
			if id < 0 || uint64(id) >= rows || math.IsNaN(float64(sim)) || math.IsInf(float64(sim), 0) {
				return nil, bad("row %d: neighbour %d (sim %g) is invalid", r, id, sim)
			}
			l[k] = Neighbor{ID: id, Sim: sim}
		}
		s.Lists = append(s.Lists, l)
	}
	sum := crc.Sum32()
	if _, err := io.ReadFull(br, cnt[:]); err != nil {
		return nil, bad("checksum: %v", err)
	}
	if got := le.Uint32(cnt[:]); got != sum {
		return nil, bad("checksum %08x, content gives %08x", got, sum)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		return nil, bad("data after the checksum")
	}
	return s, nil
}
