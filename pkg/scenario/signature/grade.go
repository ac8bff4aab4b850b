package signature

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Verdict is what a student's query is told: whether it returns the traces
// that show the incident and nothing else, and if not, what is wrong.
type Verdict struct {
	Pass     bool
	Matching int      // traces of the window that show the incident
	Returned int      // traces the query returned
	Extra    []string // returned, but without the incident's signature
	Missed   []string // with the signature, but not returned
	Message  string   // in plain words, with a hint
}

// Grade compares the traces a query returned (their IDs) with the traces of
// the window that show the incident. window holds every trace the grader
// could read, the returned ones among them; since says how far back it
// reaches, for the message ("15m").
func Grade(sig Signature, window []Trace, returned []string, since string) Verdict {
	byID := map[string]Trace{}
	for _, t := range window {
		byID[t.ID()] = t
	}
	got := map[string]bool{}
	for _, id := range returned {
		got[strings.ToLower(id)] = true
	}
	v := Verdict{Returned: len(got)}
	matching := map[string]bool{}
	for _, t := range sig.Matching(window) {
		matching[t.ID()] = true
	}
	v.Matching = len(matching)
	// Why each extra trace fails, grouped by the first check it fails.
	failed := map[*Check][]string{}
	var unread []string
	for _, id := range slices.Sorted(maps.Keys(got)) {
		t, ok := byID[id]
		switch {
		case !ok:
			unread = append(unread, id)
		case !matching[id]:
			v.Extra = append(v.Extra, id)
			c := sig.FirstFailed(t, window)
			failed[c] = append(failed[c], id)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(matching)) {
		if !got[id] {
			v.Missed = append(v.Missed, id)
		}
	}

	var msg []string
	switch {
	case v.Matching == 0:
		msg = append(msg, fmt.Sprintf("No trace of the last %s shows this incident: ask your instructor whether it is running, and keep traffic going (make load, or make order a few times).", since))
	case v.Returned == 0:
		msg = append(msg, fmt.Sprintf("Your query returns no trace of the last %s, and %d traces show the incident: widen it. Hint: %s", since, v.Matching, sentence(sig.Missed)))
	case len(v.Extra) == 0 && len(v.Missed) == 0:
		v.Pass = true
		msg = append(msg, fmt.Sprintf("Pass: your query returns the %s of the last %s that show the incident, and nothing else.", traces(v.Matching), since))
	}
	if v.Matching > 0 && v.Returned > 0 && !v.Pass {
		if len(v.Extra) > 0 {
			// The check most extra traces fail says what to add first.
			var checks []*Check
			for i := range sig.Checks {
				if c := &sig.Checks[i]; len(failed[c]) > 0 {
					checks = append(checks, c)
				}
			}
			slices.SortStableFunc(checks, func(a, b *Check) int { return len(failed[b]) - len(failed[a]) })
			for i, c := range checks {
				also := "also "
				if len(v.Extra) == v.Returned {
					also = ""
				}
				if i == 0 {
					msg = append(msg, fmt.Sprintf("Your query %sreturns %s without %s (for example %s): %s", also, traces(len(failed[c])), c.Says, failed[c][0], sentence(c.Hint)))
				} else {
					msg = append(msg, fmt.Sprintf("It also returns %s without %s.", traces(len(failed[c])), c.Says))
				}
			}
		}
		if len(v.Missed) > 0 {
			msg = append(msg, fmt.Sprintf("Your query misses %d of the %s that show the incident (for example %s): %s", len(v.Missed), traces(v.Matching), v.Missed[0], sentence(sig.Missed)))
		}
	}
	if len(unread) > 0 {
		msg = append(msg, fmt.Sprintf("(%s your query returned could not be read back, and were not judged.)", traces(len(unread))))
	}
	v.Message = strings.Join(msg, "\n")
	return v
}

// sentence ends a hint with a full stop, unless it ends with a question.
func sentence(s string) string {
	if strings.HasSuffix(s, "?") || strings.HasSuffix(s, ".") {
		return s
	}
	return s + "."
}

func traces(n int) string {
	if n == 1 {
		return "1 trace"
	}
	return fmt.Sprintf("%d traces", n)
}
