package k8s

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const dockerDir = "../build/docker"

// dfInstruction is one Dockerfile instruction with continuations joined.
type dfInstruction struct {
	cmd  string // upper case: FROM, RUN, COPY, ...
	args string
	line int
}

// dfStage is one FROM and what follows it.
type dfStage struct {
	image, name string // image after ARG expansion; the AS name, if any
	line        int
	body        []dfInstruction
}

var dfVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

// parseDockerfile splits a Dockerfile into stages. ARGs before the first
// FROM are expanded in FROM lines with their defaults, as docker build does
// without --build-arg. Errors name the line.
func parseDockerfile(data string) ([]dfStage, error) {
	var ins []dfInstruction
	sc := bufio.NewScanner(strings.NewReader(data))
	var cur strings.Builder
	start, n := 0, 0
	for sc.Scan() {
		n++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue // comments inside a continuation are dropped too
		}
		if cur.Len() == 0 {
			start = n
		}
		if strings.HasSuffix(trimmed, `\`) {
			cur.WriteString(strings.TrimSuffix(trimmed, `\`) + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		if strings.Contains(args, "<<") && (strings.EqualFold(cmd, "RUN") || strings.EqualFold(cmd, "COPY")) {
			return nil, fmt.Errorf("line %d: heredocs are not supported by this check; use a file", start)
		}
		ins = append(ins, dfInstruction{strings.ToUpper(cmd), strings.TrimSpace(args), start})
		cur.Reset()
	}
	if cur.Len() > 0 {
		return nil, fmt.Errorf("line %d: the file ends inside a line continuation", start)
	}
	globals := make(map[string]string)
	var stages []dfStage
	for _, in := range ins {
		switch {
		case in.cmd == "FROM":
			f := strings.Fields(in.args)
			var st dfStage
			st.line = in.line
			for len(f) > 0 && strings.HasPrefix(f[0], "--") {
				f = f[1:] // --platform=...
			}
			switch {
			case len(f) == 1:
			case len(f) == 3 && strings.EqualFold(f[1], "AS"):
				st.name = f[2]
			default:
				return nil, fmt.Errorf("line %d: FROM %s: want IMAGE [AS NAME]", in.line, in.args)
			}
			if len(f) == 0 {
				return nil, fmt.Errorf("line %d: FROM without an image", in.line)
			}
			var unresolved []string
			st.image = dfVar.ReplaceAllStringFunc(f[0], func(ref string) string {
				m := dfVar.FindStringSubmatch(ref)
				name := m[1] + m[2]
				if v, ok := globals[name]; ok {
					return v
				}
				unresolved = append(unresolved, name)
				return ref
			})
			if len(unresolved) > 0 {
				return nil, fmt.Errorf("line %d: FROM uses %v, which no ARG before the first FROM defines", in.line, unresolved)
			}
			stages = append(stages, st)
		case len(stages) == 0:
			if in.cmd != "ARG" {
				return nil, fmt.Errorf("line %d: %s before the first FROM (only ARG may come first)", in.line, in.cmd)
			}
			k, v, _ := strings.Cut(in.args, "=")
			globals[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"`)
		default:
			stages[len(stages)-1].body = append(stages[len(stages)-1].body, in)
		}
	}
	if len(stages) == 0 {
		return nil, fmt.Errorf("no FROM")
	}
	return stages, nil
}

// labelPairs parses LABEL k=v k2="v 2" ... into a map.
func labelPairs(args string) (map[string]string, error) {
	out := make(map[string]string)
	s := strings.TrimSpace(args)
	for s != "" {
		k, rest, ok := strings.Cut(s, "=")
		if !ok || strings.ContainsAny(k, " \t") {
			return nil, fmt.Errorf("LABEL %q: want key=value pairs", args)
		}
		var v string
		if strings.HasPrefix(rest, `"`) {
			end := strings.Index(rest[1:], `"`)
			if end < 0 {
				return nil, fmt.Errorf("LABEL %q: unterminated quote", args)
			}
			v, rest = rest[1:end+1], rest[end+2:]
		} else {
			v, rest, _ = strings.Cut(rest, " ")
		}
		out[k] = v
		s = strings.TrimSpace(rest)
	}
	return out, nil
}

