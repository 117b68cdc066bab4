//go:build cuda

package gpu

import (
	"bytes"
	"embed"
	"fmt"
	"math"
	"path"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"gorgonia.org/cu"
)

// The kernels, compiled by `make ptx` from kernels/*.cu.
//
//go:embed ptx/compute_80/*.ptx ptx/compute_90/*.ptx
var ptxFiles embed.FS

// Built reports whether this binary has the CUDA backend.
const Built = true

// maxArgs bounds a kernel's parameter count (the GEMMs have 14).
const maxArgs = 16

// Device is one GPU: its CUDA context (the device's primary context), one
// stream that every kernel and copy of this Device is ordered on, the
// loaded kernels, and workspaces shared by the models on it.
//
// Its methods, and those of the Models, Decoders and Trainers made from
// it, are safe for concurrent use: each public call holds the Device for
// its duration, so calls are serialised (one stream, in order). After a
// kernel fault the context is unusable; every later call returns the
// first error.
type Device struct {
	mu      sync.Mutex
	ordinal int
	opts    Options
	dev     cu.Device
	ctx     cu.CUContext
	stream  cu.Stream
	mods    []cu.Module
	fn      [numKernels]cu.Function

	name             string
	ccMajor, ccMinor int
	sms              int
	totalMem         int64

	// err is the first failure; once set, nothing else runs.
	err error
	// last is the kernel launched last, named by errors found at a later
	// synchronisation.
	last    kernel
	argVals [maxArgs]uint64
	argPtrs [maxArgs]unsafe.Pointer

	// Workspaces that grow on demand and are reused across calls (calls
	// are serialised): split-K partial products, column-sum partials, and
	// the float64 partials of sums of squares.
	splitK, colsum, sumsq devBuf
	closed                bool
}

// devBuf is a device allocation of n 4-byte elements.
type devBuf struct {
	ptr cu.DevicePtr
	n   int64
}

// Open initialises GPU `ordinal` and loads the kernels. It fails with an
// error wrapping ErrNoDriver when the machine has no usable driver.
func Open(ordinal int, opts Options) (*Device, error) {
	if err := driverStatus(); err != nil {
		return nil, err
	}
	if opts.Precision != FP32 && opts.Precision != TF32 {
		return nil, fmt.Errorf("gpu: unknown precision %v", opts.Precision)
	}
	n, err := cu.NumDevices()
	if err != nil {
		return nil, fmt.Errorf("gpu: counting devices: %w", err)
	}
	if ordinal < 0 || ordinal >= n {
		return nil, fmt.Errorf("gpu: cuda:%d requested, the driver sees %d device(s)", ordinal, n)
	}
	d := &Device{ordinal: ordinal, opts: opts}
	if d.dev, err = cu.GetDevice(ordinal); err != nil {
		return nil, fmt.Errorf("gpu: cuda:%d: %w", ordinal, err)
	}
	if d.name, err = d.dev.Name(); err != nil {
		return nil, fmt.Errorf("gpu: cuda:%d: name: %w", ordinal, err)
	}
	attrs, err := d.dev.Attributes(cu.ComputeCapabilityMajor, cu.ComputeCapabilityMinor, cu.MultiprocessorCount)
	if err != nil {
		return nil, fmt.Errorf("gpu: cuda:%d: attributes: %w", ordinal, err)
	}
	d.ccMajor, d.ccMinor, d.sms = attrs[0], attrs[1], attrs[2]
	if d.totalMem, err = d.dev.TotalMem(); err != nil {
		return nil, fmt.Errorf("gpu: cuda:%d: memory: %w", ordinal, err)
	}
	if d.ccMajor < 8 {
		return nil, fmt.Errorf("gpu: cuda:%d (%s) has compute capability %d.%d; the kernels need 8.0 or later (TF32 tensor cores)",
			ordinal, d.name, d.ccMajor, d.ccMinor)
	}
	for i := range d.argPtrs {
		d.argPtrs[i] = unsafe.Pointer(&d.argVals[i])
	}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if d.ctx, err = d.dev.RetainPrimaryCtx(); err != nil {
		return nil, fmt.Errorf("gpu: cuda:%d: context: %w", ordinal, err)
	}
	if err := cu.SetCurrentContext(d.ctx); err != nil {
		d.dev.ReleasePrimaryCtx()
		return nil, fmt.Errorf("gpu: cuda:%d: context: %w", ordinal, err)
	}
	if d.stream, err = cu.MakeStream(cu.NonBlocking); err != nil {
		d.dev.ReleasePrimaryCtx()
		return nil, fmt.Errorf("gpu: cuda:%d: stream: %w", ordinal, err)
	}
	if err := d.loadKernels(); err != nil {
		d.release()
		return nil, err
	}
	return d, nil
}

