package instrumented

import (
	"context"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"
)

// Pool is the suite's PostgreSQL pool. With SQL comments on (SQL_COMMENTS),
// every statement sent through it, or through a transaction it began, ends
// with the sqlcommenter comment /*traceparent='00-<trace>-<span>-<flags>'*/,
// so pg_stat_activity and the server's log point at the trace. Only the
// statements pgx writes itself go without (BEGIN, COMMIT, ROLLBACK,
// SAVEPOINT, RELEASE and CopyFrom's COPY), and those on a connection taken
// with Acquire (the migrations, which run outside any span). Off, Pool is
// the pgxpool.Pool it embeds.
//
// pgx has no hook that rewrites every statement: a QueryRewriter only acts
// when it is a statement's first argument. Pool puts one there. pgx calls it
// after the query tracer, so the comment names the statement's own CLIENT
// span, the span that holds its SQL text and its duration.
type Pool struct {
	*pgxpool.Pool
	comments bool
}

// runCommented sets how statements run with comments on. A traceparent
// makes every SQL text unique: pgx's default mode would prepare each one as
// a named statement, in a round trip of its own, and churn its statement
// cache. QueryExecModeExec parses and runs a statement in one round trip and
// keeps nothing on the server; docs/design.md (SQL comments) has the figures.
// Its parameters go as text with their type left to the server, so a Go type
// that fits more than one PostgreSQL type must be named: the suite's
// map[string]string (the outbox's headers) is jsonb.
func runCommented(cfg *pgxpool.Config) {
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	cfg.AfterConnect = func(_ context.Context, conn *pgx.Conn) error {
		conn.TypeMap().RegisterDefaultPgType(map[string]string(nil), "jsonb")
		return nil
	}
}

// Exec runs a statement.
func (p *Pool) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if p.comments {
		args = withComment(args)
	}
	return p.Pool.Exec(ctx, sql, args...)
}

// Query runs a query.
func (p *Pool) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if p.comments {
		args = withComment(args)
	}
	return p.Pool.Query(ctx, sql, args...)
}

// QueryRow runs a query that returns at most one row.
func (p *Pool) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if p.comments {
		args = withComment(args)
	}
	return p.Pool.QueryRow(ctx, sql, args...)
}

// SendBatch sends a batch; each statement carries the batch span's traceparent.
func (p *Pool) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if p.comments {
		commentBatch(b)
	}
	return p.Pool.SendBatch(ctx, b)
}

// Begin starts a transaction whose statements carry the comment too.
// pgx.BeginFunc(ctx, pool, ...) calls it.
func (p *Pool) Begin(ctx context.Context) (pgx.Tx, error) {
	return p.BeginTx(ctx, pgx.TxOptions{})
}

// BeginTx is Begin with options.
func (p *Pool) BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error) {
	tx, err := p.Pool.BeginTx(ctx, opts)
	if err != nil || !p.comments {
		return tx, err
	}
	return commentedTx{tx}, nil
}

// commentedTx is a transaction whose statements carry the comment.
type commentedTx struct{ pgx.Tx }

func (tx commentedTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return tx.Tx.Exec(ctx, sql, withComment(args)...)
}

func (tx commentedTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return tx.Tx.Query(ctx, sql, withComment(args)...)
}

func (tx commentedTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return tx.Tx.QueryRow(ctx, sql, withComment(args)...)
}

func (tx commentedTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	commentBatch(b)
	return tx.Tx.SendBatch(ctx, b)
}

// Begin starts a savepoint, a transaction of its own to the caller.
func (tx commentedTx) Begin(ctx context.Context) (pgx.Tx, error) {
	nested, err := tx.Tx.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return commentedTx{nested}, nil
}

// withComment puts the comment's rewriter first among a statement's
// arguments. pgx keeps only one rewriter, so one the caller passed first
// (pgx.NamedArgs) runs inside it.
func withComment(args []any) []any {
	if len(args) > 0 {
		if next, ok := args[0].(pgx.QueryRewriter); ok {
			return append([]any{traceComment{next: next}}, args[1:]...)
		}
	}
	return append([]any{traceComment{}}, args...)
}

func commentBatch(b *pgx.Batch) {
	for _, q := range b.QueuedQueries {
		q.Arguments = withComment(q.Arguments)
	}
}

// traceComment appends the traceparent of the span in ctx to the SQL text.
type traceComment struct{ next pgx.QueryRewriter }

// RewriteQuery is called by pgx with the context the query tracer returned.
func (c traceComment) RewriteQuery(ctx context.Context, conn *pgx.Conn, sql string, args []any) (string, []any, error) {
	if c.next != nil {
		var err error
		if sql, args, err = c.next.RewriteQuery(ctx, conn, sql, args); err != nil {
			return sql, args, err
		}
	}
	return appendComment(sql, trace.SpanContextFromContext(ctx)), args, nil
}

// appendComment returns sql with the sqlcommenter comment holding sc's
// traceparent, before any trailing semicolon. Without a valid span context
// there is nothing to point at; a statement that has a comment already is
// left alone, as the sqlcommenter format requires (a "--" or "/*" inside a
// string literal counts too: a missing comment is the safe mistake).
func appendComment(sql string, sc trace.SpanContext) string {
	if !sc.IsValid() || strings.Contains(sql, "--") || strings.Contains(sql, "/*") {
		return sql
	}
	statement := strings.TrimRight(sql, "; \t\r\n")
	if statement == "" {
		return sql
	}
	traceparent := "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-" + sc.TraceFlags().String()
	return statement + " /*" + commentPair("traceparent", traceparent) + "*/" + sql[len(statement):]
}

// commentPair serializes one key and value as the sqlcommenter format says:
// each URL-encoded (a space as %20), the value between single quotes, and a
// quote inside either escaped with a backslash (URL encoding leaves none).
func commentPair(key, value string) string {
	encode := func(s string) string {
		return strings.ReplaceAll(strings.ReplaceAll(url.QueryEscape(s), "+", "%20"), "'", `\'`)
	}
	return encode(key) + "='" + encode(value) + "'"
}
