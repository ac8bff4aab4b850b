package instrumented

import (
	"errors"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// TestRedisSpans runs against the machine's Redis: commands and pipelines
// are CLIENT spans named in the conventions, a missing key is no failure
// (and still reaches the caller as redis.Nil), and a refused command carries
// Redis' error prefix as error.type and db.response.status_code.
func TestRedisSpans(t *testing.T) {
	url := os.Getenv("TEST_REDIS_URL")
	if url == "" {
		url = "redis://127.0.0.1:6379/0"
	}
	rec, tel := recordingTelemetry()
	rdb, err := Redis(url, tel, RedisOptions{})
	if err == nil {
		err = rdb.Ping(t.Context()).Err()
	}
	if err != nil {
		if os.Getenv("ORDERTRACE_REQUIRE_SERVICES") == "1" {
			t.Fatalf("Redis unavailable: %v", err)
		}
		t.Skipf("Redis unavailable (set ORDERTRACE_REQUIRE_SERVICES=1 to fail instead): %v", err)
	}
	defer rdb.Close()
	key := "ordertrace-test:" + t.Name()
	defer rdb.Del(t.Context(), key)

	ctx, root := tel.TracerProvider.Tracer("t").Start(t.Context(), "work")
	if err := rdb.Get(ctx, key).Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("GET of a missing key: %v, want redis.Nil", err)
	}
	if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, key, "secret-value", 0)
		p.Set(ctx, key, "secret-value-2", 0)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := rdb.LPush(ctx, key, "x").Err(); err == nil {
		t.Fatal("LPUSH onto a string succeeded")
	}
	root.End()

	spans := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		spans[s.Name()] = s
		for _, kv := range s.Attributes() {
			if v := kv.Value.String(); v == "secret-value" || v == "secret-value-2" || v == key {
				t.Errorf("span %q carries a key or value: %s=%s", s.Name(), kv.Key, v)
			}
		}
	}
	attr := func(s sdktrace.ReadOnlySpan, key string) string {
		for _, kv := range s.Attributes() {
			if string(kv.Key) == key {
				return kv.Value.String()
			}
		}
		return ""
	}
	get, batch, push := spans["GET"], spans["BATCH SET"], spans["LPUSH"]
	if get == nil || batch == nil || push == nil {
		t.Fatalf("spans %v, want GET, BATCH SET and LPUSH", keys(spans))
	}
	if get.Status().Code == codes.Error || attr(get, "db.system.name") != "redis" || attr(get, "db.operation.name") != "GET" {
		t.Errorf("GET: status %v, attributes %v; want no error, db.system.name=redis, db.operation.name=GET", get.Status(), get.Attributes())
	}
	if attr(batch, "db.operation.batch.size") != "2" || attr(batch, "db.operation.name") != "BATCH SET" {
		t.Errorf("pipeline: attributes %v, want db.operation.name=BATCH SET, db.operation.batch.size=2", batch.Attributes())
	}
	if push.Status().Code != codes.Error || attr(push, "error.type") != "WRONGTYPE" || attr(push, "db.response.status_code") != "WRONGTYPE" {
		t.Errorf("LPUSH onto a string: status %v, attributes %v; want ERROR with error.type and status code WRONGTYPE", push.Status(), push.Attributes())
	}
}

func keys(m map[string]sdktrace.ReadOnlySpan) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
