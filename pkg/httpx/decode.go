package httpx

// Strict decoding of request bodies, and problems that name the offending
// field in the client's words: its path in the body (items[0].quantity) and
// what the value should be, in JSON's terms rather than Go's.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"
)

// DecodeJSON reads exactly one JSON object into dst, a pointer to a struct.
// It refuses a content type other than application/json (415), a body over
// MaxBodyBytes (413), and malformed JSON, a body that is not a JSON object,
// a key given twice in one object, unknown fields (a field name in another
// case than the API's included), wrong types and trailing data (400), each
// as a *Problem whose one FieldError names the field (in FieldPath's style)
// or BodyField, with a reason in the client's words, not Go's.
func DecodeJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	_, err := DecodeJSONBody(w, r, dst)
	return err
}

// DecodeJSONBody is DecodeJSON that also returns the object as the client
// sent it. Decoded this strictly, those bytes mean exactly what dst holds,
// so a proxy can pass them on unchanged: never longer than MaxBodyBytes,
// where a re-encoding could be longer than what was received.
func DecodeJSONBody(w http.ResponseWriter, r *http.Request, dst any) ([]byte, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return nil, NewProblem(http.StatusUnsupportedMediaType, "Unsupported media type",
			"the body must be application/json", FieldError{Field: "Content-Type", Reason: "must be application/json"})
	}
	// The body is read and checked as JSON first, then decoded from those
	// bytes: a type error's offset then points into them, which is how its
	// field gets its array indices.
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return nil, decodeProblem(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, decodeProblem(err)
		}
		return nil, NewProblem(http.StatusBadRequest, "Malformed JSON", "the body must hold a single JSON object",
			FieldError{Field: BodyField, Reason: "must hold a single JSON object, with nothing after it"})
	}
	if raw[0] != '{' { // RawMessage holds the value without the space around it
		return nil, NewProblem(http.StatusBadRequest, "Malformed JSON", "the body must be a JSON object",
			FieldError{Field: BodyField, Reason: "must be a JSON object"})
	}
	if p := checkKeys(raw, reflect.TypeOf(dst)); p != nil {
		return nil, p
	}
	strict := json.NewDecoder(bytes.NewReader(raw))
	strict.DisallowUnknownFields()
	if err := strict.Decode(dst); err != nil {
		return nil, fieldProblem(err, raw, dst)
	}
	return raw, nil
}

// checkKeys refuses what encoding/json would let through: a key given twice
// in one object (the decoder keeps the last value, so which one the client
// meant is a guess), and a key that names a field only in another case (the
// decoder matches names case-insensitively; the API's names are exact).
func checkKeys(raw []byte, dst reflect.Type) *Problem {
	var p *Problem
	walkBody(raw, dst, func(stack []frame) bool {
		f := &stack[len(stack)-1]
		if f.seen == nil {
			f.seen = map[string]bool{}
		}
		if f.seen[f.key] {
			p = NewProblem(http.StatusBadRequest, "Malformed JSON", "the body gives a field more than once",
				FieldError{Field: FieldPath(pathOf(stack)...), Reason: "appears more than once in its object; give each field once"})
			return true
		}
		f.seen[f.key] = true
		if f.typ != nil && f.typ.Kind() == reflect.Struct {
			if name, _, known := structField(f.typ, f.key); known && name != f.key {
				p = NewProblem(http.StatusBadRequest, "Malformed JSON", "the body has a field this API does not know",
					FieldError{Field: FieldPath(pathOf(stack)...), Reason: "is not a field of this API; names are case-sensitive: did you mean " + name + "?"})
				return true
			}
		}
		return false
	}, nil)
	return p
}

// decodeProblem is the problem for a body that is not one JSON value.
func decodeProblem(err error) *Problem {
	var (
		syntaxErr *json.SyntaxError
		tooBig    *http.MaxBytesError
	)
	switch {
	case errors.As(err, &tooBig):
		return NewProblem(http.StatusRequestEntityTooLarge, "Body too large",
			fmt.Sprintf("the body must be at most %d bytes", tooBig.Limit),
			FieldError{Field: BodyField, Reason: fmt.Sprintf("must be at most %d bytes (%d KiB)", tooBig.Limit, tooBig.Limit>>10)})
	case errors.As(err, &syntaxErr) && strings.HasSuffix(syntaxErr.Error(), "exceeded max depth"):
		// encoding/json stops at 10,000 levels; an order needs three.
		return NewProblem(http.StatusBadRequest, "Malformed JSON", "the body nests too deeply",
			FieldError{Field: BodyField, Reason: fmt.Sprintf("is not valid JSON: nested more than 10000 levels deep at byte %d", syntaxErr.Offset)})
	case errors.As(err, &syntaxErr):
		return NewProblem(http.StatusBadRequest, "Malformed JSON", fmt.Sprintf("syntax error at byte %d", syntaxErr.Offset),
			FieldError{Field: BodyField, Reason: fmt.Sprintf("is not valid JSON: syntax error at byte %d", syntaxErr.Offset)})
	case errors.Is(err, io.EOF):
		return NewProblem(http.StatusBadRequest, "Malformed JSON", "the body is empty",
			FieldError{Field: BodyField, Reason: "is required: a JSON object"})
	case errors.Is(err, io.ErrUnexpectedEOF):
		return NewProblem(http.StatusBadRequest, "Malformed JSON", "the body ends too early",
			FieldError{Field: BodyField, Reason: "is not valid JSON: it ends too early"})
	default:
		return NewProblem(http.StatusBadRequest, "Malformed JSON", "the body is not valid JSON",
			FieldError{Field: BodyField, Reason: "is not valid JSON"})
	}
}

