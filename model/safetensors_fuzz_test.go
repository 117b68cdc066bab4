package model

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"
)

// stImage builds a safetensors image from a header string and data bytes.
func stImage(header string, data []byte) []byte {
	out := make([]byte, 8, 8+len(header)+len(data))
	binary.LittleEndian.PutUint64(out, uint64(len(header)))
	out = append(out, header...)
	return append(out, data...)
}

// FuzzReadSafetensors: a model file from anywhere (a download, a user's
// upload). ReadSafetensors must not panic or allocate past the file's size;
// what it accepts must describe tensors that lie inside the data section,
// match dtype × shape, do not overlap, and read without error.
func FuzzReadSafetensors(f *testing.F) {
	f.Add(stImage(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(stImage(`{"__metadata__":{"format":"pt"},"w":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[],"data_offsets":[8,10]}}  `, make([]byte, 10)))
	f.Add(stImage(`{"a":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"b":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(stImage(`{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(stImage(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)))
	f.Add(stImage(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(stImage(`{"a":{"dtype":"X9","shape":[1],"data_offsets":[0,1]}}`, make([]byte, 1)))
	f.Add(stImage(`{"a":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}}`, make([]byte, 4)))
	f.Add(stImage(`{"__metadata__":{"k":1}}`, nil))
	f.Add(stImage(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551615,4]}}`, make([]byte, 4)))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, img []byte) {
		s, err := ReadSafetensors(bytes.NewReader(img), int64(len(img)))
		if err != nil {
			if s != nil {
				t.Fatal("non-nil result with an error")
			}
			return
		}
		dataSize := int64(len(img)) - s.dataStart
		var prevEnd int64
		for _, name := range s.Names() {
			info, ok := s.Tensor(name)
			if !ok {
				t.Fatalf("Names lists %q but Tensor does not find it", name)
			}
			// Names come in offset order; an empty tensor occupies no bytes,
			// so it may sit at any offset inside the data without overlapping.
			empty := info.Begin == info.End
			if (!empty && info.Begin < prevEnd) || info.Begin > info.End || info.End > dataSize {
				t.Fatalf("tensor %q range [%d,%d) bad (previous end %d, data %d)", name, info.Begin, info.End, prevEnd, dataSize)
			}
			if !empty {
				prevEnd = info.End
			}
			if len(info.Shape) > maxTensorDims {
				t.Fatalf("tensor %q has rank %d", name, len(info.Shape))
			}
			n := info.NumElements()
			if n < 0 || n*dtypeSizes[info.DType] != info.End-info.Begin {
				t.Fatalf("tensor %q: %d elements of %s in %d bytes", name, n, info.DType, info.End-info.Begin)
			}
			switch info.DType {
			case F32, F16, BF16:
				// n is bounded by the image, which the fuzzer keeps small.
				dst := make([]float32, n)
				if err := s.ReadFloat32(name, dst); err != nil {
					t.Fatalf("accepted tensor %q does not read: %v", name, err)
				}
			default:
				if err := s.ReadFloat32(name, make([]float32, n)); err == nil {
					t.Fatalf("tensor %q of dtype %s read as float32", name, info.DType)
				}
			}
		}
	})
}

// FuzzSamplingParamsValidate: parameters a caller sets directly. Validate
// must refuse everything outside the documented ranges, NaN and infinities
// included.
func FuzzSamplingParamsValidate(f *testing.F) {
	f.Add(16, float32(1), 0, float32(1), float32(0), float32(1), float32(0), float32(0), 1, 0, 1, 1)
	f.Add(0, float32(0), -1, float32(0), float32(0), float32(0), float32(0), float32(0), 0, 0, 0, 0)
	f.Add(8193, float32(2.5), -2, float32(1.1), float32(-0.1), float32(-1), float32(2.1), float32(-2.1), 17, 6, 5, 257)
	f.Add(1, float32(math.NaN()), 0, float32(math.NaN()), float32(math.NaN()), float32(math.Inf(1)), float32(math.NaN()), float32(math.Inf(-1)), 1, 0, 1, 0)
	f.Fuzz(func(t *testing.T, maxTokens int, temp float32, topK int, topP, minP, rep, pres, freq float32, n, logprobs, nStop, stopLen int) {
		p := SamplingParams{MaxTokens: maxTokens, Temperature: temp, TopK: topK, TopP: topP, MinP: minP,
			RepetitionPenalty: rep, PresencePenalty: pres, FrequencyPenalty: freq, N: n, Logprobs: logprobs}
		// Bounded so that a huge fuzzed count cannot exhaust memory in the test itself.
		l := stopLen % 300
		if l < 0 {
			l = -l
		}
		for i := 0; i < nStop%8; i++ {
			p.Stop = append(p.Stop, string(bytes.Repeat([]byte{'s'}, l)))
		}
		if err := p.Validate(); err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		q := p.WithDefaults()
		in := func(v, lo, hi float32) bool { return v >= lo && v <= hi }
		switch {
		case q.MaxTokens < 1 || q.MaxTokens > MaxTokensLimit, q.N < 1 || q.N > MaxChoices,
			q.Logprobs < 0 || q.Logprobs > MaxLogprobs, len(q.Stop) > MaxStopSequences, q.TopK < 0,
			!in(q.Temperature, 0, 2), !(q.TopP > 0 && q.TopP <= 1), !in(q.MinP, 0, 1),
			!in(q.PresencePenalty, -2, 2), !in(q.FrequencyPenalty, -2, 2),
			!(q.RepetitionPenalty > 0) || math.IsInf(float64(q.RepetitionPenalty), 0):
			t.Fatalf("Validate accepted %+v", p)
		}
		for _, s := range q.Stop {
			if s == "" || len(s) > MaxStopBytes {
				t.Fatalf("Validate accepted a stop sequence of %d bytes", len(s))
			}
		}
	})
}
