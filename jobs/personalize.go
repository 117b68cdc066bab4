package jobs

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/url"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tandem-ai/tandem/dataroot"
	"github.com/tandem-ai/tandem/generation"
	"github.com/tandem-ai/tandem/loop"
	"github.com/tandem-ai/tandem/model"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/recsys"
	"github.com/tandem-ai/tandem/registry"
)

// KindPersonalize is the stable kind string of PersonalizeArgs.
const KindPersonalize = "personalize"

// Bounds of a personalize job.
const (
	MaxPersonalizeUsers   = 10_000
	MaxPersonalizePerUser = 20
	MaxCatalogEntries     = 10_000
	// MaxCatalogLineBytes bounds one catalog line (a template and its vars).
	MaxCatalogLineBytes = 256 << 10
	// MaxUserIDBytes bounds a user id (the serving store's limit).
	MaxUserIDBytes = 256

	DefaultPersonalizePerUser   = 3
	DefaultPersonalizeMaxTokens = 32
	// DefaultTopicTemplate fills a recommended topic when the job names no
	// topic template.
	DefaultTopicTemplate = "Write a short piece about {{.topic}}.\n"

	// personalizeGroupUsers is how many users are generated, written and
	// recorded together.
	personalizeGroupUsers = 32
	// maxResultErrors bounds the line errors kept in the task result (the
	// summary file has them all).
	maxResultErrors = 20
)

// Catalog item kinds, the recommender's item kinds.
const (
	ItemKindTemplate = "template"
	ItemKindTopic    = "topic"
)

// Where a user's items came from.
const (
	SourceRecommended = "recommended" // the user's own served list
	SourcePopular     = "popular"     // cold start: the generation's popular list
	SourceCatalog     = "catalog"     // cold start without a popular list: catalog order
)

// PersonalizeArgs asks for personalised generations: for each user, the
// first PerUser templates and topics of the catalog in the user's served
// recommendations (or, for a user with none, in the popular list), filled
// and generated, written as one batch output file per user and recorded
// in the loop store (source "personalize") so people can give feedback.
type PersonalizeArgs struct {
	// Users is a file of user ids, one a line ('#' comments and blank
	// lines skipped); empty means every user with a served list.
	Users string `json:"users,omitempty"`
	// Catalog is a JSONL file of CatalogEntry: the templates and topics
	// the recommender's items name.
	Catalog string `json:"catalog"`
	// PerUser is N, the items generated per user; default 3.
	PerUser int    `json:"per_user,omitempty"`
	Model   string `json:"model"`
	// Out is the output directory: users/<user>.jsonl and summary.json.
	Out string `json:"out"`
	// MaxTokens per generation; default 32.
	MaxTokens   int      `json:"max_tokens,omitempty"`
	Temperature *float32 `json:"temperature,omitempty"`
	// Seed makes the run reproducible; each generation's seed derives
	// from it, the run, the user and the item.
	Seed      int64 `json:"seed,omitempty"`
	BatchSize int   `json:"batch_size,omitempty"`
	// TopicTemplate fills topic items (data: .topic, .user); default
	// DefaultTopicTemplate.
	TopicTemplate string `json:"topic_template,omitempty"`
	// Run names this run's generations (ids derive from run, user and
	// item, so a retried job rewrites the same ones); default the task id.
	Run string `json:"run,omitempty"`
}

// Kind implements pipeline.JobArgs.
func (PersonalizeArgs) Kind() string { return KindPersonalize }

// jobPaths implements pathArgs.
func (a PersonalizeArgs) jobPaths() []JobPath {
	return []JobPath{{"model", a.Model}, {"catalog", a.Catalog}, {"users", a.Users}, {"out", a.Out}}
}

