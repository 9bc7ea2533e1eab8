package command

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
)

// dateTimeRule states the date-time format.
const dateTimeRule = "must be an RFC 3339 date-time such as 2026-01-14T09:30:12Z"

// patternHints explain the command schema's patterns.
var patternHints = map[string]string{
	"^[A-Z]{3}$": "ISO 4217 alpha-3",
}

// fieldOrder is the order of the command's fields in the schema; problems
// are reported in this order, unknown fields last.
var fieldOrder = []string{
	"", "command_id", "type", "idempotency_key", "merchant_id", "transaction_id",
	"amount", "currency", "gateway", "notes", "metadata", "original_transaction_time",
}

// translate turns a schema validation error into problems, one per leaf
// cause (and per missing or unknown property), sorted by field.
func translate(err error, doc any, typ string) []Problem {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return []Problem{{Rule: "schema", Message: "message: " + clip(err.Error())}}
	}
	var problems []Problem
	for _, leaf := range leaves(ve, nil) {
		problems = append(problems, describe(leaf, doc, typ)...)
	}
	slices.SortStableFunc(problems, func(a, b Problem) int {
		if c := rank(a.Field) - rank(b.Field); c != 0 {
			return c
		}
		return strings.Compare(a.Field, b.Field)
	})
	return slices.CompactFunc(problems, func(a, b Problem) bool { return a == b })
}

func leaves(ve *jsonschema.ValidationError, out []*jsonschema.ValidationError) []*jsonschema.ValidationError {
	if len(ve.Causes) == 0 {
		return append(out, ve)
	}
	for _, c := range ve.Causes {
		out = leaves(c, out)
	}
	return out
}

func rank(field string) int {
	top, _, _ := strings.Cut(field, ".")
	if i := slices.Index(fieldOrder, top); i >= 0 {
		return i
	}
	return len(fieldOrder)
}

// describe explains one leaf error in words.
func describe(ve *jsonschema.ValidationError, doc any, typ string) []Problem {
	loc := ve.InstanceLocation
	f := fieldPath(loc)
	one := func(rule, format string, args ...any) []Problem {
		return []Problem{{Field: f, Rule: rule, Message: orMessage(f) + ": " + fmt.Sprintf(format, args...)}}
	}
	got := func() string { return show(valueAt(doc, loc)) }
	switch k := ve.ErrorKind.(type) {
	case *kind.Required:
		var ps []Problem
		for _, name := range k.Missing {
			sub := fieldPath(append(loc[:len(loc):len(loc)], name))
			msg := sub + ": is required"
			if len(loc) == 0 && name == "amount" {
				msg += " for " + typ
			}
			ps = append(ps, Problem{Field: sub, Rule: "required", Message: msg})
		}
		return ps
	case *kind.DependentRequired:
		var ps []Problem
		for _, name := range k.Missing {
			sub := fieldPath(append(loc[:len(loc):len(loc)], name))
			ps = append(ps, Problem{Field: sub, Rule: "dependentRequired",
				Message: fmt.Sprintf("%s: is required when %s is present", sub, segment(k.Prop))})
		}
		return ps
	case *kind.AdditionalProperties:
		var ps []Problem
		for _, name := range k.Properties {
			sub := fieldPath(append(loc[:len(loc):len(loc)], name))
			ps = append(ps, Problem{Field: sub, Rule: "additionalProperties",
				Message: sub + ": unknown field (not allowed by the command schema)"})
		}
		return ps
	case *kind.Type:
		return one("type", "must be %s, got %s", article(strings.Join(k.Want, " or ")), got())
	case *kind.MinLength:
		if k.Want == 1 && k.Got == 0 {
			return one("minLength", "must not be empty")
		}
		return one("minLength", "must be at least %d characters, got %d", k.Want, k.Got)
	case *kind.MaxLength:
		return one("maxLength", "must be at most %d characters, got %d", k.Want, k.Got)
	case *kind.Minimum:
		return one("minimum", "must be at least %s, got %s", k.Want.RatString(), got())
	case *kind.Maximum:
		return one("maximum", "must be at most %s, got %s", k.Want.RatString(), got())
	case *kind.ExclusiveMinimum:
		return one("exclusiveMinimum", "must be greater than %s, got %s", k.Want.RatString(), got())
	case *kind.ExclusiveMaximum:
		return one("exclusiveMaximum", "must be less than %s, got %s", k.Want.RatString(), got())
	case *kind.Pattern:
		hint := ""
		if h, ok := patternHints[k.Want]; ok {
			hint = " (" + h + ")"
		}
		return one("pattern", "must match %s%s, got %s", k.Want, hint, got())
	case *kind.Enum:
		return one("enum", "must be %s, got %s", oneOf(k.Want), got())
	case *kind.Const:
		return one("const", "must be %s, got %s", oneOf([]any{k.Want}), got())
	case *kind.Format:
		if k.Want == "date-time" {
			return one("format", "%s, got %s", dateTimeRule, got())
		}
		return one("format", "must be a valid %s, got %s", k.Want, got())
	case *kind.FalseSchema:
		return one("false", "is not allowed")
	default:
		rule := strings.Join(ve.ErrorKind.KeywordPath(), "/")
		if rule == "" {
			rule = "schema"
		}
		return one(rule, "violates the command schema's %s rule", rule)
	}
}

