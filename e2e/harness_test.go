// Package e2e runs the three services as real processes against the
// machine's PostgreSQL, Redis and RabbitMQ, with an in-test OTLP receiver,
// and checks what a user would see: answers, stored rows, messages, traces
// and logs. Each test gets its own database, RabbitMQ virtual host and Redis
// key space, so tests run in parallel and leave nothing behind.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

// Where the shared services are; each can be overridden for a machine whose
// services live elsewhere.
var (
	adminDatabaseURL = envOr("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	redisURL         = envOr("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
	amqpBaseURL      = envOr("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
	rabbitAPI        = envOr("TEST_RABBITMQ_API", "http://guest:guest@127.0.0.1:15672")
)

// binDir holds the service binaries built once by TestMain.
var binDir string

// binDirVar, among a service's variables, names another directory to start
// it from: make bench-compare runs a baseline's binaries beside this tree's.
const binDirVar = "ORDERTRACE_BIN_DIR"

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ordertrace-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	for _, svc := range []string{"gateway", "orders", "fulfillment"} {
		args := append([]string{"build"}, buildFlags...)
		cmd := exec.Command("go", append(args, "-o", filepath.Join(dir, svc), "../services/"+svc)...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n", svc, err)
			return 1
		}
	}
	code := m.Run()
	if err := checkConventions(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	return code
}

func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}

// needService skips a test whose backing service is missing, or fails it
// when ORDERTRACE_REQUIRE_SERVICES=1 (as in CI), so no skip passes unnoticed.
func needService(t *testing.T, name string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("ORDERTRACE_REQUIRE_SERVICES") == "1" {
		t.Fatalf("%s is required but unavailable: %v", name, err)
	}
	t.Skipf("%s unavailable (set ORDERTRACE_REQUIRE_SERVICES=1 to fail instead): %v", name, err)
}

func randomName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// env is one test's isolated slice of the shared services.
type env struct {
	Database    string
	DatabaseURL string
	VHost       string
	AMQPURL     string
	Redis       *redis.Client

	amqpMu   sync.Mutex
	amqpConn *amqp.Connection // see tryChannel
}

// newEnv creates a database, a virtual host and a Redis key space for t and
// removes them when t ends.
func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{Database: randomName("e2e_"), VHost: randomName("e2e-")}

	admin, err := pgx.Connect(ctx, adminDatabaseURL)
	needService(t, "PostgreSQL", err)
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+e.Database); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), adminDatabaseURL)
		if err != nil {
			t.Errorf("drop database: %v", err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+e.Database+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database: %v", err)
		}
	})
	u, _ := url.Parse(adminDatabaseURL)
	u.Path = "/" + e.Database
	e.DatabaseURL = u.String()

	needService(t, "RabbitMQ management API", rabbitPut(t, "/api/vhosts/"+e.VHost, nil))
	if err := rabbitPut(t, "/api/permissions/"+e.VHost+"/guest", map[string]string{"configure": ".*", "write": ".*", "read": ".*"}); err != nil {
		t.Fatalf("rabbitmq permissions: %v", err)
	}
	t.Cleanup(func() {
		if err := rabbitDo(http.MethodDelete, "/api/vhosts/"+e.VHost, nil, nil); err != nil {
			t.Errorf("delete vhost: %v", err)
		}
	})
	e.AMQPURL = strings.TrimSuffix(amqpBaseURL, "/") + "/" + e.VHost
	t.Cleanup(func() { // before the vhost goes (cleanups run last first)
		e.amqpMu.Lock()
		defer e.amqpMu.Unlock()
		if e.amqpConn != nil {
			e.amqpConn.Close()
		}
	})

	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatalf("TEST_REDIS_URL: %v", err)
	}
	e.Redis = redis.NewClient(opts)
	needService(t, "Redis", e.Redis.Ping(ctx).Err())
	t.Cleanup(func() {
		ctx := context.Background()
		keys, _ := e.Redis.Keys(ctx, "ordertrace:"+e.Database+":*").Result()
		if len(keys) > 0 {
			e.Redis.Del(ctx, keys...)
		}
		e.Redis.Close()
	})
	return e
}

