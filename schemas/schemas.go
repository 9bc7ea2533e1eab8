// Package schemas holds the JSON Schemas (draft 2020-12) of the commands and
// result events of SPEC §3, with one example of each, and validates decoded
// JSON against them. The schemas are embedded and compiled once at start; a
// schema that does not compile is a programming error and panics.
package schemas

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// FS holds the schema files (command.<type>.json, event.<kind>.json and
// event.defs.json) and examples/, one valid document per schema.
//
//go:embed *.json examples/*.json
var FS embed.FS

// BaseURL is the base of every schema's $id; the schemas refer to each other
// relative to it and nothing is fetched from the network.
const BaseURL = "https://schemas.payworker.example/"

// ErrNoSchema is returned for a command type or event kind without a schema.
var ErrNoSchema = errors.New("no schema")

// typePrefix is the prefix of every event's CloudEvents type.
const typePrefix = "payments."

type compiled struct {
	commands map[string]*jsonschema.Schema
	events   map[string]*jsonschema.Schema
}

var schemas = mustCompile()

func mustCompile() compiled {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	names, err := fs.Glob(FS, "*.json")
	if err != nil {
		panic(fmt.Sprintf("schemas: %v", err))
	}
	for _, name := range names {
		raw, err := FS.ReadFile(name)
		if err != nil {
			panic(fmt.Sprintf("schemas: %v", err))
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			panic(fmt.Sprintf("schemas: %s: %v", name, err))
		}
		if err := c.AddResource(BaseURL+name, doc); err != nil {
			panic(fmt.Sprintf("schemas: %s: %v", name, err))
		}
	}
	out := compiled{
		commands: make(map[string]*jsonschema.Schema),
		events:   make(map[string]*jsonschema.Schema),
	}
	for _, name := range names {
		base := strings.TrimSuffix(name, ".json")
		var dst map[string]*jsonschema.Schema
		var key string
		switch {
		case strings.HasPrefix(base, "command."):
			dst, key = out.commands, strings.TrimPrefix(base, "command.")
		case base == "event.defs":
			continue
		case strings.HasPrefix(base, "event."):
			dst, key = out.events, strings.TrimPrefix(base, "event.")
		default:
			panic(fmt.Sprintf("schemas: %s: unexpected schema file", name))
		}
		sch, err := c.Compile(BaseURL + name)
		if err != nil {
			panic(fmt.Sprintf("schemas: compile %s: %v", name, err))
		}
		dst[key] = sch
	}
	return out
}

// CommandTypes returns the command types that have a schema, sorted.
func CommandTypes() []string { return slices.Sorted(maps.Keys(schemas.commands)) }

// EventKinds returns the event kinds that have a schema, sorted.
func EventKinds() []string { return slices.Sorted(maps.Keys(schemas.events)) }

// ValidateCommand validates v, a decoded JSON document (from
// jsonschema.UnmarshalJSON, or encoding/json into an any), against the schema
// of command type typ ("capture" or "void"). A document that does not conform
// yields a *jsonschema.ValidationError; an unknown type yields ErrNoSchema.
func ValidateCommand(typ string, v any) error {
	sch, ok := schemas.commands[typ]
	if !ok {
		return fmt.Errorf("command type %q: %w", typ, ErrNoSchema)
	}
	return sch.Validate(v)
}

// ValidateEvent validates v, a decoded JSON document, against the schema of
// event kind kind (e.g. "capture.succeeded"). A document that does not conform
// yields a *jsonschema.ValidationError; an unknown kind yields ErrNoSchema.
func ValidateEvent(kind string, v any) error {
	sch, ok := schemas.events[kind]
	if !ok {
		return fmt.Errorf("event kind %q: %w", kind, ErrNoSchema)
	}
	return sch.Validate(v)
}

// ValidateEventJSON parses an event and validates it against the schema its
// type ("payments.<kind>") names.
func ValidateEventJSON(data []byte) error {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("event: %w", err)
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return fmt.Errorf("event: not a JSON object")
	}
	typ, ok := obj["type"].(string)
	if !ok {
		return fmt.Errorf("event: type: missing or not a string")
	}
	kind, ok := strings.CutPrefix(typ, typePrefix)
	if !ok {
		return fmt.Errorf("event: type %q: %w", typ, ErrNoSchema)
	}
	return ValidateEvent(kind, doc)
}
