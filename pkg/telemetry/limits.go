package telemetry

import (
	"fmt"
	"os"
	"strconv"
)

// DefaultAttributeValueLengthLimit is how many characters of a string
// attribute, on a span or a log record, are kept when no
// OTEL_*ATTRIBUTE_VALUE_LENGTH_LIMIT variable says otherwise. The SDK keeps
// everything by default, so one request with a 60 KB header becomes a 60 KB
// span. 4096 keeps whole every value the suite records (the longest are SQL
// statements and URLs) and bounds a span at 128 attributes of 4096
// characters.
const DefaultAttributeValueLengthLimit = 4096

// attributeValueLengthLimit reads the first of vars that is set, as the SDK
// would (a negative value means no limit), or returns the suite's default.
// Unlike the SDK, which ignores a value that is not a number, it refuses it,
// so a typo does not quietly lift the limit.
func attributeValueLengthLimit(vars ...string) (int, error) {
	for _, name := range vars {
		n, set, err := envInt(name)
		if err != nil {
			return 0, fmt.Errorf("%w of characters, or -1 for no limit", err)
		}
		if set {
			return n, nil
		}
	}
	return DefaultAttributeValueLengthLimit, nil
}

// envInt reads the whole number in the variable name, if it is set. Unlike
// the SDK, which ignores a value that is not a number, the suite refuses
// one (the error names the variable), so a typo does not go unnoticed.
func envInt(name string) (n int, set bool, err error) {
	raw := os.Getenv(name)
	if raw == "" {
		return 0, false, nil
	}
	n, err = strconv.Atoi(raw)
	if err != nil {
		return 0, true, fmt.Errorf("%s: must be a whole number", name)
	}
	return n, true, nil
}