// Validate implements pipeline.Validator.
func (a PersonalizeArgs) Validate() error {
	switch {
	case a.Catalog == "":
		return errors.New("catalog: required")
	case a.Out == "":
		return errors.New("out: required")
	case a.PerUser < 0 || a.PerUser > MaxPersonalizePerUser:
		return fmt.Errorf("per_user: %d out of range [1, %d]", a.PerUser, MaxPersonalizePerUser)
	case a.BatchSize < 0 || a.BatchSize > MaxBatchSize:
		return fmt.Errorf("batch_size: %d is outside 0..%d", a.BatchSize, MaxBatchSize)
	case len(a.Run) > pipeline.MaxTokenLen:
		return fmt.Errorf("run: longer than %d bytes", pipeline.MaxTokenLen)
	case len(a.TopicTemplate) > MaxCatalogLineBytes:
		return fmt.Errorf("topic_template: longer than %d bytes", MaxCatalogLineBytes)
	}
	for _, f := range []struct{ name, path string }{{"catalog", a.Catalog}, {"out", a.Out}, {"users", a.Users}} {
		if f.path == "" {
			continue
		}
		if err := dataroot.CheckPath(f.name, f.path); err != nil {
			return err
		}
	}
	if err := generation.ValidateModelName(a.Model); err != nil {
		return err
	}
	if _, err := a.body("x", 0).Params(); err != nil {
		return err
	}
	return nil
}

// body is the completions body of one generation.
func (a PersonalizeArgs) body(prompt string, seed int64) generation.CompletionsBody {
	mt := a.MaxTokens
	if mt == 0 {
		mt = DefaultPersonalizeMaxTokens
	}
	return generation.CompletionsBody{Prompt: prompt, MaxTokens: &mt, Temperature: a.Temperature, Seed: &seed}
}

// CatalogEntry is one line of a personalize catalog.
type CatalogEntry struct {
	// ID is the recommender's item id.
	ID   string `json:"id"`
	Kind string `json:"kind"` // "template" or "topic"
	// Template is a prompt template (the batch template language) for a
	// template item; it sees .user, .topic (the user's best recommended
	// topic, when there is one) and Vars.
	Template string `json:"template,omitempty"`
	// Vars are a template's default values (.topic among them, used when
	// the user has no recommended topic).
	Vars map[string]string `json:"vars,omitempty"`
	// Topic is the text a topic item stands for ("a city marathon").
	Topic string `json:"topic,omitempty"`
}

// PromptTemplate is a parsed prompt template.
type PromptTemplate interface {
	Render(data map[string]any) (string, error)
}

// PromptTemplateParser parses a template's source; name names it in errors.
type PromptTemplateParser func(name, src string) (PromptTemplate, error)

// catalogItem is a checked catalog entry with its parsed template.
type catalogItem struct {
	CatalogEntry
	tmpl PromptTemplate
}

// catalog is the parsed catalog, by id and in file order.
type catalog struct {
	byID  map[string]*catalogItem
	order []*catalogItem
}

// readCatalog reads and checks a catalog; any bad line fails it, naming
// the line (the catalog is configuration, not data to skip through).
func readCatalog(r io.Reader, parse PromptTemplateParser) (*catalog, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	c := &catalog{byID: map[string]*catalogItem{}}
	for lineNo := 1; ; lineNo++ {
		raw, tooLong, err := generation.ReadBoundedLine(br, MaxCatalogLineBytes)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("catalog line %d: %w", lineNo, err)
		}
		if tooLong {
			return nil, fmt.Errorf("catalog line %d: longer than %d bytes", lineNo, MaxCatalogLineBytes)
		}
		if len(generation.TrimLineSpace(raw)) == 0 {
			continue
		}
		it, err := parseCatalogLine(raw, parse)
		if err != nil {
			return nil, fmt.Errorf("catalog line %d: %w", lineNo, err)
		}
		if _, dup := c.byID[it.ID]; dup {
			return nil, fmt.Errorf("catalog line %d: id %q appears twice", lineNo, it.ID)
		}
		if len(c.order) == MaxCatalogEntries {
			return nil, fmt.Errorf("catalog line %d: more than %d entries", lineNo, MaxCatalogEntries)
		}
		c.byID[it.ID] = it
		c.order = append(c.order, it)
	}
	if len(c.order) == 0 {
		return nil, errors.New("catalog: no entries")
	}
	return c, nil
}

