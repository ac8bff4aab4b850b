package e2e

// The production labs (docs/workshop/20-*.md and up) tell students to type
// more than curl: psql against pg_stat_activity, queries of the collector's
// own metrics. Each lab's test starts the real services the page starts,
// then types the page's ```sh blocks, in order, into one bash session, as a
// student types them into one terminal (a variable set in one block is
// there in the next). Only addresses are replaced. Between blocks, where a
// student would look before typing on, the test waits for a real condition.
// TestWorkshopCommands leaves these pages to them.

import (
	"bufio"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// labPages are the pages whose every ```sh block a TestLab test runs.
var labPages = map[string]bool{
	"20-sql-comments.md": true,
	"21-profiles.md":     true,
}

var shBlock = regexp.MustCompile("(?s)```sh\n(.*?)```")

// labPage reads a page of the workshop and returns its text and its ```sh
// blocks, in order.
func labPage(t *testing.T, name string) (string, []string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("../docs/workshop", name))
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, m := range shBlock.FindAllStringSubmatch(string(raw), -1) {
		blocks = append(blocks, m[1])
	}
	return string(raw), blocks
}

// labShell is one bash session fed a page's blocks.
type labShell struct {
	page   string
	blocks []string
	next   int // the next block to type
	subst  *strings.Replacer

	cmd  *exec.Cmd
	in   io.WriteCloser
	done chan struct{}

	mu  sync.Mutex
	out strings.Builder // everything the session has printed
	saw chan struct{}   // a nudge on every line printed
}

const blockEnd = "@@lab-block-end@@"

// newLabShell starts bash for page's blocks; addresses maps each address
// the page writes to the one the test's services listen on (longest first
// where one is the start of another).
func newLabShell(t *testing.T, page string, blocks []string, addresses ...string) *labShell {
	t.Helper()
	sh := &labShell{page: page, blocks: blocks, subst: strings.NewReplacer(addresses...), done: make(chan struct{}), saw: make(chan struct{}, 1)}
	sh.cmd = exec.Command("bash", "--noprofile", "--norc", "-euo", "pipefail")
	// Its own process group: a block's background job goes with it.
	sh.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	in, err := sh.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	sh.in = in
	r, w := io.Pipe()
	sh.cmd.Stdout, sh.cmd.Stderr = w, w
	if err := sh.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = sh.cmd.Wait()
		w.Close()
		close(sh.done)
	}()
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			sh.mu.Lock()
			sh.out.WriteString(sc.Text() + "\n")
			sh.mu.Unlock()
			select {
			case sh.saw <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		in.Close()
		_ = syscall.Kill(-sh.cmd.Process.Pid, syscall.SIGKILL)
		<-sh.done
	})
	return sh
}

// output is what the session printed so far.
func (sh *labShell) output() string {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.out.String()
}

// run types the page's next block and returns what it printed, once it has
// finished; a block that fails, or leaves the shell, fails the test.
func (sh *labShell) run(t *testing.T) string {
	t.Helper()
	if sh.next >= len(sh.blocks) {
		t.Fatalf("%s: the test runs block %d, but the page has %d ```sh blocks", sh.page, sh.next+1, len(sh.blocks))
	}
	block := sh.blocks[sh.next]
	sh.next++
	from := len(sh.output())
	marker := fmt.Sprintf("%s %d", blockEnd, sh.next)
	if _, err := io.WriteString(sh.in, sh.subst.Replace(block)+"\necho '"+marker+"'\n"); err != nil {
		t.Fatalf("%s: typing block %d: %v", sh.page, sh.next, err)
	}
	deadline := time.After(patience)
	for {
		out := sh.output()[from:]
		if i := strings.Index(out, marker); i >= 0 {
			t.Logf("%s, block %d:\n%s\n%s", sh.page, sh.next, block, out[:i])
			return out[:i]
		}
		select {
		case <-sh.saw:
		case <-sh.done:
			t.Fatalf("%s: the commands\n%s\nfailed: %v\n%s", sh.page, block, sh.cmd.ProcessState, sh.output()[from:])
		case <-deadline:
			t.Fatalf("%s: the commands\n%s\ndid not finish within %s\n%s", sh.page, block, patience, out)
		}
	}
}

