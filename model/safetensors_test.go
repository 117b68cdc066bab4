package model

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rawSafetensors assembles a file from a header value and raw data bytes.
func rawSafetensors(t *testing.T, header any, data []byte) []byte {
	t.Helper()
	js, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	return rawWithHeader(js, data)
}

func rawWithHeader(js, data []byte) []byte {
	var buf bytes.Buffer
	binary.Write(&buf, binary.LittleEndian, uint64(len(js)))
	buf.Write(js)
	buf.Write(data)
	return buf.Bytes()
}

func entry(dtype string, shape []int, begin, end int) map[string]any {
	return map[string]any{"dtype": dtype, "shape": shape, "data_offsets": []int{begin, end}}
}

func TestSafetensorsRoundTrip(t *testing.T) {
	tensors := []SafetensorsTensor{
		{Name: "a", Shape: []int{2, 3}, Data: []float32{1, -2, 3.5, float32(math.Inf(1)), 0, -0.125}},
		{Name: "scalar", Shape: nil, Data: []float32{42}},
		{Name: "empty", Shape: []int{0, 4}, Data: nil},
	}
	var buf bytes.Buffer
	if err := WriteSafetensors(&buf, tensors, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	if hl := binary.LittleEndian.Uint64(buf.Bytes()); hl%8 != 0 {
		t.Fatalf("header length %d not padded to 8", hl)
	}
	s, err := ReadSafetensors(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if s.Metadata["format"] != "pt" {
		t.Fatalf("metadata %v", s.Metadata)
	}
	if got := s.Names(); strings.Join(got, ",") != "a,scalar,empty" && strings.Join(got, ",") != "a,empty,scalar" {
		t.Fatalf("names %v", got)
	}
	for _, want := range tensors {
		info, ok := s.Tensor(want.Name)
		if !ok || info.DType != F32 || !equalShape(info.Shape, append([]int{}, want.Shape...)) {
			t.Fatalf("%s: info %+v", want.Name, info)
		}
		got := make([]float32, len(want.Data))
		if err := s.ReadFloat32(want.Name, got); err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(want.Data[i]) {
				t.Fatalf("%s[%d] = %g, want %g", want.Name, i, got[i], want.Data[i])
			}
		}
	}
	if err := s.ReadFloat32("a", make([]float32, 5)); err == nil {
		t.Fatal("wrong destination length accepted")
	}
	if err := s.ReadFloat32("nope", nil); err == nil {
		t.Fatal("missing tensor read")
	}
	if err := WriteSafetensors(&buf, []SafetensorsTensor{{Name: "x", Shape: []int{3}, Data: []float32{1}}}, nil); err == nil {
		t.Fatal("shape/data mismatch written")
	}
}

func TestSafetensorsHalfPrecision(t *testing.T) {
	// F16 bit patterns and their exact float32 values, including a
	// subnormal, the largest normal, infinity and negative zero.
	f16 := []uint16{0x3c00, 0xc000, 0x3555, 0x0001, 0x7bff, 0x7c00, 0x8000, 0x0400}
	want16 := []float32{1, -2, 0.333251953125, 5.960464477539063e-08, 65504, float32(math.Inf(1)), float32(math.Copysign(0, -1)), 6.103515625e-05}
	// BF16 is the top half of a float32.
	bf16 := []uint16{0x3f80, 0xc049, 0x7f80, 0x0001}
	want16b := make([]float32, len(bf16))
	for i, b := range bf16 {
		want16b[i] = math.Float32frombits(uint32(b) << 16)
	}
	data := make([]byte, 0, 2*(len(f16)+len(bf16)))
	for _, v := range append(append([]uint16{}, f16...), bf16...) {
		data = binary.LittleEndian.AppendUint16(data, v)
	}
	file := rawSafetensors(t, map[string]any{
		"h": entry("F16", []int{len(f16)}, 0, 2*len(f16)),
		"b": entry("BF16", []int{2, 2}, 2*len(f16), len(data)),
	}, data)
	s, err := ReadSafetensors(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	got := make([]float32, len(f16))
	if err := s.ReadFloat32("h", got); err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want16[i]) {
			t.Errorf("f16 %#04x -> %g, want %g", f16[i], got[i], want16[i])
		}
	}
	gotb := make([]float32, 4)
	if err := s.ReadFloat32("b", gotb); err != nil {
		t.Fatal(err)
	}
	for i := range gotb {
		if math.Float32bits(gotb[i]) != math.Float32bits(want16b[i]) {
			t.Errorf("bf16 %#04x -> %g, want %g", bf16[i], gotb[i], want16b[i])
		}
	}
	// NaN stays NaN.
	if v := float16ToFloat32(0x7e00); !math.IsNaN(float64(v)) {
		t.Fatalf("f16 NaN -> %g", v)
	}
}

