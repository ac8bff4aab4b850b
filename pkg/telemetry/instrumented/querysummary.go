package instrumented

import (
	"strings"
	"unicode"
)

// maxSummary bounds a query summary: a span name, so a short one.
const maxSummary = 255

// querySummary is the db.query.summary of a SQL statement, which the
// database conventions also make its span's name: each operation followed by
// the tables it reads or writes, in the order they appear ("SELECT products",
// "INSERT orders", "DELETE idempotency_keys SELECT idempotency_keys").
// Literals, parameters, columns and comments are left out, so statements
// that differ only in their values share a summary, and a span name never
// carries a value. A statement without a table is its operation alone
// ("SELECT" for SELECT pg_notify(...)).
func querySummary(sql string) string {
	var (
		parts    []string
		wantName bool   // the previous word was FROM, INTO, JOIN or UPDATE
		previous string // the previous word, upper case
	)
	add := func(s string) bool {
		parts = append(parts, s)
		return len(strings.Join(parts, " ")) <= maxSummary
	}
	for tok := range sqlTokens(sql) {
		word := strings.ToUpper(tok)
		after := previous
		previous = word
		switch {
		case wantName:
			wantName = false
			if isName(tok) && !isKeyword(word) {
				if !add(tok) {
					return strings.Join(parts[:len(parts)-1], " ")
				}
				continue
			}
		case len(parts) == 0 && isName(tok) && tok[0] != '"' && len(tok) <= maxSummary:
			// The first word is the operation, whatever it is (SELECT, LISTEN, COPY).
			parts = append(parts, word)
			wantName = word == "UPDATE"
			continue
		}
		switch word {
		case "SELECT", "INSERT", "DELETE":
			if !add(word) {
				return strings.Join(parts[:len(parts)-1], " ")
			}
		case "UPDATE":
			if after == "FOR" || after == "KEY" || after == "DO" {
				continue // a row lock (FOR UPDATE) or an upsert's DO UPDATE: not an operation
			}
			if !add(word) {
				return strings.Join(parts[:len(parts)-1], " ")
			}
			wantName = true
		case "FROM", "INTO", "JOIN":
			wantName = true
		}
	}
	return strings.Join(parts, " ")
}

// sqlTokens yields the words and symbols of sql, skipping comments and
// string literals (whose text is data, never a name).
func sqlTokens(sql string) func(yield func(string) bool) {
	return func(yield func(string) bool) {
		for i := 0; i < len(sql); {
			c := sql[i]
			switch {
			case unicode.IsSpace(rune(c)):
				i++
			case strings.HasPrefix(sql[i:], "--"):
				end := strings.IndexByte(sql[i:], '\n')
				if end < 0 {
					return
				}
				i += end + 1
			case strings.HasPrefix(sql[i:], "/*"):
				end := strings.Index(sql[i+2:], "*/")
				if end < 0 {
					return
				}
				i += end + 4
			case c == '\'':
				end := strings.IndexByte(sql[i+1:], '\'')
				if end < 0 {
					return
				}
				i += end + 2
			case c == '"' || c == '_' || c < 0x80 && (unicode.IsLetter(rune(c)) || unicode.IsDigit(rune(c))):
				j := i + 1
				if c == '"' {
					end := strings.IndexByte(sql[j:], '"')
					if end < 0 {
						return
					}
					j += end + 1
				}
				for j < len(sql) && (sql[j] == '_' || sql[j] == '.' || sql[j] == '"' || sql[j] < 0x80 && (unicode.IsLetter(rune(sql[j])) || unicode.IsDigit(rune(sql[j])))) {
					j++
				}
				if !yield(sql[i:j]) {
					return
				}
				i = j
			default:
				if !yield(sql[i : i+1]) {
					return
				}
				i++
			}
		}
	}
}

// isName reports whether tok can be a table's name (possibly
// schema-qualified or quoted), not a symbol, parameter or number.
func isName(tok string) bool {
	c := tok[0]
	return c == '"' || c == '_' || c < 0x80 && unicode.IsLetter(rune(c))
}

// isKeyword reports whether word, after FROM or UPDATE, is not a table: a
// subquery's keyword or one that comes before the table.
func isKeyword(word string) bool {
	switch word {
	case "SELECT", "ONLY", "LATERAL", "UNNEST", "WHERE":
		return true
	}
	return false
}
