package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/tandem-ai/tandem/jobs"
	"github.com/tandem-ai/tandem/pipeline"
	"github.com/tandem-ai/tandem/registry"
)

// modelsCommands are the subcommands of `producer models`.
var modelsCommands = map[string]command{
	"list":    {"list the registered models: list [--json]", modelsCommand("list").run},
	"show":    {"show a model's versions, or one version: show NAME[@N] [--json]", modelsCommand("show").run},
	"promote": {"make NAME resolve to a version: promote NAME@N", modelsCommand("promote").run},
}

func cmdModels(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return dispatch(ctx, "models", modelsCommands, args, stdout, stderr)
}

// modelsCommand is one of modelsCommands, which share their flags.
type modelsCommand string

func (sub modelsCommand) run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfg := clientFlags("models "+string(sub), stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	var names []string
	if sub != "list" {
		names = []string{"NAME[@N]"}
	}
	pos, err := pipeline.ParseArgs(fs, args, names...)
	if err != nil {
		return err
	}
	ref := strings.Join(pos, "") // NAME[@N] of show and promote, "" for list
	reg, closeReg, err := openRegistry(*cfg)
	if err != nil {
		return err
	}
	defer closeReg()
	switch sub {
	case "list":
		names, err := reg.Names(ctx)
		if err != nil {
			return err
		}
		type row struct {
			Name     string `json:"name"`
			Versions int    `json:"versions"`
			Promoted string `json:"promoted,omitempty"`
		}
		rows := []row{}
		for _, n := range names {
			vs, err := reg.Versions(ctx, n)
			if err != nil {
				return err
			}
			r := row{Name: n, Versions: len(vs)}
			for _, v := range vs {
				if v.Promoted {
					r.Promoted = v.Ref()
				}
			}
			rows = append(rows, r)
		}
		if *asJSON {
			return printJSON(stdout, rows)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tVERSIONS\tPROMOTED")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%d\t%s\n", r.Name, r.Versions, r.Promoted)
		}
		return tw.Flush()
	case "show":
		name, version, err := registry.ParseRef(ref)
		if err != nil {
			return err
		}
		if version > 0 {
			v, err := reg.Get(ctx, name, version)
			if err != nil {
				return err
			}
			return printJSON(stdout, v)
		}
		vs, err := reg.Versions(ctx, name)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, vs)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tPROMOTED\tPARENT\tTEST_LOSS\tCREATED\tARTIFACT")
		for _, v := range vs {
			fmt.Fprintf(tw, "%s\t%v\t%s\t%.4f\t%s\t%s\n", v.Ref(), v.Promoted, v.Parent, v.Metrics["test_loss"], v.CreatedAt.Format("2006-01-02 15:04:05"), v.Artifact)
		}
		return tw.Flush()
	case "promote":
		name, version, err := registry.ParseRef(ref)
		if err != nil {
			return err
		}
		if version == 0 {
			return errors.New("promote: name the version, NAME@N")
		}
		v, err := reg.Promote(ctx, name, version)
		if err != nil {
			return err
		}
		return printJSON(stdout, v)
	}
	return fmt.Errorf("models: no subcommand %q", sub)
}

// openRegistry connects the model registry named by the pipeline config:
// metadata in its Redis, artifacts under its data directory.
func openRegistry(cfg pipeline.Config) (*registry.Registry, func(), error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	rdb, err := cfg.RedisClient()
	if err != nil {
		return nil, nil, err
	}
	return registry.New(rdb, jobs.RegistryDir(cfg.DataDir)), func() { rdb.Close() }, nil
}