func TestSafetensorsRejectsHostileFiles(t *testing.T) {
	data := make([]byte, 64)
	ok := map[string]any{"w": entry("F32", []int{4, 4}, 0, 64)}
	cases := []struct {
		name string
		file []byte
		want string
	}{
		{"too short", []byte{1, 2, 3}, "too short"},
		{"huge header length", append(binary.LittleEndian.AppendUint64(nil, 1<<40), data...), "exceeds the limit"},
		{"header past end", append(binary.LittleEndian.AppendUint64(nil, 100), data...), "past the end"},
		{"not json", rawWithHeader([]byte("{not json"), data), "not a JSON object"},
		{"json array", rawWithHeader([]byte("[1,2]"), data), "not a JSON object"},
		{"trailing garbage", rawWithHeader([]byte(`{}x`), data), "not a JSON object"},
		{"unknown dtype", rawSafetensors(t, map[string]any{"w": entry("F99", []int{16}, 0, 64)}, data), "unknown dtype"},
		{"negative dim", rawSafetensors(t, map[string]any{"w": entry("F32", []int{-4, -4}, 0, 64)}, data), "negative"},
		{"overflowing shape", rawSafetensors(t, map[string]any{"w": entry("F32", []int{1 << 40, 1 << 40, 1 << 40}, 0, 64)}, data), "larger than the file"},
		{"offsets past end", rawSafetensors(t, map[string]any{"w": entry("F32", []int{4}, 0, 128)}, data), "outside"},
		{"shape past end", rawSafetensors(t, map[string]any{"w": entry("F32", []int{32}, 0, 128)}, data), "larger than the file"},
		{"reversed offsets", rawSafetensors(t, map[string]any{"w": entry("F32", []int{4}, 32, 16)}, data), "outside"},
		{"size mismatch", rawSafetensors(t, map[string]any{"w": entry("F32", []int{4, 4}, 0, 60)}, data), "want 64"},
		{"overlap", rawSafetensors(t, map[string]any{"a": entry("F32", []int{8}, 0, 32), "b": entry("F32", []int{8}, 16, 48)}, data), "overlap"},
		{"bad metadata", rawSafetensors(t, map[string]any{"__metadata__": map[string]any{"k": 1}}, data), "__metadata__"},
		{"unknown field", rawSafetensors(t, map[string]any{"w": map[string]any{"dtype": "F32", "shape": []int{16}, "data_offsets": []int{0, 64}, "evil": 1}}, data), "unknown field"},
		{"deep rank", rawSafetensors(t, map[string]any{"w": entry("F32", []int{1, 1, 1, 1, 1, 1, 1, 1, 16}, 0, 64)}, data), "rank"},
	}
	for _, c := range cases {
		_, err := ReadSafetensors(bytes.NewReader(c.file), int64(len(c.file)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want mention of %q", c.name, err, c.want)
		}
	}
	// The well-formed variant of the same file opens.
	good := rawSafetensors(t, ok, data)
	if _, err := ReadSafetensors(bytes.NewReader(good), int64(len(good))); err != nil {
		t.Fatal(err)
	}
	// A file truncated after its header was validated against a larger
	// claimed size fails on read, not with a panic.
	short := good[:len(good)-10]
	s, err := ReadSafetensors(bytes.NewReader(short), int64(len(good)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ReadFloat32("w", make([]float32, 16)); err == nil {
		t.Fatal("read past a truncated file succeeded")
	}
	// A non-float tensor can be opened but not read as floats.
	ints := rawSafetensors(t, map[string]any{"i": entry("I64", []int{8}, 0, 64)}, data)
	s, err = ReadSafetensors(bytes.NewReader(ints), int64(len(ints)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ReadFloat32("i", make([]float32, 8)); err == nil || !strings.Contains(err.Error(), "I64") {
		t.Fatalf("I64 read as float: %v", err)
	}
}

func TestOpenSafetensorsTruncatedFile(t *testing.T) {
	dir := t.TempDir()
	var buf bytes.Buffer
	if err := WriteSafetensors(&buf, []SafetensorsTensor{{Name: "w", Shape: []int{100}, Data: make([]float32, 100)}}, nil); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "t.safetensors")
	if err := os.WriteFile(path, buf.Bytes()[:buf.Len()-1], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenSafetensors(path); err == nil || !strings.Contains(err.Error(), "larger than the file") {
		t.Fatalf("truncated file: %v", err)
	}
	if _, err := OpenSafetensors(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing file opened")
	}
}