func article(typ string) string {
	switch typ {
	case "null":
		return typ
	case "integer", "object", "array":
		return "an " + typ
	}
	return "a " + typ
}

// oneOf lists schema values, which are not user input and are shown whole.
func oneOf(want []any) string {
	var s []string
	for _, w := range want {
		b, err := json.Marshal(w)
		if err != nil {
			b = []byte(fmt.Sprint(w))
		}
		s = append(s, string(b))
	}
	if len(s) == 1 {
		return s[0]
	}
	return "one of " + strings.Join(s, ", ")
}

func valueAt(doc any, loc []string) any {
	v := doc
	for _, seg := range loc {
		switch t := v.(type) {
		case map[string]any:
			v = t[seg]
		case []any:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(t) {
				return nil
			}
			v = t[i]
		default:
			return nil
		}
	}
	return v
}

// orMessage names the message as a whole when the field is the root.
func orMessage(field string) string {
	if field == "" {
		return "message"
	}
	return field
}

// fieldPath joins a JSON location with dots: metadata.foo.
func fieldPath(loc []string) string {
	segs := make([]string, len(loc))
	for i, s := range loc {
		segs[i] = segment(s)
	}
	return strings.Join(segs, ".")
}

// segment clips a path segment, which may be user input, and quotes it when
// it would otherwise be ambiguous or unprintable.
func segment(s string) string {
	c := clip(s)
	if c == "" || strings.ContainsAny(c, ". :;\"") || strconv.Quote(c) != `"`+c+`"` {
		return strconv.Quote(c)
	}
	return c
}

// show renders a user value for a message: strings quoted, objects and
// arrays by their kind, everything clipped and masked.
func show(v any) string {
	switch t := v.(type) {
	case nil:
		return "null"
	case string:
		return strconv.Quote(clip(t))
	case json.Number:
		return clip(string(t))
	case bool:
		return strconv.FormatBool(t)
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case *big.Rat:
		return clip(t.RatString())
	default:
		return clip(fmt.Sprint(t))
	}
}

// maxShown is how many characters of a user value a message quotes.
const maxShown = 40

// clip masks card-like numbers in s and cuts it to maxShown characters.
func clip(s string) string {
	s = maskCards(s)
	if utf8.RuneCountInString(s) <= maxShown {
		return s
	}
	n := 0
	for i := range s {
		if n == maxShown {
			return s[:i] + "…"
		}
		n++
	}
	return s
}

// digitRun matches digits, optionally grouped by single spaces or dashes as
// card numbers are written.
var digitRun = regexp.MustCompile(`[0-9](?:[ -]?[0-9])*`)

// minCardDigits is the length of the shortest card number (PAN).
const minCardDigits = 13

// maskCards replaces the middle digits of every run of at least
// minCardDigits digits with '*', leaving the first six and last four as a
// masked card number shows them. Longer runs are masked too: they may hold a
// card number.
func maskCards(s string) string {
	if len(s) < minCardDigits {
		return s
	}
	return digitRun.ReplaceAllStringFunc(s, func(run string) string {
		digits := 0
		for i := 0; i < len(run); i++ {
			if run[i] >= '0' && run[i] <= '9' {
				digits++
			}
		}
		if digits < minCardDigits {
			return run
		}
		b := []byte(run)
		seen := 0
		for i, c := range b {
			if c < '0' || c > '9' {
				continue
			}
			if seen >= 6 && seen < digits-4 {
				b[i] = '*'
			}
			seen++
		}
		return string(b)
	})
}
