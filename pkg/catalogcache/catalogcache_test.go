package catalogcache

import "testing"

// The scheme is shared by orders, fulfillment and the end-to-end tests, and
// documented: it must not change by accident.
func TestKey(t *testing.T) {
	if got, want := Key("orders", "stock", "MUG-CERAMIC"), "ordertrace:orders:stock:MUG-CERAMIC"; got != want {
		t.Errorf("Key() = %q, want %q", got, want)
	}
}
