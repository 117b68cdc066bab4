package batch

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"text/template"
	"text/template/parse"
	"time"
	"unicode/utf8"

	"github.com/tandem-ai/tandem/limits"
)

// Template limits. A template is user input: it runs once per row, so it
// must not loop forever, recurse without bound or produce unbounded text.
const (
	// MaxTemplateBytes bounds a template's source.
	MaxTemplateBytes = limits.TemplateBytes
	// MaxRenderBytes bounds one rendered prompt (the prompt limit).
	MaxRenderBytes = limits.TemplateRenderBytes
	// MaxRenderSteps bounds the loop iterations of one rendering.
	MaxRenderSteps = limits.TemplateRenderSteps
	// RenderTimeout bounds the time of one rendering.
	RenderTimeout = limits.TemplateRenderTime
	// maxFormatWidth bounds a printf width or precision.
	maxFormatWidth = limits.TemplateFormatWidth
)

// Errors a rendering can stop with.
var (
	ErrRenderTooLarge = fmt.Errorf("template: output exceeds %d bytes", MaxRenderBytes)
	ErrRenderTooLong  = fmt.Errorf("template: more than %d loop iterations or %v", MaxRenderSteps, RenderTimeout)
)

// tickFunc is the function the parser's tree gets a call of at the start of
// every range body and template: it counts steps and checks the deadline,
// and its error ends the execution.
const tickFunc = "tandemTick"

// Template is a parsed prompt template: Go text/template with
// missingkey=error, a fixed set of pure string functions, and no function
// that reaches outside the row (no call, no file or environment access).
//
// Execution is bounded three ways: output goes through a writer that fails
// past MaxRenderBytes; every loop iteration and template call runs an
// injected step counter that fails past MaxRenderSteps or RenderTimeout;
// and templates that call themselves, directly or not, are refused at parse
// time. Render is safe for concurrent use (renderings are serialised).
type Template struct {
	mu   sync.Mutex
	t    *template.Template
	cur  *renderState
	name string
}

type renderState struct {
	steps    int
	deadline time.Time
}

// renderClock is the clock RenderTimeout is measured on; tests replace it.
var renderClock = time.Now

// ParseTemplate parses src. Errors name the template's line.
func ParseTemplate(name, src string) (*Template, error) {
	if name == "" {
		name = "template"
	}
	if len(src) > MaxTemplateBytes {
		return nil, fmt.Errorf("template: %d bytes, limit %d", len(src), MaxTemplateBytes)
	}
	if !utf8.ValidString(src) {
		return nil, errors.New("template: not valid UTF-8")
	}
	if strings.TrimSpace(src) == "" {
		return nil, errors.New("template: empty")
	}
	tp := &Template{name: name}
	t := template.New(name).Option("missingkey=error").Funcs(tp.funcs())
	if _, err := t.Parse(src); err != nil {
		return nil, err
	}
	if err := checkRecursion(t); err != nil {
		return nil, err
	}
	for _, sub := range t.Templates() {
		if sub.Tree != nil && sub.Tree.Root != nil {
			injectTicks(sub.Tree.Root)
			sub.Tree.Root.Nodes = append([]parse.Node{tickNode(sub.Tree.Root.Pos)}, sub.Tree.Root.Nodes...)
		}
	}
	tp.t = t
	return tp, nil
}

// Render fills the template with data.
func (tp *Template) Render(data map[string]any) (out string, err error) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	tp.cur = &renderState{deadline: renderClock().Add(RenderTimeout)}
	defer func() { tp.cur = nil }()
	defer func() {
		// text/template recovers panics of functions; this covers its own.
		if v := recover(); v != nil {
			err = fmt.Errorf("template: panic: %v", v)
		}
	}()
	w := &limitedBuilder{limit: MaxRenderBytes}
	if err := tp.t.Execute(w, data); err != nil {
		switch {
		case errors.Is(err, ErrRenderTooLarge):
			return "", ErrRenderTooLarge
		case errors.Is(err, ErrRenderTooLong):
			return "", ErrRenderTooLong
		}
		return "", cleanTemplateError(err)
	}
	return w.b.String(), nil
}

func (tp *Template) tick() (string, error) {
	st := tp.cur
	if st == nil {
		return "", nil
	}
	st.steps++
	if st.steps > MaxRenderSteps || (st.steps%64 == 0 && renderClock().After(st.deadline)) {
		return "", ErrRenderTooLong
	}
	return "", nil
}

// cleanTemplateError keeps text/template's location ("template:3:5") and
// cause and drops the echo of the whole executing node.
func cleanTemplateError(err error) error {
	msg := err.Error()
	if i := strings.Index(msg, ": executing "); i >= 0 {
		if j := strings.Index(msg[i+len(": executing "):], ": "); j >= 0 {
			msg = msg[:i] + ": " + msg[i+len(": executing ")+j+2:]
		}
	}
	return errors.New(msg)
}

// limitedBuilder collects output up to limit bytes.
type limitedBuilder struct {
	b     strings.Builder
	limit int
}

func (l *limitedBuilder) Write(p []byte) (int, error) {
	if l.b.Len()+len(p) > l.limit {
		return 0, ErrRenderTooLarge
	}
	return l.b.Write(p)
}

// injectTicks puts a tick call at the start of every range body in the
// tree under n.
func injectTicks(n parse.Node) {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			injectTicks(c)
		}
	case *parse.RangeNode:
		if n.List != nil {
			injectTicks(n.List)
			n.List.Nodes = append([]parse.Node{tickNode(n.Pos)}, n.List.Nodes...)
		}
		if n.ElseList != nil {
			injectTicks(n.ElseList)
		}
	case *parse.IfNode:
		injectTicks(n.List)
		if n.ElseList != nil {
			injectTicks(n.ElseList)
		}
	case *parse.WithNode:
		injectTicks(n.List)
		if n.ElseList != nil {
			injectTicks(n.ElseList)
		}
	}
}