// loadKernels JIT-compiles the embedded PTX for this device (compute_90
// on Hopper and later, compute_80 otherwise) and looks up every kernel.
func (d *Device) loadKernels() error {
	arch := "compute_80"
	if d.ccMajor >= 9 {
		arch = "compute_90"
	}
	dir := path.Join("ptx", arch)
	entries, err := ptxFiles.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("gpu: embedded PTX: %w", err)
	}
	found := map[string]cu.Function{}
	for _, e := range entries {
		src, err := ptxFiles.ReadFile(path.Join(dir, e.Name()))
		if err != nil {
			return fmt.Errorf("gpu: embedded PTX: %w", err)
		}
		logBuf := &cu.JITErrorLogBuffer{Buffer: make([]byte, 16<<10)}
		mod, err := cu.LoadDataEx(string(src), logBuf)
		if err != nil {
			msg := string(bytes.TrimRight(logBuf.Buffer, "\x00"))
			return fmt.Errorf("gpu: loading %s/%s on %s (sm_%d%d): %w: %s", arch, e.Name(), d.name, d.ccMajor, d.ccMinor, err, strings.TrimSpace(msg))
		}
		d.mods = append(d.mods, mod)
		for _, name := range kernelNames {
			if _, ok := found[name]; ok {
				continue
			}
			if fn, err := mod.Function(name); err == nil {
				found[name] = fn
			}
		}
	}
	for k, name := range kernelNames {
		fn, ok := found[name]
		if !ok {
			return fmt.Errorf("gpu: kernel %s not found in the embedded %s PTX", name, arch)
		}
		d.fn[k] = fn
	}
	return nil
}

// Close releases the stream, modules and context. Models, Decoders and
// Trainers made from d must be closed first.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cu.SetCurrentContext(d.ctx); err != nil {
		return fmt.Errorf("gpu: close: %w", err)
	}
	d.release()
	return nil
}

func (d *Device) release() {
	d.stream.Synchronize()
	for _, b := range []*devBuf{&d.splitK, &d.colsum, &d.sumsq} {
		d.free(b)
	}
	for _, m := range d.mods {
		m.Unload()
	}
	d.mods = nil
	d.stream.Destroy()
	d.dev.ReleasePrimaryCtx()
	d.closed = true
}

// String names the device for logs: "cuda:0 NVIDIA H200 (sm_90, 132 SMs,
// 140 GiB, fp32)".
func (d *Device) String() string {
	return fmt.Sprintf("cuda:%d %s (sm_%d%d, %d SMs, %d GiB, %s)", d.ordinal, d.name, d.ccMajor, d.ccMinor, d.sms, d.totalMem>>30, d.opts.Precision)
}

// Precision is the precision of the matrix products.
func (d *Device) Precision() Precision { return d.opts.Precision }

// enter takes the device for one public call: the lock, this goroutine's
// OS thread, and the context made current on it. The returned function
// undoes all three.
func (d *Device) enter() (func(), error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, fmt.Errorf("gpu: cuda:%d is closed", d.ordinal)
	}
	if d.err != nil {
		err := d.err
		d.mu.Unlock()
		return nil, fmt.Errorf("gpu: cuda:%d failed earlier: %w", d.ordinal, err)
	}
	runtime.LockOSThread()
	if err := cu.SetCurrentContext(d.ctx); err != nil {
		runtime.UnlockOSThread()
		d.mu.Unlock()
		return nil, fmt.Errorf("gpu: cuda:%d: context: %w", d.ordinal, err)
	}
	return func() {
		runtime.UnlockOSThread()
		d.mu.Unlock()
	}, nil
}

// fail records the first error; launches after it do nothing.
func (d *Device) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

