package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"unicode/utf8"
)

// The hostile-input suite: each kind of request an attacker (or a broken
// client) sends is refused by the gateway and straight by orders (its port
// is published too), with a problem naming what was wrong, a bounded answer,
// nothing stored and nothing planted leaking into telemetry.

// Values planted in every hostile request: none may reach a span, an OTLP
// log record or a log line.
const (
	plantedToken    = "tok-7f3a9c2e-hostile-secret"
	plantedPassword = "pw-hostile-hunter2"
)

// Where a hostile row is sent.
type target int

const (
	both target = iota
	gatewayOnly
	ordersOnly
)

func (to target) String() string {
	return [...]string{"both", "gateway", "orders"}[to]
}

// hostileRow is one kind of hostile request and how it must be refused.
type hostileRow struct {
	kind   string
	sent   string // what is sent, for the table in docs/reliability.md
	to     target
	method string // POST when empty
	path   string // appended to the order collection's path (/api/orders, /orders)
	// contentType is application/json when empty; "-" sends none.
	contentType string
	header      map[string]string // over the planted headers
	body        string
	status      int
	field       string // the first error's field; "" where the request line itself is wrong
	// untraced: refused before the tracing middleware, so the problem has
	// no trace_id (headers too large: they are not read into a span).
	untraced bool
}

// problemBound is the most a problem answer may be (httpx.MaxProblemBytes).
const problemBound = 16 << 10

const okItem = `{"sku":"MUG-CERAMIC","quantity":1}`

// order builds a body from a customer id as JSON text and items.
func order(customer string, items ...string) string {
	return `{"customer_id":` + customer + `,"items":[` + strings.Join(items, ",") + `]}`
}

func repeatItems(n int, item string) []string {
	items := make([]string, n)
	for i := range items {
		items[i] = item
	}
	return items
}

func utf16LE(s string) string {
	var b strings.Builder
	for _, r := range s {
		b.WriteByte(byte(r))
		b.WriteByte(0)
	}
	return b.String()
}