func parseCatalogLine(raw []byte, parse PromptTemplateParser) (*catalogItem, error) {
	var e CatalogEntry
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return nil, err
	}
	if err := checkUserOrItem(e.ID); err != nil {
		return nil, fmt.Errorf("field \"id\": %w", err)
	}
	it := &catalogItem{CatalogEntry: e}
	switch e.Kind {
	case ItemKindTemplate:
		if e.Topic != "" {
			return nil, errors.New(`field "topic": only for kind "topic"`)
		}
		t, err := parse(e.ID, e.Template)
		if err != nil {
			return nil, fmt.Errorf("field \"template\": %w", err)
		}
		it.tmpl = t
	case ItemKindTopic:
		if e.Template != "" || len(e.Vars) > 0 {
			return nil, errors.New(`fields "template" and "vars": only for kind "template"`)
		}
		if strings.TrimSpace(e.Topic) == "" {
			return nil, errors.New(`field "topic": required for kind "topic"`)
		}
	default:
		return nil, fmt.Errorf("field \"kind\": %.64q (want %s or %s)", e.Kind, ItemKindTemplate, ItemKindTopic)
	}
	return it, nil
}

// checkUserOrItem applies the recommender's rules for ids.
func checkUserOrItem(id string) error {
	switch {
	case id == "":
		return errors.New("required")
	case len(id) > MaxUserIDBytes:
		return fmt.Errorf("%d bytes, limit %d", len(id), MaxUserIDBytes)
	case !utf8.ValidString(id):
		return errors.New("not valid UTF-8")
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x20 || id[i] == 0x7f {
			return fmt.Errorf("control character at byte %d", i)
		}
	}
	return nil
}

