//go:build bench || faults

package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// shot is one request of a load.
type shot struct {
	start   time.Time
	latency time.Duration
	status  int
	orderID string // when answered 201
	traceID string // from traceresponse, whatever the answer
}

func (s shot) ok() bool { return s.status == http.StatusCreated }

// drive posts orders at rate per second for d, order i with the body
// body(i), each with a tenant. It is an open model: request i is sent at its
// time whether or not earlier ones have been answered, so a slow suite shows
// as latency rather than as a slower load (coordinated omission).
func drive(s *stack, rate int, d time.Duration, body func(i int) string) []shot {
	client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 512}}
	var (
		mu    sync.Mutex
		wg    sync.WaitGroup
		shots []shot
	)
	interval := time.Second / time.Duration(rate)
	began := time.Now()
	for i := 0; time.Duration(i)*interval < d; i++ {
		time.Sleep(time.Until(began.Add(time.Duration(i) * interval)))
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodPost, s.gateway.URL()+"/api/orders", strings.NewReader(body(i)))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Tenant-ID", fmt.Sprintf("tenant-%d", i%8))
			sh := shot{start: time.Now()}
			resp, err := client.Do(req)
			sh.latency = time.Since(sh.start)
			if err == nil {
				sh.status = resp.StatusCode
				if parts := strings.Split(resp.Header.Get("traceresponse"), "-"); len(parts) == 4 {
					sh.traceID = parts[1]
				}
				var p placed
				if sh.ok() && json.NewDecoder(resp.Body).Decode(&p) == nil {
					sh.orderID = p.OrderID
				}
				resp.Body.Close()
			}
			mu.Lock()
			shots = append(shots, sh)
			mu.Unlock()
		})
	}
	wg.Wait()
	return shots
}

// quantile returns the q quantile of the shots' latencies.
func quantile(shots []shot, q float64) time.Duration {
	if len(shots) == 0 {
		return 0
	}
	l := make([]time.Duration, len(shots))
	for i, s := range shots {
		l[i] = s.latency
	}
	slices.Sort(l)
	return l[max(0, int(math.Ceil(q*float64(len(l))))-1)]
}

func processUsage(p *process) usage { return pidUsage(p.cmd.Process.Pid) }