// fieldProblem is the problem for a JSON object that does not fit dst: a
// field of the wrong type, or one dst does not have.
func fieldProblem(err error, raw []byte, dst any) *Problem {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		field := typeErrorPath(raw, typeErr)
		if field == "" {
			return NewProblem(http.StatusBadRequest, "Malformed JSON", "the body must be a JSON object",
				FieldError{Field: BodyField, Reason: "must be a JSON object"})
		}
		return NewProblem(http.StatusBadRequest, "Malformed JSON", "a field has the wrong type",
			FieldError{Field: field, Reason: typeReason(typeErr.Type, typeErr.Value)})
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name, _ = strconv.Unquote(name)
		field := unknownFieldPath(raw, reflect.TypeOf(dst), name)
		return NewProblem(http.StatusBadRequest, "Malformed JSON", "the body has a field this API does not know",
			FieldError{Field: field, Reason: "is not a field of this API"})
	}
	return decodeProblem(err)
}

// typeReason says, in the client's words, what a value of Go type t looks
// like in JSON. value is the JSON value the decoder met ("string", "number
// 1.5", ...).
func typeReason(t reflect.Type, value string) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	// A number of the right kind that still did not fit: too large or too
	// small for the field, or negative where only 0 or more is possible.
	literal, isNumber := strings.CutPrefix(value, "number ")
	integer := isNumber && !strings.ContainsAny(literal, ".eE")
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if integer {
			return "is out of range"
		}
		return "must be a whole number"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if integer && !strings.HasPrefix(literal, "-") {
			return "is out of range"
		}
		return "must be a whole number, 0 or more"
	case reflect.Float32, reflect.Float64:
		if isNumber {
			return "is out of range"
		}
		return "must be a number"
	case reflect.String:
		return "must be a string"
	case reflect.Bool:
		return "must be true or false"
	case reflect.Struct, reflect.Map:
		return "must be a JSON object"
	case reflect.Slice, reflect.Array:
		if t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8 {
			return "must be a base64 string"
		}
		return "must be an array" + ofElements(t.Elem())
	default:
		return "has the wrong type"
	}
}

// ofElements names the elements of an array, for typeReason.
func ofElements(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return " of JSON objects"
	case reflect.String:
		return " of strings"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return " of whole numbers"
	case reflect.Float32, reflect.Float64:
		return " of numbers"
	case reflect.Bool:
		return " of true or false values"
	case reflect.Slice, reflect.Array:
		return " of arrays"
	default:
		return ""
	}
}

// typeErrorPath is the FieldPath of the value a type error is about, ""
// for the body itself. encoding/json names the field without array indices
// ("items.quantity"); the value's offset in raw finds them. Should that fail,
// the decoder's own names are kept.
func typeErrorPath(raw []byte, typeErr *json.UnmarshalTypeError) string {
	segments, ok := findInBody(raw, nil, typeErr.Offset, "")
	if !ok {
		return typeErr.Field
	}
	// The names as the API spells them (the decoder matches keys
	// case-insensitively), when they line up with the keys in the body.
	names := strings.Split(typeErr.Field, ".")
	var keys int
	for _, s := range segments {
		if _, isKey := s.(string); isKey {
			keys++
		}
	}
	if typeErr.Field != "" && keys == len(names) {
		i := 0
		for j, s := range segments {
			if key, isKey := s.(string); isKey {
				if strings.EqualFold(key, names[i]) {
					segments[j] = names[i]
				}
				i++
			}
		}
	}
	return FieldPath(segments...)
}

// frame is one open object or array while walking the tokens of a body.
type frame struct {
	array   bool
	index   int    // of the current element, in an array
	key     string // of the current member, in an object, as the client wrote it
	wantKey bool   // in an object: the next string is a key
	typ     reflect.Type
	seen    map[string]bool // the keys met so far in an object, for checkKeys
}

func (f *frame) segment() any {
	if f.array {
		return f.index
	}
	return f.key
}

func pathOf(stack []frame) []any {
	segments := make([]any, len(stack))
	for i := range stack {
		segments[i] = stack[i].segment()
	}
	return segments
}

