package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hotpatch/hotpatch/server/api"
	"github.com/hotpatch/hotpatch/server/pki"
)

// Bounds of answers and of the time calls may take.
const (
	MaxPatchFile   = 64 << 20 // bytes of a patch file, sent or received
	MaxJSON        = 16 << 20 // bytes of a JSON answer
	maxErrorBody   = 64 << 10 // bytes read of a non-2xx answer
	maxErrorLine   = 300      // characters kept of a non-JSON error body
	DefaultTimeout = 30 * time.Second
	// transferTimeout bounds Publish and PatchFile.
	transferTimeout = 10 * time.Minute
	// syncSlack is how much longer than its wait a long-poll may take.
	syncSlack = 10 * time.Second
)

// Client talks to one hotpatch-server. It is safe for concurrent use.
type Client struct {
	base    *url.URL
	http    *http.Client
	token   string
	cert    []byte
	key     []byte
	timeout time.Duration
}

// Option configures a Client.
type Option func(*Client)

// WithToken makes the client send token as its admin bearer token.
func WithToken(token string) Option {
	return func(c *Client) { c.token = strings.TrimSpace(token) }
}

// WithClientCert makes the client present a device certificate (PEM) and
// its private key (PEM) in the TLS handshake.
func WithClientCert(certPEM, keyPEM []byte) Option {
	return func(c *Client) { c.cert, c.key = certPEM, keyPEM }
}

// WithTimeout bounds each ordinary call (not Sync's long-poll, nor file
// transfers) to d instead of DefaultTimeout.
func WithTimeout(d time.Duration) Option {
	return func(c *Client) {
		if d > 0 {
			c.timeout = d
		}
	}
}

// New returns a client of the server at serverURL (https://HOST:PORT),
// trusting the CA certificates in caPEM (the server's ca.pem) and nothing
// else.
func New(serverURL string, caPEM []byte, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimSpace(serverURL))
	if err != nil {
		return nil, fmt.Errorf("client: server URL %q: %w", serverURL, err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("client: server URL %q is not https://HOST[:PORT]; the server speaks HTTPS only", serverURL)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("client: server URL %q must have no user, query or fragment", serverURL)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	c := &Client{base: u, timeout: DefaultTimeout}
	for _, o := range opts {
		o(c)
	}
	tlsConf, err := pki.ClientTLS(caPEM, c.cert, c.key)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	c.http = &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           dialer.DialContext,
			TLSClientConfig:       tlsConf,
			TLSHandshakeTimeout:   10 * time.Second,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          16,
			IdleConnTimeout:       90 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
		// A redirect is answered as it is (a non-2xx *Error): the token
		// goes to the server named and nowhere else.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, nil
}

// URL returns the server's base URL.
func (c *Client) URL() string { return c.base.String() }

// CloseIdleConnections closes the connections the client keeps for reuse.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// request is one call to the server.
type request struct {
	method      string
	path        string // an api.Path…, with escaped parameters
	query       url.Values
	body        []byte
	contentType string
	timeout     time.Duration // 0: the client's timeout
	limit       int64         // bound of the answer's body; 0: MaxJSON
}

// do sends r and returns the body of a 2xx answer.
func (c *Client) do(ctx context.Context, r request) ([]byte, error) {
	timeout := r.timeout
	if timeout == 0 {
		timeout = c.timeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := c.base.String() + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "hotpatch-client")
	if c.token != "" {
		req.Header.Set(api.HeaderAuthorization, "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, readError(resp)
	}
	limit := r.limit
	if limit == 0 {
		limit = MaxJSON
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("client: reading the answer to %s %s: %w", r.method, r.path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("client: the answer to %s %s is larger than %d bytes: %w", r.method, r.path, limit, ErrTooLarge)
	}
	return data, nil
}

// readError turns a non-2xx answer into an *Error: the message of its
// api.Error body, else the first line of the body, else the status text.
func readError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &Error{Status: resp.StatusCode}
	var ae api.Error
	if json.Unmarshal(data, &ae) == nil && strings.TrimSpace(ae.Error) != "" {
		e.Message = oneLine(ae.Error)
	} else {
		line, _, _ := bufio.NewReader(bytes.NewReader(data)).ReadLine()
		e.Message = oneLine(strings.ToValidUTF8(string(line), "?"))
	}
	if e.Message == "" {
		e.Message = statusMessage(resp.StatusCode)
	}
	return e
}

// oneLine trims s to its first line, without control characters, at most
// maxErrorLine characters.
func oneLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.TrimSpace(s))
	if r := []rune(s); len(r) > maxErrorLine {
		s = string(r[:maxErrorLine]) + "…"
	}
	return s
}

// getJSON decodes the answer to GET path?query into out.
func (c *Client) getJSON(ctx context.Context, path string, query url.Values, out any) error {
	data, err := c.do(ctx, request{method: http.MethodGet, path: path, query: query})
	if err != nil {
		return err
	}
	return decode(http.MethodGet, path, data, out)
}

// postJSON sends in as JSON (nothing when nil) and decodes the answer into
// out (ignored when nil).
func (c *Client) postJSON(ctx context.Context, path string, in, out any) error {
	r := request{method: http.MethodPost, path: path, body: []byte{}}
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("client: encoding %s: %w", path, err)
		}
		r.body, r.contentType = b, "application/json"
	}
	data, err := c.do(ctx, r)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	return decode(http.MethodPost, path, data, out)
}

func decode(method, path string, data []byte, out any) error {
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("client: decoding the answer to %s %s: %w", method, path, err)
	}
	return nil
}

// param escapes one path parameter; an empty one is refused before
// anything is sent.
func param(what, s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("client: empty %s", what)
	}
	return url.PathEscape(s), nil
}