var urlSource = regexp.MustCompile(`(?i)(^|\s)(https?://|git@|ftp://)`)
var numericUser = regexp.MustCompile(`^([0-9]+)(:[0-9]+)?$`)

// pinned reports whether an image reference names a version (a tag other
// than latest, or a digest).
func pinned(image string) bool {
	_, tag := splitImage(image)
	return tag != "" && tag != "latest"
}

// dockerfileRules are the expectations of each image beyond the common
// ones: static or cgo, the run-time base, build tags.
var dockerfileRules = map[string]struct {
	cgo       bool
	finalBase string // prefix of the final stage's image
	buildTags string // required in the go build line, if any
}{
	"tandem-producer":    {false, "gcr.io/distroless/static", ""},
	"tandem-scheduler":   {false, "gcr.io/distroless/static", ""},
	"tandem-worker":      {true, "debian:", ""},
	"tandem-worker-cuda": {true, "nvidia/cuda:", "-tags cuda"},
}

// lintDockerfile checks one Dockerfile; image is the name it builds.
func lintDockerfile(image, data string) []error {
	stages, err := parseDockerfile(data)
	if err != nil {
		return []error{err}
	}
	var errs []error
	if len(stages) < 2 {
		errs = append(errs, fmt.Errorf("one stage: build and run stages keep compilers out of the image"))
	}
	names := make(map[string]bool)
	allText := ""
	for i, st := range stages {
		if st.name != "" {
			if names[st.name] {
				errs = append(errs, fmt.Errorf("line %d: stage name %s repeated", st.line, st.name))
			}
		}
		if !names[st.image] && !pinned(st.image) {
			errs = append(errs, fmt.Errorf("line %d: FROM %s is not pinned to a version", st.line, st.image))
		}
		for _, in := range st.body {
			allText += in.cmd + " " + in.args + "\n"
			switch in.cmd {
			case "ADD":
				if urlSource.MatchString(in.args) {
					errs = append(errs, fmt.Errorf("line %d: ADD of a URL; download in a RUN step with a checksum, or COPY", in.line))
				}
			case "COPY":
				for _, f := range strings.Fields(in.args) {
					if from, ok := strings.CutPrefix(f, "--from="); ok && !names[from] && !pinned(from) {
						errs = append(errs, fmt.Errorf("line %d: COPY --from=%s is neither an earlier stage nor a pinned image", in.line, from))
					}
				}
			case "ENV", "ARG":
				for _, f := range strings.Fields(in.args) {
					k, _, _ := strings.Cut(f, "=")
					if sensitiveName.MatchString(k) {
						errs = append(errs, fmt.Errorf("line %d: %s %s: credentials never go in an image", in.line, in.cmd, k))
					}
				}
			}
		}
		if st.name != "" {
			names[st.name] = true
		}
		_ = i
	}

	final := stages[len(stages)-1]
	rule, ok := dockerfileRules[image]
	if !ok {
		return append(errs, fmt.Errorf("no rules for image %s", image))
	}
	if !strings.HasPrefix(final.image, rule.finalBase) {
		errs = append(errs, fmt.Errorf("final stage FROM %s, want a %s base", final.image, rule.finalBase))
	}
	if strings.Contains(final.image, "golang") || strings.Contains(final.image, "-devel") {
		errs = append(errs, fmt.Errorf("final stage FROM %s carries a toolchain", final.image))
	}
	user, entrypoint := "", ""
	labels := make(map[string]string)
	for _, in := range final.body {
		switch in.cmd {
		case "USER":
			user = in.args
		case "ENTRYPOINT", "CMD":
			var argv []string
			if err := json.Unmarshal([]byte(in.args), &argv); err != nil || len(argv) == 0 {
				errs = append(errs, fmt.Errorf("line %d: %s must be a JSON array (exec form): no shell at run time", in.line, in.cmd))
			}
			if in.cmd == "ENTRYPOINT" {
				entrypoint = in.args
			}
		case "LABEL":
			kv, err := labelPairs(in.args)
			if err != nil {
				errs = append(errs, fmt.Errorf("line %d: %w", in.line, err))
			}
			for k, v := range kv {
				labels[k] = v
			}
		case "COPY":
			if f := strings.Fields(in.args); len(f) >= 2 && f[0] == "." {
				errs = append(errs, fmt.Errorf("line %d: the final stage copies the build context; copy the binary only", in.line))
			}
		}
	}
	m := numericUser.FindStringSubmatch(user)
	switch {
	case user == "":
		errs = append(errs, fmt.Errorf("final stage has no USER: it would run as root"))
	case m == nil:
		errs = append(errs, fmt.Errorf("final USER %q: use a numeric uid, so runAsNonRoot can verify it", user))
	case m[1] == "0":
		errs = append(errs, fmt.Errorf("final USER %q is root", user))
	}
	if entrypoint == "" {
		errs = append(errs, fmt.Errorf("final stage has no ENTRYPOINT"))
	}
	for _, k := range []string{"org.opencontainers.image.title", "org.opencontainers.image.description", "org.opencontainers.image.source", "org.opencontainers.image.version"} {
		if labels[k] == "" {
			errs = append(errs, fmt.Errorf("final stage has no label %s", k))
		}
	}
	if t := labels["org.opencontainers.image.title"]; t != "" && t != image {
		errs = append(errs, fmt.Errorf("label org.opencontainers.image.title is %q, want %q", t, image))
	}
	cgoOn, cgoOff := strings.Contains(allText, "CGO_ENABLED=1"), strings.Contains(allText, "CGO_ENABLED=0")
	if rule.cgo && !cgoOn || !rule.cgo && !cgoOff {
		errs = append(errs, fmt.Errorf("want CGO_ENABLED=%v set explicitly in the build", map[bool]int{true: 1, false: 0}[rule.cgo]))
	}
	if rule.buildTags != "" && !strings.Contains(allText, rule.buildTags) {
		errs = append(errs, fmt.Errorf("the go build lacks %s", rule.buildTags))
	}
	return errs
}

