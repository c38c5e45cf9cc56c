package server

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// The server's defences against requests without valid credentials: a
// cap on how many are served at once, a deadline on reading their
// bodies, and a limit on failed sign-ins per address. See the threat
// model in docs/server.md.

// failureLimiter counts failed authentications per source address over
// one-minute windows.
type failureLimiter struct {
	max  int
	mu   sync.Mutex
	seen map[string]*failureWindow
}

type failureWindow struct {
	start time.Time
	n     int
}

// blocked reports whether src used up its failures in the current window.
func (l *failureLimiter) blocked(src string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.seen[src]
	return w != nil && now.Sub(w.start) < time.Minute && w.n >= l.max
}

// fail counts one failure of src and returns the count in the window
// (the caller audits the first ones only: a flood must not flood the
// audit log too).
func (l *failureLimiter) fail(src string, now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = map[string]*failureWindow{}
	}
	if len(l.seen) > 100000 { // many addresses: forget the old windows
		for k, w := range l.seen {
			if now.Sub(w.start) >= time.Minute {
				delete(l.seen, k)
			}
		}
	}
	w := l.seen[src]
	if w == nil || now.Sub(w.start) >= time.Minute {
		w = &failureWindow{start: now}
		l.seen[src] = w
	}
	w.n++
	return w.n
}

// source is the address a request came from, without its port.
func source(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// unauthenticated wraps a handler reached without credentials: at most
// cfg.MaxUnauthenticated run at once (more are answered 503 at once,
// their connection closed), and each must send its body within
// cfg.BodyTimeout. A slow or flooding client thus holds a bounded number
// of the server's goroutines and descriptors, for a bounded time, and
// devices and admins, who authenticate, are served beside it.
func (s *Server) unauthenticated(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case s.unauth <- struct{}{}:
			defer func() { <-s.unauth }()
		default:
			// Read nothing more of this request: the server would
			// otherwise wait for the body it was promised before
			// answering.
			http.NewResponseController(w).SetReadDeadline(time.Now())
			w.Header().Set("Connection", "close")
			w.Header().Set("Retry-After", "5")
			writeError(w, http.StatusServiceUnavailable, "too many requests without credentials at once; retry later")
			return
		}
		rc := http.NewResponseController(w)
		rc.SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout))
		h.ServeHTTP(w, r)
	})
}

// authenticatedBodyTimeout is how long an authenticated request may take
// to send its body (a patch file of up to 64 MiB on a slow link).
const authenticatedBodyTimeout = 10 * time.Minute

// guard is the outermost handler. It sets the headers every answer
// carries: HSTS (the server speaks HTTPS only, so a browser should never
// try it over HTTP). And it gives every request with a body
// cfg.BodyTimeout to send it: until the request is authenticated, its
// body is a stranger's (an API request extends the deadline once its
// credentials check out). Without it, a request refused before its body
// was read would hold its connection while the server waits for the
// rest of the body it was promised.
func (s *Server) guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", "max-age=31536000")
		if r.ContentLength != 0 {
			http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout))
		}
		h.ServeHTTP(w, r)
	})
}
