// Package config loads a service's typed configuration from environment
// variables, with defaults beside each field (go-envconfig tags), and makes
// every error name the variable at fault, not the Go field.
package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"reflect"
	"regexp"
	"strings"

	"github.com/sethvargo/go-envconfig"
)

// Load fills target, a pointer to a struct with `env:"NAME, default=..."`
// tags, from env.
func Load(ctx context.Context, env envconfig.Lookuper, target any) error {
	err := envconfig.ProcessWith(ctx, &envconfig.Config{Target: target, Lookuper: env})
	if err == nil {
		return nil
	}
	// go-envconfig prefixes errors with the field's name, and with the
	// names of the structs it is nested in; users know the variable.
	msg := err.Error()
	t := reflect.TypeOf(target)
	for {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		field, rest, ok := strings.Cut(msg, ": ")
		if !ok || t.Kind() != reflect.Struct {
			return err
		}
		f, ok := t.FieldByName(field)
		if !ok {
			return err
		}
		if name, _, _ := strings.Cut(f.Tag.Get("env"), ","); name != "" {
			return errors.New(name + ": " + rest)
		}
		t, msg = f.Type, rest // a struct of variables, such as an embedded one
	}
}

// CheckURL reports, naming the variable, a value that is not a URL with one
// of the schemes and a host.
func CheckURL(name, raw string, schemes ...string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%s: must be a URL with a host, like %s://host:port", name, schemes[0])
	}
	for _, s := range schemes {
		if u.Scheme == s {
			return nil
		}
	}
	return fmt.Errorf("%s: scheme must be %s", name, strings.Join(schemes, " or "))
}

// LogLevel is the LOG_LEVEL variable: debug, info, warn or error.
type LogLevel slog.Level

// EnvDecode parses the variable.
func (l *LogLevel) EnvDecode(val string) error {
	var lvl slog.Level
	switch strings.ToLower(val) {
	case "debug":
		lvl = slog.LevelDebug
	case "info":
		lvl = slog.LevelInfo
	case "warn", "warning":
		lvl = slog.LevelWarn
	case "error":
		lvl = slog.LevelError
	default:
		return fmt.Errorf("%q is not one of debug, info, warn, error", val)
	}
	*l = LogLevel(lvl)
	return nil
}

// Level makes a LogLevel a slog.Leveler.
func (l LogLevel) Level() slog.Level { return slog.Level(l) }

// mask replaces every secret Redact finds.
const mask = "xxxxx"

// Redact hides every secret a connection string can carry, so it can be
// logged: the password of the user info, and the value of each secret
// parameter (isSecret), in the URL's query or in the key=value form that
// libpq and pgx also accept ("host=db password=...").
func Redact(raw string) string {
	if !strings.Contains(raw, "://") && strings.Contains(raw, "=") {
		return redactKeywords(raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	// Parameter by parameter, not url.Values, to keep the order they were
	// written in.
	params := strings.Split(u.RawQuery, "&")
	for i, p := range params {
		name, _, hasValue := strings.Cut(p, "=")
		if key, err := url.QueryUnescape(name); hasValue && (err != nil || isSecret(key)) {
			params[i] = name + "=" + mask
		}
	}
	u.RawQuery = strings.Join(params, "&")
	return u.Redacted()
}

// keyword is one key=value pair of the libpq form; a value is either quoted,
// with backslash escapes, or runs to the next space.
var keyword = regexp.MustCompile(`([A-Za-z_]+)(\s*=\s*)('(?:[^'\\]|\\.)*'?|(?:[^\s\\]|\\.)*)`)

func redactKeywords(raw string) string {
	return keyword.ReplaceAllStringFunc(raw, func(pair string) string {
		m := keyword.FindStringSubmatch(pair)
		if !isSecret(m[1]) {
			return pair
		}
		return m[1] + m[2] + mask
	})
}

// isSecret reports whether a connection parameter may hold a credential:
// any name with pass, pwd, secret, token, key or credential in it (password,
// sslpassword, passfile, sslkey, which pgx also accepts inline, api_key,
// access_token), and auth, which some Redis clients take for the password.
// A file path caught by this rule costs only a masked log field.
func isSecret(name string) bool {
	name = strings.ToLower(name)
	for _, part := range []string{"pass", "pwd", "secret", "token", "key", "credential"} {
		if strings.Contains(name, part) {
			return true
		}
	}
	return name == "auth"
}

// Backends are the connection URLs of orders and fulfillment, which share
// the same PostgreSQL, Redis and RabbitMQ. Embed it in a service's Config.
type Backends struct {
	DatabaseURL string `env:"DATABASE_URL, default=postgres://postgres:postgres@localhost:5432/orders?sslmode=disable"`
	RedisURL    string `env:"REDIS_URL, default=redis://localhost:6379/0"`
	AMQPURL     string `env:"AMQP_URL, default=amqp://guest:guest@localhost:5672/"`
}

// Check reports every URL that is not usable, naming its variable.
func (b Backends) Check() error {
	return errors.Join(
		CheckURL("DATABASE_URL", b.DatabaseURL, "postgres", "postgresql"),
		CheckURL("REDIS_URL", b.RedisURL, "redis", "rediss"),
		CheckURL("AMQP_URL", b.AMQPURL, "amqp", "amqps"),
	)
}

// LogAttrs describes the URLs for a log line, every secret masked (Redact).
func (b Backends) LogAttrs() []slog.Attr {
	return []slog.Attr{
		slog.String("database_url", Redact(b.DatabaseURL)),
		slog.String("redis_url", Redact(b.RedisURL)),
		slog.String("amqp_url", Redact(b.AMQPURL)),
	}
}