// finish checks that the test ran every block of the page.
func (sh *labShell) finish(t *testing.T) {
	t.Helper()
	if sh.next != len(sh.blocks) {
		t.Errorf("%s has %d ```sh blocks, the test ran %d: update the test", sh.page, len(sh.blocks), sh.next)
	}
}

// wantIn fails the test unless out holds every one of want.
func wantIn(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s printed\n%s\nwithout %q", what, out, w)
		}
	}
}

// pageSays fails the test unless the page writes each of the commands the
// test mirrors (how it starts the stack, in a ```text block).
func pageSays(t *testing.T, name, page string, commands ...string) {
	t.Helper()
	for _, c := range commands {
		if !strings.Contains(page, c) {
			t.Errorf("%s no longer says %q, which its test mirrors: update the test", name, c)
		}
	}
}

// postgresAddress is host:port of the test's PostgreSQL.
func postgresAddress(t *testing.T) string {
	t.Helper()
	u, err := url.Parse(adminDatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

var (
	traceIDField    = regexp.MustCompile(`"trace_id":"([0-9a-f]{32})"`)
	orderIDField    = regexp.MustCompile(`"order_id":"([0-9a-f-]{36})"`)
	traceresponse   = regexp.MustCompile(`(?i)traceresponse: 00-([0-9a-f]{32})-([0-9a-f]{16})-01`)
	sqlTraceparent  = regexp.MustCompile(`/\*traceparent='00-([0-9a-f]{32})-([0-9a-f]{16})-01'\*/`)
	sessionsWaiting = `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%traceparent=%'`
)

// TestLabSQLComments runs lab 20: with SQL_COMMENTS=true, a statement of
// fulfillment stuck behind a lock shows in pg_stat_activity with the
// traceparent of its own span, in the trace of the order that caused it.
func TestLabSQLComments(t *testing.T) {
	t.Parallel()
	const name = "20-sql-comments.md"
	if _, err := exec.LookPath("psql"); err != nil {
		needService(t, "psql", err)
	}
	page, blocks := labPage(t, name)
	pageSays(t, name, page, "SQL_COMMENTS=true make up", "SQL_COMMENTS=true make demo")
	s := startStack(t, map[string]string{"SQL_COMMENTS": "true"})
	pg := postgresAddress(t)
	sh := newLabShell(t, name, blocks,
		"localhost:8080", strings.TrimPrefix(s.gateway.URL(), "http://"),
		"localhost:5432/orders", pg+"/"+s.env.Database, // the orders database is the test's own
		"localhost:5432", pg)

	// 2. The culprit, in the background: wait until it holds the row.
	sh.run(t)
	waitUntil(t, patience, "the culprit's session to hold the lock", func() (bool, error) {
		n, err := s.env.tryQueryInt(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = 'SELECT pg_sleep(25)'`)
		return n == 1, err
	})

	// 3. The order is placed; fulfillment's statement then waits.
	out := sh.run(t)
	wantIn(t, "step 3", out, `"status":"pending"`)
	m := traceIDField.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("step 3 printed no trace_id:\n%s", out)
	}
	traceID := m[1]
	o := orderIDField.FindStringSubmatch(out)
	if o == nil {
		t.Fatalf("step 3 printed no order_id:\n%s", out)
	}
	waitUntil(t, patience, "fulfillment's statement to wait on the lock", func() (bool, error) {
		n, err := s.env.tryQueryInt(sessionsWaiting)
		return n == 1, err
	})

	// 4. pg_stat_activity names the order's trace and a span of it.
	out = sh.run(t)
	wantIn(t, "step 4", out, "wait_event_type | Lock", "UPDATE products SET stock", "datname         | "+s.env.Database)
	c := sqlTraceparent.FindStringSubmatch(out)
	if c == nil || c[1] != traceID {
		t.Fatalf("step 4 printed\n%s\nwithout the traceparent of the order's trace %s", out, traceID)
	}
	spanID := c[2]

	// 6. The culprit's session ends, the order is fulfilled.
	out = sh.run(t)
	wantIn(t, "step 6 (pg_terminate_backend)", out, " t\n")
	if status := s.waitStatus(t, o[1]); status != "fulfilled" {
		t.Fatalf("order %s is %s once the lock is gone, want fulfilled", o[1], status)
	}
	wantIn(t, "step 6 (the order)", sh.run(t), `"status":"fulfilled"`, o[1])
	sh.finish(t)

	// 7. The comment's span ID is the statement's own CLIENT span.
	var stmt span
	waitFor(t, patience, "the span the comment names", func() bool {
		for _, sp := range s.otlp.Trace(traceID) {
			if sp.SpanID == spanID {
				stmt = sp
				return true
			}
		}
		return false
	})
	if stmt.Service != "fulfillment" || !strings.HasPrefix(stmt.Name, "UPDATE products") {
		t.Errorf("the comment names %s's span %q, want fulfillment's UPDATE products", stmt.Service, stmt.Name)
	}
	var parent span
	for _, sp := range s.otlp.Trace(traceID) {
		if sp.SpanID == stmt.ParentID {
			parent = sp
		}
	}
	if parent.Name != "fulfillment.reserve_stock" {
		t.Errorf("the statement's span is under %q, want fulfillment.reserve_stock", parent.Name)
	}
}

// TestLabProfiles runs lab 21 against services pushing their profiles to a
// stand-in for Pyroscope: the span of the traceresponse header, and each
// service's first span of the order, carry pyroscope.profile.id (their own
// span ID), no other span does, and after the burst orders' CPU profile
// holds samples labelled with span_name POST.
func TestLabProfiles(t *testing.T) {
	t.Parallel()
	const name = "21-profiles.md"
	page, blocks := labPage(t, name)
	pageSays(t, name, page, "`make up`")
	pyro := newPyroscope(t)
	s := startStack(t, profilingVars(pyro))
	sh := newLabShell(t, name, blocks, "localhost:8080", strings.TrimPrefix(s.gateway.URL(), "http://"))

	// 2. The header's span is the gateway's SERVER span, and names its profile.
	out := sh.run(t)
	m := traceresponse.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("step 2 printed\n%s\nwithout a traceresponse header", out)
	}
	wantIn(t, "step 2", out, `"trace_id":"`+m[1]+`"`)
	spans := waitWholeOrder(t, s.otlp, m[1])
	checkProfileIDs(t, spans) // 3. only each service's first span
	gw := find(t, spans, "gateway", server, "POST /api/orders")
	if gw.SpanID != m[2] || gw.Attrs["pyroscope.profile.id"] != m[2] {
		t.Errorf("the header names span %s; the gateway's SERVER span is %s with pyroscope.profile.id %q", m[2], gw.SpanID, gw.Attrs["pyroscope.profile.id"])
	}

	// 5. The burst: 200 orders placed, and orders' CPU samples named POST.
	burst := time.Now()
	out = sh.run(t)
	if !regexp.MustCompile(`(?m)^\s*200 201$`).MatchString(out) {
		t.Errorf("step 5 printed\n%s\nwant 200 answers 201", out)
	}
	pyro.waitCovered(t, "orders", "cpu", time.Now())
	names := map[string]int{}
	for _, u := range pyro.Uploads("orders", "cpu") {
		if u.Until.Before(burst) {
			continue
		}
		for _, smp := range u.Profile.Sample {
			for _, v := range smp.Label["span_name"] {
				names[v]++
			}
		}
	}
	if names["POST"] == 0 {
		t.Errorf("orders' CPU samples during the burst, by span_name: %v; want some of POST", names)
	}
	t.Logf("orders' CPU samples during the burst, by span_name: %v", names)
	sh.finish(t)
}