func hostileRows() []hostileRow {
	deep := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	return []hostileRow{
		// The body is not one JSON object.
		{kind: "malformed JSON", sent: "`{\"customer_id\":`", body: `{"customer_id":`, status: 400, field: "(body)"},
		{kind: "syntax error", sent: "`{\"customer_id\" \"c\"}`", body: `{"customer_id" "c"}`, status: 400, field: "(body)"},
		{kind: "empty body", sent: "no bytes", body: ``, status: 400, field: "(body)"},
		{kind: "JSON null", sent: "`null`", body: `null`, status: 400, field: "(body)"},
		{kind: "array, not object", sent: "`[{...}]`", body: `[` + order(`"c"`, okItem) + `]`, status: 400, field: "(body)"},
		{kind: "two JSON values", sent: "an order, then `{}`", body: order(`"c"`, okItem) + ` {}`, status: 400, field: "(body)"},
		{kind: "byte-order mark", sent: "UTF-8 BOM, then an order", body: "\uFEFF" + order(`"c"`, okItem), status: 400, field: "(body)"},
		{kind: "UTF-16 body", sent: "an order in UTF-16LE", body: utf16LE(order(`"c"`, okItem)), status: 400, field: "(body)"},
		{kind: "deep nesting", sent: "20,000 nested arrays", body: `{"customer_id":"c","items":` + deep + `}`, status: 400, field: "(body)"},
		{kind: "oversized body", sent: "a 70 KiB customer id", body: order(`"`+strings.Repeat("x", 70<<10)+`"`, okItem), status: 413, field: "(body)"},

		// The object is not an order.
		{kind: "duplicate key", sent: "`customer_id` twice", body: `{"customer_id":"a","customer_id":"b","items":[` + okItem + `]}`, status: 400, field: "customer_id"},
		{kind: "wrong-case key", sent: "`Customer_ID`", body: `{"Customer_ID":"c","items":[` + okItem + `]}`, status: 400, field: "Customer_ID"},
		{kind: "card data in an unknown field", sent: "`card_number` with a planted number", body: `{"customer_id":"c","card_number":"` + plantedCard + `","items":[` + okItem + `]}`, status: 400, field: "card_number"},
		{kind: "prototype pollution", sent: "`__proto__` key", body: `{"customer_id":"c","__proto__":{"admin":true},"items":[` + okItem + `]}`, status: 400, field: "__proto__"},
		{kind: "10 KB field name", sent: "an unknown key of 10,000 bytes", body: `{"customer_id":"c","` + strings.Repeat("k", 10000) + `":1,"items":[` + okItem + `]}`, status: 400, field: strings.Repeat("k", 125) + "…"},
		{kind: "operator object", sent: "`{\"$ne\":\"\"}` as the customer id", body: order(`{"$ne":""}`, okItem), status: 400, field: "customer_id"},
		{kind: "items as object", sent: "`\"items\":{...}`", body: `{"customer_id":"c","items":` + okItem + `}`, status: 400, field: "items"},
		{kind: "quantity as text", sent: "`\"quantity\":\"two\"`", body: order(`"c"`, `{"sku":"MUG-CERAMIC","quantity":"two"}`), status: 400, field: "items[0].quantity"},
		{kind: "fractional quantity", sent: "`\"quantity\":1.5`", body: order(`"c"`, `{"sku":"MUG-CERAMIC","quantity":1.5}`), status: 400, field: "items[0].quantity"},
		{kind: "number beyond any int", sent: "`\"quantity\":1e400`", body: order(`"c"`, `{"sku":"MUG-CERAMIC","quantity":1e400}`), status: 400, field: "items[0].quantity"},

		// The order is not valid.
		{kind: "no customer", sent: "no `customer_id`", body: `{"items":[` + okItem + `]}`, status: 422, field: "customer_id"},
		{kind: "null customer", sent: "`\"customer_id\":null`", body: order(`null`, okItem), status: 422, field: "customer_id"},
		{kind: "10 KB customer id", sent: "10,000 characters", body: order(`"`+strings.Repeat("c", 10000)+`"`, okItem), status: 422, field: "customer_id"},
		{kind: "markup the gateway would grow", sent: "30,000 `<` (each `\\u003c` if re-encoded)", body: order(`"`+strings.Repeat("<", 30000)+`"`, okItem), status: 422, field: "customer_id"},
		{kind: "script in a customer id", sent: "`<script>alert(1)</script>`", body: order(`"<script>alert(1)</script>"`, okItem), status: 422, field: "customer_id"},
		{kind: "NUL in a customer id", sent: "`\"c\\u0000\"`", body: order(`"c\u0000"`, okItem), status: 422, field: "customer_id"},
		{kind: "invalid UTF-8", sent: "bytes 0xff 0xfe in a customer id", body: order("\"c\xff\xfe\"", okItem), status: 422, field: "customer_id"},
		{kind: "bidi override", sent: "U+202E in a customer id", body: order(`"c`+"\u202e"+`gnp.exe"`, okItem), status: 422, field: "customer_id"},
		{kind: "no items", sent: "`\"items\":[]`", body: order(`"c"`), status: 422, field: "items"},
		{kind: "51 items", sent: "one over the cap of 50", body: order(`"c"`, repeatItems(51, okItem)...), status: 422, field: "items"},
		{kind: "2,000 invalid items", sent: "each with an unknown sku and quantity 0 (58 KB)", body: order(`"c"`, repeatItems(2000, `{"sku":"NOPE","quantity":0}`)...), status: 422, field: "items"},
		{kind: "duplicate sku", sent: "the same sku twice", body: order(`"c"`, okItem, okItem), status: 422, field: "items[1].sku"},
		{kind: "unknown sku", sent: "`NO-SUCH-SKU`", body: order(`"c"`, `{"sku":"NO-SUCH-SKU","quantity":1}`), status: 422, field: "items[0].sku"},
		{kind: "SQL in a sku", sent: "`x'; DROP TABLE orders;--`", body: order(`"c"`, `{"sku":"x'; DROP TABLE orders;--","quantity":1}`), status: 422, field: "items[0].sku"},
		{kind: "zero quantity", sent: "`\"quantity\":0`", body: order(`"c"`, `{"sku":"MUG-CERAMIC","quantity":0}`), status: 422, field: "items[0].quantity"},
		{kind: "negative quantity", sent: "`\"quantity\":-3`", body: order(`"c"`, `{"sku":"MUG-CERAMIC","quantity":-3}`), status: 422, field: "items[0].quantity"},
		{kind: "huge quantity", sent: "`\"quantity\":1000000000000`", body: order(`"c"`, `{"sku":"MUG-CERAMIC","quantity":1000000000000}`), status: 422, field: "items[0].quantity"},
		{kind: "more than in stock", sent: "6 of a sku with 5 in stock", body: order(`"c"`, `{"sku":"LIMITED-ROAST","quantity":6}`), status: 409, field: "items[0].quantity"},

		// The headers are wrong.
		{kind: "wrong content type", sent: "`text/plain`", contentType: "text/plain", body: order(`"c"`, okItem), status: 415, field: "Content-Type"},
		{kind: "no content type", sent: "no `Content-Type`", contentType: "-", body: order(`"c"`, okItem), status: 415, field: "Content-Type"},
		{kind: "form post", sent: "`application/x-www-form-urlencoded`", contentType: "application/x-www-form-urlencoded", body: "customer_id=c&items=MUG-CERAMIC", status: 415, field: "Content-Type"},
		{kind: "Idempotency-Key with spaces", sent: "`a key with spaces`", header: map[string]string{"Idempotency-Key": "a key with spaces"}, body: order(`"c"`, okItem), status: 400, field: "Idempotency-Key"},
		{kind: "300-byte Idempotency-Key", sent: "300 visible characters", header: map[string]string{"Idempotency-Key": strings.Repeat("k", 300)}, body: order(`"c"`, okItem), status: 400, field: "Idempotency-Key"},
		{kind: "40 KiB of headers", sent: "a 40 KiB cookie holding a planted token", header: map[string]string{"Cookie": "session=" + plantedToken + strings.Repeat("z", 40<<10)}, body: order(`"c"`, okItem), status: 431, field: "(headers)", untraced: true},
		{kind: "20 KB User-Agent on a bad order", sent: "a 20,000-byte `User-Agent`, no items", header: map[string]string{"User-Agent": "ua/" + strings.Repeat("u", 20000)}, body: order(`"c"`), status: 422, field: "items"},
		{kind: "forged trace context on a bad order", sent: "flags `00`, a 16 KiB `tracestate`, no items", header: map[string]string{"traceparent": "00-" + randomHex(16) + "-" + randomHex(8) + "-00", "tracestate": "v=" + strings.Repeat("s", 16<<10)}, body: order(`"c"`), status: 422, field: "items"},
		{kind: "bad tenant header", to: gatewayOnly, sent: "`X-Tenant-ID: no spaces allowed`", header: map[string]string{"X-Tenant-ID": "no spaces allowed"}, body: order(`"c"`, okItem), status: 400, field: "X-Tenant-ID"},
		{kind: "100-byte tenant header", to: gatewayOnly, sent: "`X-Tenant-ID` of 100 letters", header: map[string]string{"X-Tenant-ID": strings.Repeat("t", 100)}, body: order(`"c"`, okItem), status: 400, field: "X-Tenant-ID"},
		{kind: "bad request id", to: gatewayOnly, sent: "`X-Request-ID: <img src=x>`", header: map[string]string{"X-Request-ID": "<img src=x>"}, body: order(`"c"`, okItem), status: 400, field: "X-Request-ID"},
		{kind: "baggage over the W3C limit", to: gatewayOnly, sent: "9,000 bytes of baggage with a planted password", header: map[string]string{"baggage": "password=" + plantedPassword + ",k=" + strings.Repeat("v", 9000)}, body: order(`"c"`, okItem), status: 431, field: "baggage"},

		// The request line is wrong.
		{kind: "malformed order id", sent: "`GET .../not-a-uuid`", method: http.MethodGet, path: "/not-a-uuid", contentType: "-", status: 422, field: "id"},
		{kind: "path traversal", sent: "`GET .../..%2f..%2fetc%2fpasswd`", method: http.MethodGet, path: "/..%2f..%2fetc%2fpasswd", contentType: "-", status: 422, field: "id"},
		{kind: "unknown route", sent: "`POST .../x/y`", path: "/x/y", body: order(`"c"`, okItem), status: 404},
		{kind: "wrong method", sent: "`DELETE` on the collection", method: http.MethodDelete, contentType: "-", status: 405},
	}
}

