package model

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"

	"github.com/tandem-ai/tandem/limits"
)

// Safetensors file format (huggingface/safetensors): an 8-byte
// little-endian header length n, n bytes of JSON mapping tensor names to
// {dtype, shape, data_offsets:[begin,end]} (offsets relative to the byte
// after the header) plus an optional "__metadata__" string map, then the
// raw little-endian data.
//
// The reader trusts nothing in the file: the header is bounded, every
// shape is checked for overflow, every byte range must lie inside the file,
// match dtype×shape exactly and not overlap another tensor. A hostile or
// truncated file is an error, never a panic or a huge allocation.

// MaxSafetensorsHeader bounds the JSON header (GPT-2 XL's is about 60 KB).
const MaxSafetensorsHeader = limits.SafetensorsHeaderBytes

// maxTensorDims bounds the rank of one tensor.
const maxTensorDims = limits.TensorDims

// DType is a safetensors element type.
type DType string

// Element types the reader converts to float32. Other dtypes are accepted
// in a header (so a file carrying, say, an integer buffer can be opened),
// but cannot be read as floats.
const (
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
)

// dtypeSizes lists every dtype the safetensors format defines.
var dtypeSizes = map[DType]int64{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
	"I16": 2, "U16": 2, F16: 2, BF16: 2,
	"I32": 4, "U32": 4, F32: 4,
	"I64": 8, "U64": 8, "F64": 8,
}

// TensorInfo describes one tensor of a safetensors file.
type TensorInfo struct {
	Name       string
	DType      DType
	Shape      []int
	Begin, End int64 // byte range, relative to the start of the data section
}

// NumElements is the product of the shape (1 for a scalar).
func (t TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= int64(d)
	}
	return n
}

// Safetensors is an open safetensors file whose header has been validated.
// Tensor data is read on demand.
type Safetensors struct {
	r         io.ReaderAt
	closer    io.Closer
	dataStart int64
	tensors   map[string]TensorInfo
	// Metadata is the "__metadata__" map (may be nil).
	Metadata map[string]string
}

// OpenSafetensors opens and validates path. Close it when done.
func OpenSafetensors(path string) (*Safetensors, error) { return openSafetensors(os.Open, path) }

func openSafetensors(open opener, path string) (*Safetensors, error) {
	f, err := open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	s, err := ReadSafetensors(f, st.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s.closer = f
	return s, nil
}

// ReadSafetensors validates the header of a safetensors image of the given
// size readable through r.
func ReadSafetensors(r io.ReaderAt, size int64) (*Safetensors, error) {
	var lenBuf [8]byte
	if size < 8 {
		return nil, fmt.Errorf("safetensors: file is %d bytes, too short for the 8-byte header length", size)
	}
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("safetensors: reading header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > MaxSafetensorsHeader {
		return nil, fmt.Errorf("safetensors: header length %d exceeds the limit of %d", n, MaxSafetensorsHeader)
	}
	if int64(n) > size-8 {
		return nil, fmt.Errorf("safetensors: header length %d runs past the end of a %d-byte file", n, size)
	}
	header := make([]byte, n)
	if _, err := r.ReadAt(header, 8); err != nil {
		return nil, fmt.Errorf("safetensors: reading header: %w", err)
	}
	s := &Safetensors{r: r, dataStart: 8 + int64(n)}
	if err := s.parseHeader(header, size-s.dataStart); err != nil {
		return nil, err
	}
	return s, nil
}

type headerEntry struct {
	DType       DType     `json:"dtype"`
	Shape       []int64   `json:"shape"`
	DataOffsets [2]uint64 `json:"data_offsets"`
}

func (s *Safetensors) parseHeader(header []byte, dataSize int64) error {
	// Trailing spaces are the format's padding; anything else after the
	// object is an error (json.Unmarshal checks that).
	header = bytes.TrimRight(header, " ")
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(header, &raw); err != nil {
		return fmt.Errorf("safetensors: header is not a JSON object: %w", err)
	}
	s.tensors = make(map[string]TensorInfo, len(raw))
	infos := make([]TensorInfo, 0, len(raw))
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &s.Metadata); err != nil {
				return fmt.Errorf("safetensors: __metadata__ must map strings to strings: %w", err)
			}
			continue
		}
		info, err := parseEntry(name, msg, dataSize)
		if err != nil {
			return err
		}
		s.tensors[name] = info
		infos = append(infos, info)
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Begin < infos[j].Begin })
	for i := 1; i < len(infos); i++ {
		if prev := infos[i-1]; infos[i].Begin < prev.End {
			return fmt.Errorf("safetensors: tensors %q and %q overlap", prev.Name, infos[i].Name)
		}
	}
	return nil
}

