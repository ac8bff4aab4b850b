package retry

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	var b Backoff
	var got []time.Duration
	for range 7 {
		got = append(got, b.Next())
	}
	want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("pauses = %v, want %v", got, want)
		}
	}
	b.Reset()
	if p := b.Next(); p != 250*time.Millisecond {
		t.Errorf("after Reset, Next() = %v, want 250ms", p)
	}
}