// unknownFieldPath is the FieldPath of the first member of raw that the
// struct it belongs in (by dst's type) does not have, and is named name. The
// decoder names only the member's key; should the walk not find it, the key
// alone is returned.
func unknownFieldPath(raw []byte, dst reflect.Type, name string) string {
	if segments, ok := findInBody(raw, dst, -1, name); ok {
		return FieldPath(segments...)
	}
	return FieldPath(name)
}

// findInBody returns the path of the first value of raw that ends at offset
// (when offset is 0 or more) or of the first member named unknown that its
// struct (by dst's type) does not have (when unknown is not ""). The decoder
// reports an object or an array just after its opening bracket, so that is
// where offset finds one. Keys in the path are the API's names where the
// client's differ only in case.
func findInBody(raw []byte, dst reflect.Type, offset int64, unknown string) ([]any, bool) {
	var found []any
	canonical := func(stack []frame) []any {
		segments := pathOf(stack)
		for i, f := range stack {
			if f.typ != nil && f.typ.Kind() == reflect.Struct && !f.array {
				if name, _, known := structField(f.typ, f.key); known {
					segments[i] = name
				}
			}
		}
		return segments
	}
	onKey := func(stack []frame) bool {
		f := stack[len(stack)-1]
		if unknown == "" || f.key != unknown || f.typ == nil || f.typ.Kind() != reflect.Struct {
			return false
		}
		if _, _, known := structField(f.typ, f.key); known {
			return false
		}
		found = canonical(stack)
		return true
	}
	onValue := func(stack []frame, end int64) bool {
		if offset < 0 || end != offset {
			return false
		}
		found = canonical(stack)
		return true
	}
	return found, walkBody(raw, dst, onKey, onValue)
}

// walkBody walks the tokens of raw in document order, keeping the path of
// the current value (and, where dst decodes it field by field, its Go type).
// It calls onKey once a member's key is the last segment of the path, and
// onValue as each value starts, with the offset just after its first token;
// either stops the walk, and makes walkBody return true, by returning true.
func walkBody(raw []byte, dst reflect.Type, onKey func(stack []frame) bool, onValue func(stack []frame, end int64) bool) bool {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var stack []frame
	next := dst // the type of the next value; nil when it is not decoded into a struct
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		top := len(stack) - 1
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:top]
			if top > 0 && !stack[top-1].array {
				stack[top-1].wantKey = true
			}
			continue
		}
		if top >= 0 && !stack[top].array && stack[top].wantKey {
			stack[top].key, stack[top].wantKey = tok.(string), false
			if onKey != nil && onKey(stack) {
				return true
			}
			next = nil
			if t := stack[top].typ; t != nil && t.Kind() == reflect.Map {
				next = t.Elem()
			} else if t != nil && t.Kind() == reflect.Struct {
				if _, ft, known := structField(t, stack[top].key); known {
					next = ft
				}
			}
			continue
		}
		if top >= 0 && stack[top].array {
			stack[top].index++
			next = nil
			if t := stack[top].typ; t != nil {
				next = t.Elem()
			}
		}
		if onValue != nil && onValue(stack, dec.InputOffset()) {
			return true
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{wantKey: true, typ: decodedInto(next, reflect.Struct, reflect.Map)})
		case json.Delim('['):
			stack = append(stack, frame{array: true, index: -1, typ: decodedInto(next, reflect.Slice, reflect.Array)})
		default:
			if top >= 0 && !stack[top].array {
				stack[top].wantKey = true
			}
		}
	}
}

// decodedInto is t without its pointers if it is of one of kinds and the
// decoder fills it field by field (no UnmarshalJSON of its own), else nil.
func decodedInto(t reflect.Type, kinds ...reflect.Kind) reflect.Type {
	if t == nil {
		return nil
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(reflect.TypeFor[json.Unmarshaler]()) {
		return nil
	}
	for _, k := range kinds {
		if t.Kind() == k {
			return t
		}
	}
	return nil
}

// structField finds the field of struct t that a JSON key fills, as the
// decoder does: the name from the json tag or the Go name, an exact match
// first, then one that differs only in case; fields of embedded structs
// count as the outer struct's.
func structField(t reflect.Type, key string) (name string, typ reflect.Type, ok bool) {
	var fold []reflect.StructField
	var names []string
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if tag == "-" && f.Tag.Get("json") == "-" {
				continue
			}
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if f.Anonymous && tag == "" && ft.Kind() == reflect.Struct {
				walk(ft)
				continue
			}
			if !f.IsExported() {
				continue
			}
			if tag == "" {
				tag = f.Name
			}
			fold, names = append(fold, f), append(names, tag)
		}
	}
	walk(t)
	for i, n := range names {
		if n == key {
			return n, fold[i].Type, true
		}
	}
	for i, n := range names {
		if strings.EqualFold(n, key) {
			return n, fold[i].Type, true
		}
	}
	return "", nil, false
}