func parseEntry(name string, msg json.RawMessage, dataSize int64) (TensorInfo, error) {
	var e headerEntry
	dec := json.NewDecoder(bytes.NewReader(msg))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return TensorInfo{}, fmt.Errorf("safetensors: tensor %q: %w", name, err)
	}
	esize, ok := dtypeSizes[e.DType]
	if !ok {
		return TensorInfo{}, fmt.Errorf("safetensors: tensor %q: unknown dtype %q", name, e.DType)
	}
	if len(e.Shape) > maxTensorDims {
		return TensorInfo{}, fmt.Errorf("safetensors: tensor %q: rank %d exceeds %d", name, len(e.Shape), maxTensorDims)
	}
	info := TensorInfo{Name: name, DType: e.DType, Shape: make([]int, len(e.Shape))}
	// The element count may not exceed what the data section could hold,
	// which also keeps every intermediate product far from overflow.
	maxElems := dataSize / esize
	empty := false
	for _, d := range e.Shape {
		if d < 0 {
			return TensorInfo{}, fmt.Errorf("safetensors: tensor %q: negative dimension %d", name, d)
		}
		empty = empty || d == 0
	}
	elems := int64(1)
	for i, d := range e.Shape {
		if !empty && elems > maxElems/d {
			return TensorInfo{}, fmt.Errorf("safetensors: tensor %q: shape %v is larger than the file", name, e.Shape)
		}
		if !empty {
			elems *= d
		}
		info.Shape[i] = int(d)
	}
	begin, end := e.DataOffsets[0], e.DataOffsets[1]
	if begin > end || end > uint64(dataSize) {
		return TensorInfo{}, fmt.Errorf("safetensors: tensor %q: data_offsets [%d, %d] outside the %d-byte data section", name, begin, end, dataSize)
	}
	info.Begin, info.End = int64(begin), int64(end)
	if empty {
		elems = 0
	}
	if want := elems * esize; info.End-info.Begin != want {
		return TensorInfo{}, fmt.Errorf("safetensors: tensor %q: %d bytes of data, want %d for %s%v", name, info.End-info.Begin, want, e.DType, e.Shape)
	}
	return info, nil
}

// Names lists the tensors in byte order.
func (s *Safetensors) Names() []string {
	names := make([]string, 0, len(s.tensors))
	for n := range s.tensors {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return s.tensors[names[i]].Begin < s.tensors[names[j]].Begin })
	return names
}

// Tensor returns the description of a tensor.
func (s *Safetensors) Tensor(name string) (TensorInfo, bool) {
	t, ok := s.tensors[name]
	return t, ok
}