// plantedHeaders go with every hostile request, under the row's own.
func plantedHeaders() map[string]string {
	return map[string]string{
		"Authorization":   "Bearer " + plantedToken,
		"Cookie":          "session=" + plantedToken,
		"baggage":         "tenant.id=acme,password=" + plantedPassword,
		"Idempotency-Key": "hostile-" + randomHex(8),
	}
}

func TestHostileInputs(t *testing.T) {
	t.Parallel()
	s := startStack(t, nil)
	prefixes := map[target]string{gatewayOnly: s.gateway.URL() + "/api/orders", ordersOnly: s.orders.URL() + "/orders"}

	for _, row := range hostileRows() {
		for _, to := range []target{gatewayOnly, ordersOnly} {
			if row.to != both && row.to != to {
				continue
			}
			t.Run(row.kind+"/"+to.String(), func(t *testing.T) {
				method := row.method
				if method == "" {
					method = http.MethodPost
				}
				req, err := http.NewRequest(method, prefixes[to]+row.path, strings.NewReader(row.body))
				if err != nil {
					t.Fatal(err)
				}
				for k, v := range plantedHeaders() {
					req.Header.Set(k, v)
				}
				for k, v := range row.header {
					req.Header.Set(k, v)
				}
				switch row.contentType {
				case "":
					req.Header.Set("Content-Type", "application/json")
				case "-":
				default:
					req.Header.Set("Content-Type", row.contentType)
				}
				resp, err := testClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
				resp.Body.Close()
				if err != nil {
					t.Fatal(err)
				}

				if resp.StatusCode != row.status {
					t.Errorf("status %d, want %d; answer %.300s", resp.StatusCode, row.status, answer)
				}
				p := decodeProblem(t, resp.Header, answer)
				if p.Status != row.status || p.Title == "" || (p.TraceID == "") != row.untraced {
					t.Errorf("problem %+v, want status %d, a title and a trace_id (none if refused untraced: %v)", p, row.status, row.untraced)
				}
				if row.field != "" && (len(p.Errors) == 0 || p.Errors[0].Field != row.field || p.Errors[0].Reason == "") {
					t.Errorf("problem errors %.300v, want the first to name %.60q with a reason", p.Errors, row.field)
				}
				if len(answer) > problemBound {
					t.Errorf("answer of %d bytes, want at most %d", len(answer), problemBound)
				}
				for _, planted := range []string{plantedToken, plantedPassword, plantedCard} {
					if bytes.Contains(answer, []byte(planted)) {
						t.Errorf("the answer repeats a planted value: %.300s", answer)
					}
				}

				for _, table := range []string{"orders", "order_items", "outbox", "idempotency_keys"} {
					if n := s.env.queryInt(t, "SELECT count(*) FROM "+table); n != 0 {
						t.Errorf("%d rows in %s, want none", n, table)
					}
				}
				for _, p := range []*process{s.gateway, s.orders, s.fulfillment} {
					if err := p.tryReady(); err != nil {
						t.Errorf("%s not ready after the request: %v", p.name, err)
					}
				}
			})
		}
	}

	s.stop(t) // every span, log record and log line they made has arrived
	s.wantNothingStored(t)
	s.wantNowhere(t, plantedToken, plantedPassword, plantedCard)
	for _, sp := range s.otlp.Spans() {
		for _, v := range allValues(sp) {
			if n := utf8.RuneCountInString(v); n > 4096+200 { // the key's length, then the capped value
				t.Errorf("%s span %q has an attribute of %d characters, want the value capped at 4096", sp.Service, sp.Name, n)
			}
		}
	}
}

