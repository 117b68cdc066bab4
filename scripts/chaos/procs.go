package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// proc is one child process the harness owns: started, killed, paused and
// restarted under the same name, with its output appended to one log file.
// An exit the harness did not cause is counted and the child is restarted,
// so a part that dies on its own shows up in the report instead of stalling
// the run.
type proc struct {
	name string
	argv []string
	env  []string
	log  string
	// ready waits until the started child answers; nil: no check.
	ready func(h *harness) error

	mu        sync.Mutex
	cmd       *exec.Cmd
	done      chan struct{}
	expecting bool // the harness is about to end it, so the exit is not a crash
	starts    int
}

// start runs the child and waits until it is ready.
func (h *harness) start(p *proc) error {
	p.mu.Lock()
	lf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.mu.Unlock()
		return err
	}
	fmt.Fprintf(lf, "=== %s start %d at %s\n", p.name, p.starts+1, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = lf, lf
	// Own process group, so a Ctrl-C at the terminal reaches only the
	// harness, which then kills every child itself; Pdeathsig kills the
	// child should the harness die without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		p.mu.Unlock()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	p.cmd, p.done, p.expecting = cmd, make(chan struct{}), false
	p.starts++
	done := p.done
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		lf.Close()
		p.mu.Lock()
		crashed := !p.expecting && p.cmd == cmd
		p.mu.Unlock()
		close(done)
		if crashed && h.context().Err() == nil {
			h.noteCrash(p, err)
		}
	}()
	if p.ready != nil {
		if err := p.ready(h); err != nil {
			return fmt.Errorf("%s not ready: %w (log %s)", p.name, err, p.log)
		}
	}
	return nil
}

// signal sends sig to the running child; SIGKILL also waits for it to end.
func (p *proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	if cmd == nil {
		p.mu.Unlock()
		return fmt.Errorf("%s is not running", p.name)
	}
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM {
		p.expecting = true
	}
	p.mu.Unlock()
	if err := cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("%s %v: %w", p.name, sig, err)
	}
	if sig != syscall.SIGKILL {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New(p.name + " did not exit within 10s of SIGKILL")
	}
}

// pid is the running child's process id (0 when none).
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// stop kills the child's whole process group and waits (bounded) for it.
func (p *proc) stop() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.expecting = true
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Process.Kill()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

// newProc describes a child whose log goes to DIR/logs/NAME.log.
func (h *harness) newProc(name string, argv []string, ready func(*harness) error) *proc {
	p := &proc{name: name, argv: argv, env: h.env, log: filepath.Join(h.dir, "logs", name+".log"), ready: ready}
	h.mu.Lock()
	h.procs = append(h.procs, p)
	h.mu.Unlock()
	return p
}

// noteCrash records a child that ended without being told to and starts
// it again, so the run goes on.
func (h *harness) noteCrash(p *proc, err error) {
	h.mu.Lock()
	h.crashes = append(h.crashes, fmt.Sprintf("%s exited on its own at +%.0fs: %v", p.name, h.since(), err))
	h.mu.Unlock()
	h.logf("!! %s exited on its own (%v); restarting it", p.name, err)
	time.Sleep(time.Second)
	if h.context().Err() != nil {
		return
	}
	if err := h.start(p); err != nil {
		h.logf("!! restart %s: %v", p.name, err)
	}
}
