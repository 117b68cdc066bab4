package batch

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"reflect"
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
	// MaxWorkBytes bounds what the template's functions build in one
	// rendering.
	MaxWorkBytes = limits.TemplateWorkBytes
	// maxFormatWidth bounds a printf width or precision.
	maxFormatWidth = limits.TemplateFormatWidth
)

// Errors a rendering can stop with.
var (
	ErrRenderTooLarge = fmt.Errorf("template: output exceeds %d bytes", MaxRenderBytes)
	ErrRenderTooLong  = fmt.Errorf("template: more than %d loop iterations or %v", MaxRenderSteps, RenderTimeout)
	ErrRenderTooMuch  = fmt.Errorf("template: functions built more than %d bytes", MaxWorkBytes)
)

// tickFunc is the function the parser's tree gets a call of at the start of
// every range body and template: it counts steps and checks the deadline,
// and its error ends the execution.
const tickFunc = "tandemTick"

// Template is a parsed prompt template: Go text/template with
// missingkey=error, a fixed set of pure string functions, and no function
// that reaches outside the row (no call, no file or environment access).
//
// Execution is bounded four ways: output goes through a writer that fails
// past MaxRenderBytes; every function that builds text or a list (print,
// printf, html, join, lower, split...) builds it in a writer that fails
// past MaxRenderBytes for one result and past MaxWorkBytes for all the
// results of a rendering, so memory stays near those bounds however often
// a template repeats a call; every loop iteration and template call runs an
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
	built    int // bytes the functions built, against MaxWorkBytes
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
		case errors.Is(err, ErrRenderTooMuch):
			return "", ErrRenderTooMuch
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

// limitedBuilder collects output up to limit bytes; the write that would
// pass it fails with over (ErrRenderTooLarge when nil), and so does every
// later one, for writers that ignore errors (template.HTMLEscape).
type limitedBuilder struct {
	b       strings.Builder
	limit   int
	over    error
	refused bool
}

func (l *limitedBuilder) Write(p []byte) (int, error) {
	if l.refused || l.b.Len()+len(p) > l.limit {
		return 0, l.refuse()
	}
	return l.b.Write(p)
}

// WriteString spares fmt.Fprint of a string and io.WriteString a copy.
func (l *limitedBuilder) WriteString(s string) (int, error) {
	if l.refused || l.b.Len()+len(s) > l.limit {
		return 0, l.refuse()
	}
	return l.b.WriteString(s)
}

func (l *limitedBuilder) refuse() error {
	l.refused = true
	if l.over == nil {
		return ErrRenderTooLarge
	}
	return l.over
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
// replacements for the builtins that could produce huge output (print,
// printf, println, html, js, urlquery) or call arbitrary functions (call).
// Every result that is new text, or a new list, is built through build or
// charged with charge, so it counts against the rendering's MaxWorkBytes.
func (tp *Template) funcs() template.FuncMap {
	return template.FuncMap{
		tickFunc: tp.tick,
		"call":   func(...any) (string, error) { return "", errors.New("call is not available in prompt templates") },
		"print": func(args ...any) (string, error) {
			return tp.build(func(w io.Writer) error { return fprint(w, false, args) })
		},
		"println": func(args ...any) (string, error) {
			return tp.build(func(w io.Writer) error { return fprint(w, true, args) })
		},
		"printf":     tp.printf,
		"html":       func(args ...any) (string, error) { return tp.escape(args, template.HTMLEscape) },
		"js":         func(args ...any) (string, error) { return tp.escape(args, template.JSEscape) },
		"urlquery":   func(args ...any) (string, error) { return tp.escape(args, queryEscape) },
		"lower":      func(s string) (string, error) { return tp.buildString(s, strings.ToLower) },
		"upper":      func(s string) (string, error) { return tp.buildString(s, strings.ToUpper) },
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
			if err := tp.charge(len(s) + strings.Count(s, old)*(len(new)-len(old))); err != nil {
				return "", err
			}
			return strings.ReplaceAll(s, old, new), nil
		},
		"split": func(sep, s string) ([]string, error) {
			// The parts share s's bytes; the list itself is what is new.
			n := strings.Count(s, sep) + 1
			if sep == "" {
				n = utf8.RuneCountInString(s)
			}
			if err := tp.charge(n * stringHeaderBytes); err != nil {
				return nil, err
			}
			return strings.Split(s, sep), nil
		},
		"join": func(sep string, list any) (string, error) {
			var n int
			var at func(i int) any
			switch l := list.(type) {
			case []string:
				n, at = len(l), func(i int) any { return l[i] }
			case []any:
				n, at = len(l), func(i int) any { return l[i] }
			default:
				return "", fmt.Errorf("join: want a list, got %T", list)
			}
			return tp.build(func(w io.Writer) error {
				for i := range n {
					if i > 0 {
						if _, err := io.WriteString(w, sep); err != nil {
							return err
						}
					}
					if _, err := fmt.Fprint(w, at(i)); err != nil {
						return err
					}
				}
				return nil
			})
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
			for i := range s { // by runes, without a copy of s as []rune
				if n <= 0 {
					return s[:i]
				}
				n--
			}
			return s
		},
	}
}

// stringHeaderBytes is what one element of a []string costs beside its
// bytes (a pointer and a length).
const stringHeaderBytes = 16