// ReadFloat32 converts a F32, F16 or BF16 tensor into dst, whose length
// must equal the tensor's element count.
func (s *Safetensors) ReadFloat32(name string, dst []float32) error {
	t, ok := s.tensors[name]
	if !ok {
		return fmt.Errorf("safetensors: no tensor %q", name)
	}
	if int64(len(dst)) != t.NumElements() {
		return fmt.Errorf("safetensors: tensor %q has %d elements, destination %d", name, t.NumElements(), len(dst))
	}
	var esize int
	var conv func(dst []float32, src []byte)
	switch t.DType {
	case F32:
		esize, conv = 4, func(d []float32, b []byte) {
			for i := range d {
				d[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
			}
		}
	case F16:
		esize, conv = 2, func(d []float32, b []byte) {
			for i := range d {
				d[i] = float16ToFloat32(binary.LittleEndian.Uint16(b[2*i:]))
			}
		}
	case BF16:
		esize, conv = 2, func(d []float32, b []byte) {
			for i := range d {
				d[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
			}
		}
	default:
		return fmt.Errorf("safetensors: tensor %q has dtype %s; only F32, F16 and BF16 convert to float32", name, t.DType)
	}
	// Stream through a bounded buffer rather than reading a whole
	// (possibly 150 MB) tensor at once.
	const chunkElems = 1 << 16
	buf := make([]byte, chunkElems*esize)
	off := s.dataStart + t.Begin
	for done := 0; done < len(dst); {
		n := min(chunkElems, len(dst)-done)
		b := buf[:n*esize]
		if _, err := s.r.ReadAt(b, off); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("safetensors: reading tensor %q: %w", name, err)
		}
		conv(dst[done:done+n], b)
		done += n
		off += int64(len(b))
	}
	return nil
}

// Close releases the underlying file, if OpenSafetensors opened one.
func (s *Safetensors) Close() error {
	if s.closer == nil {
		return nil
	}
	return s.closer.Close()
}

// float16ToFloat32 widens an IEEE 754 half-precision value exactly.
func float16ToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // infinity or NaN
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	case exp != 0: // normal
		return math.Float32frombits(sign | (exp+127-15)<<23 | frac<<13)
	case frac == 0: // signed zero
		return math.Float32frombits(sign)
	default: // subnormal: value = frac * 2^-24
		f := float32(frac) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	}
}

// SafetensorsTensor is one float32 tensor to write.
type SafetensorsTensor struct {
	Name  string
	Shape []int
	Data  []float32
}

// WriteSafetensors writes tensors as F32, in the given order, with the
// header padded to a multiple of 8 bytes as the format recommends.
func WriteSafetensors(w io.Writer, tensors []SafetensorsTensor, metadata map[string]string) error {
	header := make(map[string]any, len(tensors)+1)
	if len(metadata) > 0 {
		header["__metadata__"] = metadata
	}
	var off uint64
	for _, t := range tensors {
		if t.Name == "__metadata__" {
			return errors.New("safetensors: a tensor may not be named __metadata__")
		}
		if _, dup := header[t.Name]; dup {
			return fmt.Errorf("safetensors: duplicate tensor %q", t.Name)
		}
		n := 1
		for _, d := range t.Shape {
			n *= d
		}
		if n != len(t.Data) {
			return fmt.Errorf("safetensors: tensor %q: shape %v holds %d elements, data has %d", t.Name, t.Shape, n, len(t.Data))
		}
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		end := off + 4*uint64(n)
		header[t.Name] = map[string]any{"dtype": F32, "shape": shape, "data_offsets": [2]uint64{off, end}}
		off = end
	}
	js, err := json.Marshal(header)
	if err != nil {
		return fmt.Errorf("safetensors: encoding header: %w", err)
	}
	if pad := (8 - len(js)%8) % 8; pad > 0 {
		js = append(js, bytes.Repeat([]byte(" "), pad)...)
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(js)))
	bw.Write(lenBuf[:])
	bw.Write(js)
	var buf [4096]byte
	for _, t := range tensors {
		for d := t.Data; len(d) > 0; {
			n := min(len(d), len(buf)/4)
			for i, v := range d[:n] {
				binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
			}
			if _, err := bw.Write(buf[:4*n]); err != nil {
				return fmt.Errorf("safetensors: writing %q: %w", t.Name, err)
			}
			d = d[n:]
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	return nil
}
