package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// bcryptCost is bcrypt's lowest. A work factor slows the guessing of weak
// passwords; these are 32 random bytes, which no one guesses, and the
// collector pays the factor on every export it authenticates.
const bcryptCost = bcrypt.MinCost

// headerPrefix starts a .headers file: the value of
// OTEL_EXPORTER_OTLP_HEADERS, one header whose value the SDK percent-decodes
// (%20 is the space after Basic).
const headerPrefix = "Authorization=Basic%20"

// ensureCredentials keeps each client's <name>.headers while its line in
// collector.htpasswd accepts it, and gives the client a new password
// otherwise. collector.htpasswd is rewritten only when a line changed.
func ensureCredentials(dir string, out io.Writer, users []string) error {
	htPath := filepath.Join(dir, "collector.htpasswd")
	hashes := readHtpasswd(htPath)
	var lines []string
	for _, user := range users {
		path := filepath.Join(dir, user+".headers")
		password, err := readHeaders(path, user)
		if err == nil && bcrypt.CompareHashAndPassword([]byte(hashes[user]), []byte(password)) != nil {
			err = errors.New("collector.htpasswd does not accept it")
		}
		if err == nil {
			report(out, path, true, nil)
			lines = append(lines, user+":"+hashes[user])
		} else {
			why := err
			password = rand.Text() + rand.Text() // 52 base32 characters, 260 random bits
			hash, err := bcrypt.GenerateFromPassword([]byte(password), bcryptCost)
			if err != nil {
				return err
			}
			if err := writeFile(path, []byte(headerValue(user, password)), 0o600); err != nil {
				return err
			}
			report(out, path, false, why)
			lines = append(lines, user+":"+string(hash))
		}
		if err := ensureEnvFile(dir, out, user, headerValue(user, password)); err != nil {
			return err
		}
	}

	content := []byte(strings.Join(lines, "\n") + "\n")
	old, err := os.ReadFile(htPath)
	if err == nil && bytes.Equal(old, content) {
		report(out, htPath, true, nil)
		return nil
	}
	if err == nil {
		err = errors.New("a credential changed")
	}
	if err := writeFile(htPath, content, 0o600); err != nil {
		return err
	}
	report(out, htPath, false, err)
	return nil
}

// ensureEnvFile writes user's credential as the one variable it sets, for
// compose's env_file (KEY=VALUE lines; single quotes keep the value as it is).
func ensureEnvFile(dir string, out io.Writer, user, headers string) error {
	path := filepath.Join(dir, user+".env")
	content := []byte("OTEL_EXPORTER_OTLP_HEADERS='" + headers + "'\n")
	old, err := os.ReadFile(path)
	if err == nil && bytes.Equal(old, content) {
		report(out, path, true, nil)
		return nil
	}
	if err == nil {
		err = errors.New("the credential changed")
	}
	if werr := writeFile(path, content, 0o600); werr != nil {
		return werr
	}
	report(out, path, false, err)
	return nil
}

// headerValue is what OTEL_EXPORTER_OTLP_HEADERS must hold for the
// collector's basicauth to accept user.
func headerValue(user, password string) string {
	return headerPrefix + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// readHeaders returns the password of user's .headers file. Its errors never
// quote the file.
func readHeaders(path, user string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	encoded, ok := strings.CutPrefix(string(raw), headerPrefix)
	if !ok {
		return "", fmt.Errorf("%s does not start with %s", filepath.Base(path), headerPrefix)
	}
	decoded, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		return "", fmt.Errorf("%s: the credential is not base64", filepath.Base(path))
	}
	name, password, ok := strings.Cut(string(decoded), ":")
	if !ok || name != user || password == "" {
		return "", fmt.Errorf("%s is not a credential of %s", filepath.Base(path), user)
	}
	return password, nil
}

// readHtpasswd returns the bcrypt hash of each user of an htpasswd file; a
// missing or unreadable file has none.
func readHtpasswd(path string) map[string]string {
	hashes := map[string]string{}
	raw, err := os.ReadFile(path)
	if err != nil {
		return hashes
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if user, hash, ok := strings.Cut(line, ":"); ok {
			hashes[user] = hash
		}
	}
	return hashes
}
