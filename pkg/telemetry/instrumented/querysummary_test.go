package instrumented

import (
	"strings"
	"testing"
)

func TestQuerySummary(t *testing.T) {
	for sql, want := range map[string]string{
		"SELECT sku, stock::bigint FROM products WHERE sku = ANY($1)":                                                        "SELECT products",
		"INSERT INTO orders (id, customer_id) VALUES ($1, $2)":                                                               "INSERT orders",
		"UPDATE products SET stock = stock - $2 WHERE sku = $1 AND stock >= $2 RETURNING stock::bigint":                      "UPDATE products",
		"UPDATE outbox SET sent_at = now() WHERE id = ANY($1)":                                                               "UPDATE outbox",
		"SELECT pg_notify($1, '')":                                                                                           "SELECT",
		"select o.id from orders o join order_items i on i.order_id = o.id":                                                  "SELECT orders order_items",
		"DELETE FROM idempotency_keys WHERE (a, b) IN (SELECT a, b FROM idempotency_keys WHERE expires_at < now() LIMIT $1)": "DELETE idempotency_keys SELECT idempotency_keys",
		"-- name: x\nSELECT 1 FROM public.products /* a comment FROM secrets */":                                             "SELECT public.products",
		"SELECT 'FROM secrets' AS x":                                                                                         "SELECT",
		"SELECT status FROM orders WHERE id = $1 FOR UPDATE":                                                                 "SELECT orders",
		"SELECT id FROM outbox WHERE sent_at IS NULL FOR NO KEY UPDATE SKIP LOCKED":                                          "SELECT outbox",
		"INSERT INTO t (k) VALUES ($1) ON CONFLICT (k) DO UPDATE SET v = 1":                                                  "INSERT t",
		"LISTEN ordertrace_outbox":                                                                                           "LISTEN",
		"CREATE TABLE IF NOT EXISTS schema_migrations (name text)":                                                           "CREATE",
		"commit":                        "COMMIT",
		"":                              "",
		"SELECT * FROM":                 "SELECT",
		"SELECT x FROM (SELECT 1) AS t": "SELECT SELECT",
	} {
		if got := querySummary(sql); got != want {
			t.Errorf("querySummary(%q) = %q, want %q", sql, got, want)
		}
	}
}

// FuzzQuerySummary: whatever the statement, its summary is short and never
// carries the text of a string literal (data, never a name).
func FuzzQuerySummary(f *testing.F) {
	f.Add("SELECT a FROM t WHERE b = ", "secret")
	f.Add("INSERT INTO t VALUES (", "x'y")
	f.Fuzz(func(t *testing.T, sql, literal string) {
		if s := querySummary(sql); len(s) > maxSummary {
			t.Fatalf("summary of %d bytes: %q", len(s), s)
		}
		if strings.ContainsAny(literal, "'\\") || len(literal) < 4 {
			return
		}
		planted := "ZQ" + literal
		if s := querySummary("SELECT a FROM t WHERE b = '" + planted + "'"); strings.Contains(s, planted) {
			t.Fatalf("summary %q carries the literal %q", s, planted)
		}
	})
}