// run launches kernel k on the stream with a 1-D block. Arguments are
// 8-byte slots (see p, i32, f32, i64): the driver reads each parameter's
// own size from the start of its slot. Errors are sticky (see fail) and
// surface from sync.
func (d *Device) run(k kernel, gx, gy, gz, block int, args ...uint64) {
	if d.err != nil {
		return
	}
	if gx <= 0 || gy <= 0 || gz <= 0 {
		return // nothing to do
	}
	copy(d.argVals[:], args)
	d.last = k
	if err := d.fn[k].Launch(gx, gy, gz, block, 1, 1, 0, d.stream, d.argPtrs[:len(args)]); err != nil {
		d.fail(fmt.Errorf("gpu: launching %s (grid %dx%dx%d, block %d): %w", kernelNames[k], gx, gy, gz, block, err))
		return
	}
	if d.opts.SyncEachKernel {
		if err := d.stream.Synchronize(); err != nil {
			d.fail(fmt.Errorf("gpu: kernel %s (grid %dx%dx%d, block %d) failed: %w", kernelNames[k], gx, gy, gz, block, err))
		}
	}
}

// sync waits for the stream and returns the first error of the call.
func (d *Device) sync() error {
	if d.err != nil {
		return d.err
	}
	if err := d.stream.Synchronize(); err != nil {
		d.fail(fmt.Errorf("gpu: a kernel failed (the last launched was %s; Options.SyncEachKernel pins it down): %w", kernelNames[d.last], err))
	}
	return d.err
}

// Kernel argument slots.
func p(ptr cu.DevicePtr) uint64 { return uint64(ptr) }
func i32(v int) uint64          { return uint64(uint32(int32(v))) }
func i64(v int64) uint64        { return uint64(v) }
func f32(v float32) uint64      { return uint64(math.Float32bits(v)) }

// alloc returns a device buffer of n 4-byte elements.
func (d *Device) alloc(n int64, what string) (devBuf, error) {
	if n <= 0 {
		return devBuf{}, nil
	}
	ptr, err := cu.MemAlloc(n * 4)
	if err != nil {
		free, total, _ := cu.MemInfo()
		return devBuf{}, fmt.Errorf("gpu: allocating %s (%d MiB; %d of %d MiB free): %w", what, n*4>>20, free>>20, total>>20, err)
	}
	return devBuf{ptr: ptr, n: n}, nil
}

func (d *Device) free(b *devBuf) {
	if b.ptr != 0 {
		cu.MemFree(b.ptr)
	}
	*b = devBuf{}
}

// grow makes b hold at least n elements, reallocating (without keeping
// the contents) only when it is too small.
func (d *Device) grow(b *devBuf, n int64, what string) bool {
	if b.n >= n {
		return true
	}
	if err := d.sync(); err != nil { // the old buffer may still be in use
		return false
	}
	d.free(b)
	nb, err := d.alloc(n, what)
	if err != nil {
		d.fail(err)
		return false
	}
	*b = nb
	return true
}

// upload copies src (host, n*4 bytes at src) to dst, ordered on the stream.
// Copies from pageable memory return once the data is staged, so src may
// be reused at once.
func (d *Device) upload(dst cu.DevicePtr, src unsafe.Pointer, n int64, what string) {
	if d.err != nil || n == 0 {
		return
	}
	if err := cu.MemcpyHtoDAsync(dst, src, n*4, d.stream); err != nil {
		d.fail(fmt.Errorf("gpu: copying %s to the device: %w", what, err))
	}
}

// download copies n elements from src to host memory at dst, ordered on
// the stream; dst is valid after sync.
func (d *Device) download(dst unsafe.Pointer, src cu.DevicePtr, n int64, what string) {
	if d.err != nil || n == 0 {
		return
	}
	if err := cu.MemcpyDtoHAsync(dst, src, n*4, d.stream); err != nil {
		d.fail(fmt.Errorf("gpu: copying %s from the device: %w", what, err))
	}
}

// zero clears n elements at ptr.
func (d *Device) zero(ptr cu.DevicePtr, n int64) {
	if d.err != nil || n == 0 {
		return
	}
	if err := cu.MemsetD32Async(ptr, 0, n, d.stream); err != nil {
		d.fail(fmt.Errorf("gpu: clearing %d floats: %w", n, err))
	}
}

// carver lays tensors out in one allocation, each 256-byte aligned. Run
// the same sequence of take calls twice: with base 0 to measure (size),
// then with the allocation's base.
type carver struct {
	base cu.DevicePtr
	off  int64 // bytes
}

func (c *carver) take(n int64) cu.DevicePtr {
	p := c.base + cu.DevicePtr(c.off)
	c.off += (n*4 + 255) &^ 255
	return p
}

// size is the allocation the takes so far need, in 4-byte elements.
func (c *carver) size() int64 { return c.off / 4 }

// at is ptr advanced by i 4-byte elements.
func at(ptr cu.DevicePtr, i int64) cu.DevicePtr { return ptr + cu.DevicePtr(i*4) }