func rabbitPut(t *testing.T, path string, body any) error {
	t.Helper()
	return rabbitDo(http.MethodPut, path, body, nil)
}

// rabbitDo calls the RabbitMQ management API; out, when not nil, receives
// the decoded JSON answer.
func rabbitDo(method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	u, err := url.Parse(rabbitAPI)
	if err != nil {
		return err
	}
	pass, _ := u.User.Password()
	user := u.User.Username()
	u.User = nil
	req, err := http.NewRequest(method, u.String()+path, r)
	if err != nil {
		return err
	}
	req.SetBasicAuth(user, pass)
	req.Header.Set("Content-Type", "application/json")
	resp, err := testClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

// channel opens a channel on the test's vhost, over one connection the test
// shares and closes when it ends. Close the channel when done with it.
func (e *env) channel(t *testing.T) *amqp.Channel {
	t.Helper()
	ch, err := e.tryChannel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// tryChannel is channel for polls: it returns the error instead of failing
// the test, and dials again when the broker has closed the shared
// connection (a broker restart, a connection closed from the management API).
func (e *env) tryChannel() (*amqp.Channel, error) {
	e.amqpMu.Lock()
	defer e.amqpMu.Unlock()
	if e.amqpConn == nil || e.amqpConn.IsClosed() {
		conn, err := amqp.Dial(e.AMQPURL)
		if err != nil {
			return nil, fmt.Errorf("rabbitmq: %w", err)
		}
		e.amqpConn = conn
	}
	ch, err := e.amqpConn.Channel()
	if err != nil {
		return nil, fmt.Errorf("rabbitmq channel: %w", err)
	}
	return ch, nil
}

// queueDepth returns the number of ready messages in a queue of the test's
// vhost, asked of the broker itself (the management API's counters lag).
func (e *env) queueDepth(t *testing.T, queue string) int {
	t.Helper()
	n, err := e.tryQueueDepth(queue)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// tryQueueDepth is queueDepth for polls. A missing queue is an error (and
// costs only the channel of this one question).
func (e *env) tryQueueDepth(queue string) (int, error) {
	ch, err := e.tryChannel()
	if err != nil {
		return 0, err
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return 0, fmt.Errorf("queue %s: %w", queue, err)
	}
	return q.Messages, nil
}

// tryGet takes one message off a queue of the test's vhost (acknowledged on
// delivery), on a channel of its own: a broker error closes a channel, and
// the next poll must not inherit a closed one.
func (e *env) tryGet(queue string) (amqp.Delivery, bool, error) {
	ch, err := e.tryChannel()
	if err != nil {
		return amqp.Delivery{}, false, err
	}
	defer ch.Close()
	d, ok, err := ch.Get(queue, true)
	if err != nil {
		return amqp.Delivery{}, false, fmt.Errorf("get from %s: %w", queue, err)
	}
	return d, ok, nil
}

// queryInt runs a one-value query against the test's database.
func (e *env) queryInt(t *testing.T, sql string, args ...any) int {
	t.Helper()
	n, err := e.tryQueryInt(sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// tryQueryInt is queryInt for polls.
func (e *env) tryQueryInt(sql string, args ...any) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, e.DatabaseURL)
	if err != nil {
		return 0, fmt.Errorf("connect: %w", err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("%s: %w", sql, err)
	}
	return n, nil
}

// process is one running service.
type process struct {
	name string
	cmd  *exec.Cmd
	addr string // from its "http server listening" log line
	done chan struct{}
	err  error // exit status, once done is closed

	mu    sync.Mutex
	lines []string // its stdout, one JSON log line each
}

// Lines returns what the service has logged so far.
func (p *process) Lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// URL is the base URL of its HTTP server.
func (p *process) URL() string { return "http://" + p.addr }

// startTimeout bounds a service's start, from exec to a 200 from its
// /readyz: binaries built with -race, on a busy machine, may take a while.
const startTimeout = 60 * time.Second

// start runs a service binary with vars (and nothing else from this
// process's environment but PATH and HOME), waits until it is ready (its
// /readyz answers 200: it can do its job, not merely listen), and stops it
// with SIGTERM when t ends.
func start(t *testing.T, name string, vars map[string]string) *process {
	t.Helper()
	dir := binDir
	if d := vars[binDirVar]; d != "" {
		dir = d
	}
	cmd := exec.Command(filepath.Join(dir, name))
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "HTTP_ADDR=127.0.0.1:0",
		// The race detector otherwise sleeps a second before every exit.
		"GORACE=atexit_sleep_ms=0",
	}
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	listening := make(chan string, 1)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.lines = append(p.lines, line)
			p.mu.Unlock()
			var rec struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "http server listening" {
				select {
				case listening <- rec.Addr:
				default:
				}
			}
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop(t)
		if strings.Contains(stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("%s has a data race:\n%s", name, stderr.String())
		} else if t.Failed() {
			t.Logf("%s stderr:\n%s", name, stderr.String())
		}
	})
	// The log line gives the address (services listen on port 0); /readyz
	// says when the service is ready.
	deadline := time.Now().Add(startTimeout)
	select {
	case p.addr = <-listening:
	case <-p.done:
		t.Fatalf("%s exited before listening: %v\nstderr: %s\nstdout: %s", name, p.err, stderr.String(), strings.Join(p.Lines(), "\n"))
	case <-time.After(startTimeout):
		t.Fatalf("%s did not start listening within %s\nstdout: %s", name, startTimeout, strings.Join(p.Lines(), "\n"))
	}
	if err := p.waitReady(deadline); err != nil {
		t.Fatalf("%s was not ready within %s: %v\nstderr: %s\nstdout: %s", name, startTimeout, err, stderr.String(), strings.Join(p.Lines(), "\n"))
	}
	return p
}

// tryReady asks the service's /readyz once: nil means it answered 200.
func (p *process) tryReady() error {
	resp, err := testClient.Get(p.URL() + "/readyz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s /readyz: %s %s", p.name, resp.Status, bytes.TrimSpace(b))
	}
	return nil
}