// TestHostileTableDocumented keeps the table in docs/reliability.md equal to
// the suite's rows: a row added here is a row a reader sees there.
func TestHostileTableDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/reliability.md")
	if err != nil {
		t.Fatal(err)
	}
	want := hostileTable()
	if !strings.Contains(string(doc), want) {
		t.Errorf("docs/reliability.md does not hold the hostile-input table as the suite has it; want:\n\n%s", want)
	}
}

// hostileTable renders the rows as the Markdown table of docs/reliability.md,
// with its counts.
func hostileTable() string {
	rows := hostileRows()
	var b strings.Builder
	requests := map[target]int{}
	b.WriteString("| kind | sent | to | status | field named |\n|---|---|---|---|---|\n")
	for _, r := range rows {
		field := "`" + r.field + "`"
		if r.field == "" {
			field = "—"
		} else if len(r.field) > 60 {
			field = fmt.Sprintf("the key, clipped to %d bytes", len(r.field))
		}
		to := "gateway, orders"
		switch r.to {
		case gatewayOnly:
			to = "gateway"
			requests[gatewayOnly]++
		case ordersOnly:
			to = "orders"
			requests[ordersOnly]++
		default:
			requests[gatewayOnly]++
			requests[ordersOnly]++
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %s |\n", r.kind, strings.ReplaceAll(r.sent, "|", "\\|"), to, r.status, field)
	}
	fmt.Fprintf(&b, "\n%d kinds, %d requests: %d to the gateway, %d straight to orders.\n",
		len(rows), requests[gatewayOnly]+requests[ordersOnly], requests[gatewayOnly], requests[ordersOnly])
	return b.String()
}