// charge counts n bytes a function is about to build against the
// rendering's bounds: ErrRenderTooLarge for one result over MaxRenderBytes,
// ErrRenderTooMuch when the rendering's results pass MaxWorkBytes.
func (tp *Template) charge(n int) error {
	if n > MaxRenderBytes {
		return ErrRenderTooLarge
	}
	if st := tp.cur; st != nil {
		if st.built+n > MaxWorkBytes {
			return ErrRenderTooMuch
		}
		st.built += n
	}
	return nil
}

// build runs fill into a writer that refuses to grow past what charge
// would allow, so a function's result is refused as it passes the bound,
// before it is built whole, and charges what was built.
func (tp *Template) build(fill func(w io.Writer) error) (string, error) {
	w := tp.resultWriter()
	err := fill(w)
	if err == nil && w.refused {
		err = w.refuse() // fill ignored a write error
	}
	if err != nil {
		return "", err
	}
	if err := tp.charge(w.b.Len()); err != nil {
		return "", err
	}
	return w.b.String(), nil
}

// resultWriter is the writer of one function result: it refuses past
// MaxRenderBytes, or past what is left of MaxWorkBytes when that is less.
func (tp *Template) resultWriter() *limitedBuilder {
	w := &limitedBuilder{limit: MaxRenderBytes}
	if st := tp.cur; st != nil && MaxWorkBytes-st.built < w.limit {
		w.limit, w.over = MaxWorkBytes-st.built, ErrRenderTooMuch
	}
	return w
}

// buildString charges f(s), refusing before f runs when s alone is over
// what is left: f's results (lower, upper) are about as long as s.
func (tp *Template) buildString(s string, f func(string) string) (string, error) {
	if w := tp.resultWriter(); len(s) > w.limit {
		return "", w.refuse()
	}
	return tp.build(func(w io.Writer) error {
		_, err := io.WriteString(w, f(s))
		return err
	})
}

// fprint writes args as fmt.Sprint (ln false) or fmt.Sprintln (ln true)
// would, one operand at a time, so the writer can refuse before the whole
// text is built.
func fprint(w io.Writer, ln bool, args []any) error {
	isString := func(a any) bool { return a != nil && reflect.TypeOf(a).Kind() == reflect.String }
	for i, a := range args {
		if i > 0 && (ln || !isString(args[i-1]) && !isString(a)) {
			if _, err := io.WriteString(w, " "); err != nil {
				return err
			}
		}
		if _, err := fmt.Fprint(w, a); err != nil {
			return err
		}
	}
	if ln {
		_, err := io.WriteString(w, "\n")
		return err
	}
	return nil
}

// printf writes as fmt.Sprintf would, one directive and its operand at a
// time, so the writer can refuse before the whole text is built. Explicit
// argument indexes (%[2]s) are refused by checkFormat: they would let one
// operand be printed any number of times by a single call.
func (tp *Template) printf(format string, args ...any) (string, error) {
	if err := checkFormat(format); err != nil {
		return "", err
	}
	return tp.build(func(w io.Writer) error {
		for f := format; f != ""; {
			lit, directive, rest := nextDirective(f)
			f = rest
			if _, err := io.WriteString(w, lit); err != nil {
				return err
			}
			var err error
			switch {
			case directive == "":
			case directive == "%%":
				_, err = io.WriteString(w, "%")
			case len(args) > 0:
				_, err = fmt.Fprintf(w, directive, args[0])
				args = args[1:]
			default:
				_, err = fmt.Fprintf(w, directive, args...) // %!v(MISSING), as Sprintf
			}
			if err != nil {
				return err
			}
		}
		if len(args) > 0 {
			extra := "" // no directive: Sprintf's %!(EXTRA ...)
			_, err := fmt.Fprintf(w, extra, args...)
			return err
		}
		return nil
	})
}

// nextDirective splits f into the literal text before its first %
// directive, the directive (flags, width, precision and verb), and the
// rest.
func nextDirective(f string) (lit, directive, rest string) {
	i := strings.IndexByte(f, '%')
	if i < 0 {
		return f, "", ""
	}
	j := i + 1
	for j < len(f) && strings.IndexByte("+-# 0123456789.", f[j]) >= 0 {
		j++
	}
	if j < len(f) {
		_, size := utf8.DecodeRuneInString(f[j:])
		j += size
	}
	return f[:i], f[i:j], f[j:]
}

// escape is text/template's html, js and urlquery, bounded: the operands
// are printed as print does (one string operand is taken as it is), then
// escaped into a bounded writer.
func (tp *Template) escape(args []any, esc func(w io.Writer, b []byte)) (string, error) {
	s, ok := "", false
	if len(args) == 1 {
		s, ok = args[0].(string)
	}
	if !ok {
		var err error
		if s, err = tp.build(func(w io.Writer) error { return fprint(w, false, args) }); err != nil {
			return "", err
		}
	}
	return tp.build(func(w io.Writer) error {
		esc(w, []byte(s))
		return nil
	})
}

// queryEscape is url.QueryEscape as an escaper writing to w.
func queryEscape(w io.Writer, b []byte) { _, _ = io.WriteString(w, url.QueryEscape(string(b))) }

// checkFormat refuses printf widths and precisions that are starred or
// longer than maxFormatWidth, which would let a tiny template allocate a
// huge string before any writer could refuse it, and explicit argument
// indexes, which would let one call print an operand any number of times.
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
			case c == '[':
				return errors.New("printf: explicit argument indexes ([n]) are not allowed")
			case c == '.':
				num = 0
			case c == '+' || c == '-' || c == '#' || c == ' ':
			default:
				break verb
			}
		}
	}
	return nil
}
