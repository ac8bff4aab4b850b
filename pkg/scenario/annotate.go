package scenario

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Grafana posts make chaos's switches to Grafana's annotations API: each
// becomes a mark on every dashboard that queries the "chaos" tag
// (deploy/grafana/dashboards), at the moment of the switch.
type Grafana struct {
	URL            string // http://localhost:3000
	User, Password string // basic auth; no user: none
}

// annotateTimeout bounds one annotation: a Grafana that hangs must not hold
// the schedule, or its stop, for long.
const annotateTimeout = 2 * time.Second

// String is the Grafana the annotations go to, without the password.
func (g *Grafana) String() string {
	if g == nil {
		return "none"
	}
	if g.User == "" {
		return g.URL
	}
	return g.URL + " as " + g.User
}

// Annotate posts one switch as an annotation tagged "chaos" and the
// scenario, with the text "chaos: <scenario> on" (or off).
func (g *Grafana) Annotate(ctx context.Context, e Event) error {
	body, err := json.Marshal(map[string]any{
		"time": e.Time.UnixMilli(),
		"tags": []string{"chaos", e.Scenario},
		"text": fmt.Sprintf("chaos: %s %s", e.Scenario, e.State()),
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, annotateTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(g.URL, "/")+"/api/annotations", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if g.User != "" {
		req.SetBasicAuth(g.User, g.Password)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		answer, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return fmt.Errorf("grafana annotations: %s: %s", resp.Status, bytes.TrimSpace(answer))
	}
	return nil
}