func tickNode(pos parse.Pos) parse.Node {
	id := parse.NewIdentifier(tickFunc).SetPos(pos)
	cmd := &parse.CommandNode{NodeType: parse.NodeCommand, Pos: pos, Args: []parse.Node{id}}
	pipe := &parse.PipeNode{NodeType: parse.NodePipe, Pos: pos, Cmds: []*parse.CommandNode{cmd}}
	return &parse.ActionNode{NodeType: parse.NodeAction, Pos: pos, Pipe: pipe}
}

// checkRecursion refuses templates whose {{template}} calls form a cycle:
// without a cycle the call depth is at most the number of templates.
func checkRecursion(t *template.Template) error {
	calls := map[string][]string{}
	for _, sub := range t.Templates() {
		if sub.Tree == nil {
			continue
		}
		var walk func(parse.Node)
		walk = func(n parse.Node) {
			switch n := n.(type) {
			case *parse.ListNode:
				if n == nil {
					return
				}
				for _, c := range n.Nodes {
					walk(c)
				}
			case *parse.TemplateNode:
				calls[sub.Name()] = append(calls[sub.Name()], n.Name)
			case *parse.IfNode:
				walk(n.List)
				walk(n.ElseList)
			case *parse.RangeNode:
				walk(n.List)
				walk(n.ElseList)
			case *parse.WithNode:
				walk(n.List)
				walk(n.ElseList)
			}
		}
		walk(sub.Tree.Root)
	}
	const (
		unseen = iota
		active
		finished
	)
	state := map[string]int{}
	var visit func(name string, path []string) error
	visit = func(name string, path []string) error {
		switch state[name] {
		case active:
			return fmt.Errorf("template: %q calls itself (%s): recursion is not allowed", name, strings.Join(append(path, name), " -> "))
		case finished:
			return nil
		}
		state[name] = active
		for _, c := range calls[name] {
			if err := visit(c, append(path, name)); err != nil {
				return err
			}
		}
		state[name] = finished
		return nil
	}
	for name := range calls {
		if err := visit(name, nil); err != nil {
			return err
		}
	}
	return nil
}

// funcs are the template's functions: pure string helpers, and bounded
// replacements for the builtins that could produce huge output (printf) or
// call arbitrary functions (call).
func (tp *Template) funcs() template.FuncMap {
	return template.FuncMap{
		tickFunc: tp.tick,
		"call":   func(...any) (string, error) { return "", errors.New("call is not available in prompt templates") },
		"printf": func(format string, args ...any) (string, error) {
			if err := checkFormat(format); err != nil {
				return "", err
			}
			s := fmt.Sprintf(format, args...)
			if len(s) > MaxRenderBytes {
				return "", ErrRenderTooLarge
			}
			return s, nil
		},
		"lower":      strings.ToLower,
		"upper":      strings.ToUpper,
		"trim":       strings.TrimSpace,
		"trimPrefix": func(prefix, s string) string { return strings.TrimPrefix(s, prefix) },
		"trimSuffix": func(suffix, s string) string { return strings.TrimSuffix(s, suffix) },
		"contains":   func(sub, s string) bool { return strings.Contains(s, sub) },
		"hasPrefix":  func(prefix, s string) bool { return strings.HasPrefix(s, prefix) },
		"hasSuffix":  func(suffix, s string) bool { return strings.HasSuffix(s, suffix) },
		"replace": func(old, new, s string) (string, error) {
			if old == "" {
				return "", errors.New("replace: the string to replace is empty")
			}
			if n := strings.Count(s, old); len(s)+n*(len(new)-len(old)) > MaxRenderBytes {
				return "", ErrRenderTooLarge
			}
			return strings.ReplaceAll(s, old, new), nil
		},
		"split": func(sep, s string) []string { return strings.Split(s, sep) },
		"join": func(sep string, list any) (string, error) {
			var parts []string
			switch l := list.(type) {
			case []string:
				parts = l
			case []any:
				for _, x := range l {
					parts = append(parts, fmt.Sprint(x))
				}
			default:
				return "", fmt.Errorf("join: want a list, got %T", list)
			}
			s := strings.Join(parts, sep)
			if len(s) > MaxRenderBytes {
				return "", ErrRenderTooLarge
			}
			return s, nil
		},
		"default": func(def, v any) any {
			if v == nil {
				return def
			}
			if s, ok := v.(string); ok && s == "" {
				return def
			}
			return v
		},
		"truncate": func(n int, s string) string {
			if n < 0 {
				n = 0
			}
			if utf8.RuneCountInString(s) <= n {
				return s
			}
			r := []rune(s)
			return string(r[:n])
		},
	}
}

// checkFormat refuses printf widths and precisions that are starred or
// longer than maxFormatWidth, which would let a tiny template allocate a
// huge string before any writer could refuse it.
func checkFormat(f string) error {
	for i := 0; i < len(f); i++ {
		if f[i] != '%' {
			continue
		}
		num := 0
	verb:
		for i++; i < len(f); i++ {
			switch c := f[i]; {
			case c == '*':
				return errors.New("printf: * widths are not allowed")
			case c >= '0' && c <= '9':
				num = num*10 + int(c-'0')
				if num > maxFormatWidth {
					return fmt.Errorf("printf: width or precision over %d", maxFormatWidth)
				}
			case c == '.' || c == '[' || c == ']':
				num = 0
			case c == '+' || c == '-' || c == '#' || c == ' ':
			default:
				break verb
			}
		}
	}
	return nil
}