// waitReady polls /readyz until it answers 200, the process exits, or the
// deadline passes.
func (p *process) waitReady(deadline time.Time) error {
	for {
		err := p.tryReady()
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("exited (%v); its last answer: %w", p.err, err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return err
		}
	}
}

// Stop sends SIGTERM and waits for the process to exit. It returns how long
// that took; a process still running after 20 s is killed and t fails.
func (p *process) Stop(t *testing.T) time.Duration {
	t.Helper()
	return terminate(t, p.name, p.cmd, p.done)
}

// terminate sends cmd SIGTERM, unless it has exited already (done is
// closed), and waits for it; after 20 s it is killed and t fails. It returns
// how long the stop took.
func terminate(t *testing.T, name string, cmd *exec.Cmd, done <-chan struct{}) time.Duration {
	t.Helper()
	began := time.Now()
	select {
	case <-done:
		return 0
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Errorf("%s ignored SIGTERM for 20s and was killed", name)
	}
	return time.Since(began)
}

// stack is the three services of one test, exporting to one receiver.
type stack struct {
	env         *env
	otlp        *receiver
	orders      *process
	fulfillment *process
	gateway     *process
	vars        map[string]string // what orders and fulfillment were started with
}

// startStack starts orders, fulfillment and gateway (in that order: orders
// migrates the schema) on a fresh env. extra adds or overrides variables for
// every service.
func startStack(t *testing.T, extra map[string]string) *stack {
	t.Helper()
	e := newEnv(t)
	s := &stack{env: e, otlp: newReceiver(t)}
	common := map[string]string{
		"DATABASE_URL": e.DatabaseURL,
		"REDIS_URL":    redisURL,
		"AMQP_URL":     e.AMQPURL,
		"LOG_LEVEL":    "debug",

		"OTEL_EXPORTER_OTLP_ENDPOINT": s.otlp.URL,
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
		"OTEL_BSP_SCHEDULE_DELAY":     "100",
		"OTEL_BLRP_SCHEDULE_DELAY":    "100",
		"OTEL_METRIC_EXPORT_INTERVAL": "1000",
		"OTEL_RESOURCE_ATTRIBUTES":    "deployment.environment.name=e2e",
	}
	for k, v := range extra {
		common[k] = v
	}
	s.vars = common
	s.orders = start(t, "orders", common)
	s.fulfillment = start(t, "fulfillment", common)
	gw := map[string]string{"ORDERS_URL": s.orders.URL()}
	for k, v := range common {
		gw[k] = v
	}
	s.gateway = start(t, "gateway", gw)
	return s
}