// PersonalizeLineError is a line of the users file that was skipped.
type PersonalizeLineError struct {
	Line    int    `json:"line"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// userLine is one user to generate for; Line is 0 for users taken from
// the served lists.
type userLine struct {
	Line int
	User string
}

// readUserLines reads a users file: one id a line, blank lines and '#'
// comments skipped, surrounding spaces trimmed. A bad line (too long, not
// UTF-8, a control character, a repeat) is reported with its number and
// skipped; the others are kept. More than MaxPersonalizeUsers users is an
// error.
func readUserLines(r io.Reader) ([]userLine, []PersonalizeLineError, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var users []userLine
	var bad []PersonalizeLineError
	seen := map[string]int{}
	for lineNo := 1; ; lineNo++ {
		raw, tooLong, err := generation.ReadBoundedLine(br, MaxUserIDBytes+64)
		if errors.Is(err, io.EOF) {
			return users, bad, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("users line %d: %w", lineNo, err)
		}
		if tooLong {
			bad = append(bad, PersonalizeLineError{Line: lineNo, Code: "invalid_user", Message: fmt.Sprintf("user id: longer than %d bytes", MaxUserIDBytes)})
			continue
		}
		u := strings.TrimSpace(string(raw))
		if u == "" || strings.HasPrefix(u, "#") {
			continue
		}
		if err := checkUserOrItem(u); err != nil {
			bad = append(bad, PersonalizeLineError{Line: lineNo, Code: "invalid_user", Message: "user id: " + err.Error()})
			continue
		}
		if first, dup := seen[u]; dup {
			bad = append(bad, PersonalizeLineError{Line: lineNo, Code: "duplicate_user", Message: fmt.Sprintf("user %q already on line %d", u, first)})
			continue
		}
		if len(users) == MaxPersonalizeUsers {
			return nil, nil, fmt.Errorf("users line %d: more than %d users", lineNo, MaxPersonalizeUsers)
		}
		seen[u] = lineNo
		users = append(users, userLine{Line: lineNo, User: u})
	}
}

// PersonalizeUser is what was generated for one user.
type PersonalizeUser struct {
	User string `json:"user"`
	Line int    `json:"line,omitempty"`
	// File is the user's output, relative to the output directory.
	File   string   `json:"file"`
	Source string   `json:"source"`
	Items  []string `json:"items"`
	// Generations are the ids people give feedback on, one per item
	// generated without error.
	Generations []string `json:"generations"`
	Failed      int      `json:"failed"`
}

// PersonalizeSummary is summary.json of the output directory.
type PersonalizeSummary struct {
	Run    string                 `json:"run"`
	Model  string                 `json:"model"`
	Users  []PersonalizeUser      `json:"users"`
	Errors []PersonalizeLineError `json:"errors"`
}

// PersonalizeResult is what a personalize job prints and keeps as its
// result.
type PersonalizeResult struct {
	Run         string `json:"run"`
	Out         string `json:"out"`
	Summary     string `json:"summary"`
	Users       int    `json:"users"`
	Recommended int    `json:"recommended"`
	Popular     int    `json:"popular"`
	Catalog     int    `json:"catalog"`
	Generations int    `json:"generations"`
	Failed      int    `json:"failed"`
	BadLines    int    `json:"bad_lines"`
	// Errors are the first bad lines of the users file.
	Errors []PersonalizeLineError `json:"errors,omitempty"`
}

// PersonalizeWorker runs personalize jobs.
type PersonalizeWorker struct{ Deps *Deps }

// Work implements pipeline.Worker.
func (w PersonalizeWorker) Work(ctx context.Context, job *pipeline.Job[PersonalizeArgs]) error {
	a := job.Args
	if a.Run == "" {
		a.Run = job.ID // a retry rewrites the same generations
	}
	res, err := w.run(ctx, a)
	if err != nil {
		return err
	}
	return keepResult(job.ResultWriter, res)
}

// personalizer holds one run's inputs.
type personalizer struct {
	a       PersonalizeArgs
	root    *dataroot.Root
	cat     *catalog
	topic   PromptTemplate
	serving *recsys.RedisStore
	gen     int64
	popular []recsys.Scored
	loop    *loop.Store
	model   string
	logger  *slog.Logger
}

// pin makes the generation being served now the one the run reads, with
// its popular list.
func (p *personalizer) pin(ctx context.Context) error {
	var err error
	if p.gen, err = p.serving.Current(ctx); err != nil {
		return err
	}
	p.popular = nil
	if p.gen > 0 {
		if p.popular, _, err = p.serving.Popular(ctx, p.gen); err != nil {
			return err
		}
	}
	return nil
}

// lists reads users' served lists from the pinned generation. A rebuild
// that swaps during a long run leaves the pinned generation Grace to live
// (10 minutes); once it is gone every list would read empty and every user
// would silently get the popular list. So each read is followed by a check
// that the generation still exists (then the lists read were its own), and
// a run whose generation is gone moves to the current one and its popular
// list, and logs the switch.
func (p *personalizer) lists(ctx context.Context, users []string) ([][]recsys.Scored, error) {
	for range 3 { // each pass moves to a newer generation; a rebuild a pass is plenty
		if p.gen == 0 {
			return make([][]recsys.Scored, len(users)), nil
		}
		lists, err := p.serving.GetAt(ctx, p.gen, users...)
		if err != nil {
			return nil, err
		}
		ok, err := p.serving.Exists(ctx, p.gen)
		if err != nil || ok {
			return lists, err
		}
		old := p.gen
		if err := p.pin(ctx); err != nil {
			return nil, err
		}
		p.logger.Warn("personalize: the served generation was replaced and has expired; reading the current one",
			"run", p.a.Run, "from", old, "to", p.gen)
		if p.gen == old {
			return lists, nil // the current generation itself is gone: nothing newer to read
		}
	}
	return nil, fmt.Errorf("served lists: the generation kept being replaced under the run (now %d)", p.gen)
}

func (w PersonalizeWorker) run(ctx context.Context, a PersonalizeArgs) (PersonalizeResult, error) {
	res := PersonalizeResult{Run: a.Run, Out: a.Out, Summary: filepath.Join(a.Out, "summary.json")}
	if err := a.Validate(); err != nil {
		return res, pipeline.Permanent(err)
	}
	if a.Run == "" {
		return res, pipeline.Permanent(errors.New("run: required outside a queue (worker exec sets one)"))
	}
	root, err := w.Deps.DataRoot()
	if err != nil {
		return res, err
	}
	if name, err := root.Name("out", a.Out); err == nil {
		res.Out = root.Path(name)
		res.Summary = filepath.Join(res.Out, "summary.json")
	}
	p := &personalizer{a: a, root: root, logger: w.Deps.logger()}
	if p.a.PerUser == 0 {
		p.a.PerUser = DefaultPersonalizePerUser
	}
	parse := w.Deps.PromptTemplates
	if parse == nil {
		return res, errors.New("this worker has no prompt template parser (Deps.PromptTemplates)")
	}
	if p.cat, err = readCatalogFile(root, a.Catalog, parse); err != nil {
		return res, pipeline.Permanent(err)
	}
	src := a.TopicTemplate
	if src == "" {
		src = DefaultTopicTemplate
	}
	if p.topic, err = parse("topic_template", src); err != nil {
		return res, pipeline.Permanent(fmt.Errorf("topic_template: %w", err))
	}
	rdb, err := redisOf(w.Deps)
	if err != nil {
		return res, err
	}
	p.serving = recsys.NewRedisStore(rdb, recsys.RedisStoreOptions{})
	p.loop = loop.NewStore(rdb, loop.StoreOptions{})
	if err := p.pin(ctx); err != nil {
		return res, err
	}
	users, bad, err := p.users(ctx)
	if err != nil {
		return res, err
	}
	res.BadLines = len(bad)
	res.Errors = bad[:min(len(bad), maxResultErrors)]
	lm, err := w.Deps.Models.Get(a.Model)
	if err != nil {
		return res, pipeline.Permanent(err)
	}
	tok, err := w.Deps.Models.Tokenizer()
	if err != nil {
		return res, err
	}
	p.model = modelVersion(ctx, w.Deps.Registry, a.Model)
	sum := PersonalizeSummary{Run: a.Run, Model: p.model, Users: []PersonalizeUser{}, Errors: bad}
	if sum.Errors == nil {
		sum.Errors = []PersonalizeLineError{}
	}
	for start := 0; start < len(users); start += personalizeGroupUsers {
		group := users[start:min(start+personalizeGroupUsers, len(users))]
		done, err := p.generate(ctx, lm, tok, group)
		if err != nil {
			return res, err
		}
		for _, u := range done {
			res.Users++
			res.Generations += len(u.Generations)
			res.Failed += u.Failed
			switch u.Source {
			case SourceRecommended:
				res.Recommended++
			case SourcePopular:
				res.Popular++
			default:
				res.Catalog++
			}
		}
		sum.Users = append(sum.Users, done...)
	}
	b, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return res, err
	}
	if err := root.WriteFile("out", path.Join(a.Out, "summary.json"), func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	}); err != nil {
		return res, err
	}
	return res, nil
}

func readCatalogFile(root *dataroot.Root, p string, parse PromptTemplateParser) (*catalog, error) {
	f, err := root.Open("catalog", p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readCatalog(f, parse)
}

// users reads the users file, or lists every user with a served list.
func (p *personalizer) users(ctx context.Context) ([]userLine, []PersonalizeLineError, error) {
	if p.a.Users != "" {
		f, err := p.root.Open("users", p.a.Users)
		if err != nil {
			return nil, nil, pipeline.Permanent(err)
		}
		defer f.Close()
		users, bad, err := readUserLines(f)
		if err != nil {
			return nil, nil, pipeline.Permanent(err)
		}
		return users, bad, nil
	}
	if p.gen == 0 {
		return nil, nil, nil
	}
	var users []userLine
	seen := map[string]bool{}
	err := p.serving.Users(ctx, p.gen, func(u string) error {
		if seen[u] {
			return nil
		}
		if len(users) == MaxPersonalizeUsers {
			return pipeline.Permanent(fmt.Errorf("users: more than %d users have served lists; name them in a users file", MaxPersonalizeUsers))
		}
		seen[u] = true
		users = append(users, userLine{User: u})
		return nil
	})
	slices.SortFunc(users, func(a, b userLine) int { return strings.Compare(a.User, b.User) })
	return users, nil, err
}

// modelVersion names a registered model with its promoted version
// ("name@N"), so feedback and metrics tell versions apart; other names are
// kept as given.
func modelVersion(ctx context.Context, r *registry.Registry, name string) string {
	if r == nil {
		return name
	}
	n, v, err := registry.ParseRef(name)
	if err != nil || v != 0 {
		return name
	}
	ver, err := r.Get(ctx, n, 0)
	if err != nil {
		return name
	}
	return ver.Ref()
}

// choice is one item picked for a user, with its prompt or the reason it
// has none.
type choice struct {
	item   *catalogItem
	topic  string // the topic item a template was filled with
	prompt string
	err    error
}

// pick returns the first n catalog items of list (ids in order), and the
// first topic item of list for filling templates.
func (p *personalizer) pick(list []recsys.Scored, n int) (items []*catalogItem, topic *catalogItem) {
	for _, s := range list {
		it, ok := p.cat.byID[s.Item]
		if !ok {
			continue
		}
		if topic == nil && it.Kind == ItemKindTopic {
			topic = it
		}
		if len(items) < n {
			items = append(items, it)
		}
	}
	return items, topic
}

// choose picks a user's items: the served list, else the popular list,
// else the catalog's first items.
func (p *personalizer) choose(user string, list []recsys.Scored) (source string, out []choice) {
	n := p.a.PerUser
	items, topic := p.pick(list, n)
	source = SourceRecommended
	if len(items) == 0 {
		items, topic = p.pick(p.popular, n)
		source = SourcePopular
	}
	if len(items) == 0 {
		items = p.cat.order[:min(n, len(p.cat.order))]
		for _, it := range p.cat.order {
			if it.Kind == ItemKindTopic {
				topic = it
				break
			}
		}
		source = SourceCatalog
	}
	for _, it := range items {
		c := choice{item: it}
		data := map[string]any{"user": user}
		switch it.Kind {
		case ItemKindTopic:
			data["topic"] = it.Topic
			c.prompt, c.err = p.topic.Render(data)
		default:
			for k, v := range it.Vars {
				data[k] = v
			}
			if topic != nil {
				data["topic"] = topic.Topic
				c.topic = topic.ID
			}
			c.prompt, c.err = it.tmpl.Render(data)
		}
		if c.err == nil && strings.TrimSpace(c.prompt) == "" {
			c.err = errors.New("the filled template is empty")
		}
		out = append(out, c)
	}
	return source, out
}

// generationID names the generation of item for user in run.
func generationID(run, user, item string) string {
	h := sha256.Sum256([]byte(run + "\x00" + user + "\x00" + item))
	return "pz-" + hex.EncodeToString(h[:12])
}

// generationSeed derives a generation's sampling seed.
func generationSeed(seed int64, id string) int64 {
	h := sha256.Sum256([]byte(id))
	return (seed ^ int64(binary.BigEndian.Uint64(h[:8]))) & math.MaxInt64
}

// userFile is a user's output file name: the id itself when it is a safe
// file name, else a hash of it.
func userFile(user string) string {
	esc := url.PathEscape(user)
	if len(esc) > 200 || strings.HasPrefix(esc, ".") {
		h := sha256.Sum256([]byte(user))
		esc = "u-" + hex.EncodeToString(h[:16])
	}
	return filepath.Join("users", esc+".jsonl")
}

// generate runs one group of users: picks their items, generates all
// prompts in shared decoding batches, writes each user's file and records
// each generation.
func (p *personalizer) generate(ctx context.Context, lm *generation.LoadedModel, tok *model.Tokenizer, group []userLine) ([]PersonalizeUser, error) {
	names := make([]string, len(group))
	for i, u := range group {
		names[i] = u.User
	}
	lists, err := p.lists(ctx, names)
	if err != nil {
		return nil, err
	}
	type slot struct {
		user   int
		choice choice
		id     string
	}
	var slots []slot
	var lines []generation.InputLine
	out := make([]PersonalizeUser, len(group))
	for i, u := range group {
		source, choices := p.choose(u.User, lists[i])
		out[i] = PersonalizeUser{User: u.User, Line: u.Line, File: userFile(u.User), Source: source, Items: []string{}, Generations: []string{}}
		for _, c := range choices {
			id := generationID(p.a.Run, u.User, c.item.ID)
			out[i].Items = append(out[i].Items, c.item.ID)
			il := generation.InputLine{LineNo: len(lines) + 1, Request: generation.RequestLine{CustomID: c.item.ID, Method: "POST", URL: generation.CompletionsURL, Body: p.a.body(c.prompt, generationSeed(p.a.Seed, id))}}
			if c.err != nil {
				il.Err = &generation.LineError{Code: "template_error", Message: c.err.Error(), Line: u.Line}
			}
			slots = append(slots, slot{user: i, choice: c, id: id})
			lines = append(lines, il)
		}
	}
	resp, err := generation.GenerateLines(ctx, lm, tok, lines, p.a.BatchSize, p.a.Run, nil)
	if err != nil {
		return nil, err
	}
	perUser := make([][]generation.ResponseLine, len(group))
	now := time.Now().UTC()
	for k, s := range slots {
		r := resp[k]
		r.ID = s.id
		if r.Error != nil {
			r.Error.Line = group[s.user].Line
			out[s.user].Failed++
		} else if r.Response != nil {
			r.Response.Body.ID = s.id
			g := loop.Generation{ID: s.id, User: group[s.user].User, Model: p.model, Prompt: s.choice.prompt, Source: "personalize", CreatedAt: now}
			if s.choice.item.Kind == ItemKindTemplate {
				g.Template, g.Topic = s.choice.item.ID, s.choice.topic
			} else {
				g.Topic = s.choice.item.ID
			}
			if len(r.Response.Body.Choices) > 0 {
				g.Text, g.FinishReason = r.Response.Body.Choices[0].Text, r.Response.Body.Choices[0].FinishReason
			}
			g.Tokens = r.Response.Body.Usage.CompletionTokens
			if err := p.loop.Save(ctx, g); err != nil {
				return nil, fmt.Errorf("recording generation %s: %w", s.id, err)
			}
			out[s.user].Generations = append(out[s.user].Generations, s.id)
		}
		perUser[s.user] = append(perUser[s.user], r)
	}
	for i := range group {
		if err := generation.WriteJSONLAtomic(p.root, "out", path.Join(p.a.Out, out[i].File), perUser[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func execPersonalize(ctx context.Context, d *Deps, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("worker exec personalize", flag.ContinueOnError)
	a := BindPersonalizeFlags(fs)
	if _, err := pipeline.ParseArgs(fs, args); err != nil {
		return err
	}
	if a.Run == "" {
		a.Run = rand.Text()
	}
	if err := a.Validate(); err != nil {
		return err
	}
	res, err := PersonalizeWorker{Deps: d}.run(ctx, *a)
	if err != nil {
		return err
	}
	return writeJSON(stdout, res)
}

// BindPersonalizeFlags binds the flags of `worker exec personalize` and
// `producer personalize` to a new PersonalizeArgs.
func BindPersonalizeFlags(fs *flag.FlagSet) *PersonalizeArgs {
	a := &PersonalizeArgs{}
	fs.StringVar(&a.Users, "users", "", "file of user ids, one a line (default: every user with a served list)")
	fs.StringVar(&a.Catalog, "catalog", "", "JSONL catalog of templates and topics: {\"id\",\"kind\":\"template\"|\"topic\",\"template\",\"vars\",\"topic\"}")
	fs.IntVar(&a.PerUser, "per-user", DefaultPersonalizePerUser, "recommended templates and topics generated per user")
	fs.StringVar(&a.Model, "model", "builtin:tiny", "model: registry name[@N], directory, or builtin:tiny|builtin:small")
	fs.StringVar(&a.Out, "out", "", "output directory (users/<user>.jsonl and summary.json)")
	fs.IntVar(&a.MaxTokens, "max-tokens", DefaultPersonalizeMaxTokens, "tokens per generation")
	fs.Int64Var(&a.Seed, "seed", 0, "seed; each generation's seed derives from it")
	fs.IntVar(&a.BatchSize, "batch", 8, "generations decoded together")
	fs.StringVar(&a.TopicTemplate, "topic-template", "", "template for topic items (default: "+strings.TrimSpace(DefaultTopicTemplate)+")")
	fs.StringVar(&a.Run, "run", "", "run id the generation ids derive from (default: random)")
	return a
}