// TestDockerfiles lints every Dockerfile: hadolint when it is on PATH, and
// always the checks above.
func TestDockerfiles(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(dockerDir, "*.Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(imageDockerfile) {
		t.Errorf("%s has %d Dockerfiles, want one per image: %v", dockerDir, len(files), imageDockerfile)
	}
	for image, name := range imageDockerfile {
		t.Run(image, func(t *testing.T) {
			file := filepath.Join(dockerDir, name)
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			for _, err := range lintDockerfile(image, string(data)) {
				t.Errorf("%s: %v", file, err)
			}
			ignore, err := os.ReadFile(file + ".dockerignore")
			if err != nil {
				t.Errorf("%s.dockerignore: %v (BuildKit reads it for this Dockerfile; keep .git and build outputs out of the context)", file, err)
			} else if !regexp.MustCompile(`(?m)^\.git$`).Match(ignore) {
				t.Errorf("%s.dockerignore does not exclude .git", file)
			}
		})
	}
	hadolint, err := exec.LookPath("hadolint")
	if err != nil {
		t.Log("hadolint is not on PATH; the built-in checks ran alone")
		return
	}
	out, err := exec.Command(hadolint, append([]string{"--config", filepath.Join(dockerDir, "hadolint.yaml")}, files...)...).CombinedOutput()
	if err != nil {
		t.Errorf("hadolint: %v\n%s", err, out)
	}
}