// testClient is the tests' HTTP client: a service that hangs fails the
// request that waited for it, not the whole run.
var testClient = &http.Client{Timeout: 30 * time.Second}

// stop stops the three services with SIGTERM. Each flushes its telemetry
// on the way out, so afterwards every span, log record and log line they
// made has arrived: what an assertion that something never happened waits
// for, instead of a pause.
func (s *stack) stop(t *testing.T) {
	t.Helper()
	for _, p := range []*process{s.gateway, s.orders, s.fulfillment} {
		p.Stop(t)
	}
}

// call sends a request to the gateway and returns the status, headers and body.
func (s *stack) call(t *testing.T, method, path, contentType string, body []byte, header map[string]string) (int, http.Header, []byte) {
	t.Helper()
	status, h, b, err := s.tryCall(method, path, contentType, body, header)
	if err != nil {
		t.Fatal(err)
	}
	return status, h, b
}

// tryCall is call for polls.
func (s *stack) tryCall(method, path, contentType string, body []byte, header map[string]string) (int, http.Header, []byte, error) {
	req, err := http.NewRequest(method, s.gateway.URL()+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := testClient.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return resp.StatusCode, resp.Header, b, nil
}

// patience bounds the waits for what happens asynchronously (a message
// consumed, a span exported, a switch loaded): generous, because the
// services run with -race on machines that may be busy, and a deadline
// costs time only when something is really wrong.
const patience = 60 * time.Second

// waitFor polls cond every 50 ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	waitUntil(t, timeout, what, func() (bool, error) { return cond(), nil })
}

// waitUntil polls cond every 50 ms until it holds or timeout passes. When
// cond cannot tell (the broker, the database or a service answered with an
// error, which on a busy machine may pass), or to say how far things are,
// it returns an error: the poll goes on, and the last error is printed if
// time runs out. A condition never calls t.Fatal: one failed look must not
// fail a test.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	if err := poll(timeout, cond); err != nil {
		t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
	}
}

// poll is waitUntil without a test: nil once cond holds, or why it never did.
func poll(timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	var (
		last   error
		lastAt time.Time
	)
	for {
		ok, err := cond()
		switch {
		case err != nil:
			last, lastAt = err, time.Now()
		case ok:
			return nil
		}
		if time.Now().After(deadline) {
			if last == nil {
				return errors.New("the condition never held")
			}
			return fmt.Errorf("the condition never held; the last error (%s before the end): %w", time.Since(lastAt).Round(time.Millisecond), last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// traceIDFromHeader reads the trace ID out of a traceresponse header.
func traceIDFromHeader(t *testing.T, h http.Header) string {
	t.Helper()
	parts := strings.Split(h.Get("traceresponse"), "-")
	if len(parts) != 4 || len(parts[1]) != 32 {
		t.Fatalf("traceresponse header = %q, want 00-<trace id>-<span id>-<flags>", h.Get("traceresponse"))
	}
	return parts[1]
}
