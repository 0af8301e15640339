// Copyright 2026 The caddy-sse Authors
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
//     http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

package check

// The probe: one request as a client would send it, over the protocol
// asked for, and a recording of the response: its header, every read of
// its body with the time it returned, and what ended it.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/caddy-sse/caddy-sse/internal/stream"
)

// Read is one read of the body that returned bytes.
type Read struct {
	At   time.Duration // since the request was sent
	Data []byte
}

// Recording is what the client saw of one response.
type Recording struct {
	Proto    string // HTTP/1.1, HTTP/2.0, HTTP/3.0
	Status   int    // 0 when the client rejected the response
	Header   http.Header
	HeaderAt time.Duration // since the request was sent
	Reads    []Read
	// Rejected is why the client refused the response, when it did (an
	// HTTP/3 client refuses hop-by-hop fields).
	Rejected error
	// BodyRead reports whether the body was read; it is not when the
	// status or type already fail an EventSource.
	BodyRead bool
	// Err is what ended the body: io.EOF for a clean end, nil when it
	// was still open when the check stopped.
	Err   error
	EndAt time.Duration
}

// probe sends the request of o and records the response until it ends or
// o.For has passed since the request.
func probe(ctx context.Context, o Options) (*Recording, error) {
	ctx, cancel := context.WithTimeout(ctx, o.For)
	defer cancel()
	req, err := newRequest(ctx, o)
	if err != nil {
		return nil, err
	}
	client, closeClient := newClient(o)
	defer closeClient()
	start := time.Now()
	res, err := client.Do(req)
	if err != nil {
		return rejected(o, err, errors.Is(ctx.Err(), context.DeadlineExceeded))
	}
	defer res.Body.Close()
	rec := &Recording{
		Proto: res.Proto, Status: res.StatusCode, Header: res.Header,
		HeaderAt: time.Since(start),
	}
	if res.StatusCode != http.StatusOK || !stream.IsEventStream(res.Header.Get("Content-Type")) {
		rec.EndAt = rec.HeaderAt
		return rec, nil
	}
	rec.BodyRead = true
	readBody(ctx, res.Body, start, rec)
	return rec, nil
}

// readBody records every read of body until it ends or ctx is done.
func readBody(ctx context.Context, body io.Reader, start time.Time, rec *Recording) {
	buf := make([]byte, 64<<10)
	for {
		n, err := body.Read(buf)
		at := time.Since(start)
		if n > 0 {
			rec.Reads = append(rec.Reads, Read{At: at, Data: bytes.Clone(buf[:n])})
		}
		if err != nil {
			rec.EndAt = at
			if ctx.Err() == nil {
				rec.Err = err
			}
			return
		}
	}
}

// rejected turns an error of client.Do into a recording when the client
// refused the response for a hop-by-hop field, and into the error of a
// check that could not be made otherwise.
func rejected(o Options, err error, timedOut bool) (*Recording, error) {
	if timedOut {
		return nil, fmt.Errorf("no response header within %v", o.For)
	}
	if field := rejectedField(err); field != "" {
		return &Recording{Proto: "HTTP/3.0", Rejected: err}, nil
	}
	if ue, ok := err.(*url.Error); ok {
		err = ue.Err // without the method and the URL, which the report has
	}
	return nil, err
}

// rejectedField returns the hop-by-hop field for which quic-go's HTTP/3
// client rejected a response ("invalid header field name: "keep-alive""),
// or "".
func rejectedField(err error) string {
	msg := err.Error()
	for _, f := range hopByHopFields {
		if strings.Contains(msg, `invalid header field name: "`+strings.ToLower(f)+`"`) {
			return f
		}
	}
	return ""
}

// newRequest builds the request of o: an EventSource's GET by default.
func newRequest(ctx context.Context, o Options) (*http.Request, error) {
	var body io.Reader
	if o.Body != nil {
		body = bytes.NewReader(o.Body)
	}
	req, err := http.NewRequestWithContext(ctx, o.Method, o.URL, body)
	if err != nil {
		return nil, fmt.Errorf("invalid request: %v", err)
	}
	req.Header = DefaultHeader()
	if o.Body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, vs := range o.Header {
		req.Header[http.CanonicalHeaderKey(k)] = vs
	}
	if h := req.Header.Get("Host"); h != "" {
		req.Host = h
	}
	return req, nil
}

// newClient returns a client for o.HTTP, and a function that closes its
// connections. It follows no redirect: an EventSource does, but the
// check reports the hop that answered.
func newClient(o Options) (*http.Client, func()) {
	tlsConf := &tls.Config{InsecureSkipVerify: o.Insecure}
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if o.HTTP == "3" {
		tr := &http3.Transport{TLSClientConfig: tlsConf}
		return &http.Client{Transport: tr, CheckRedirect: noRedirect}, func() { tr.Close() }
	}
	tr := &http.Transport{
		Proxy:              http.ProxyFromEnvironment,
		TLSClientConfig:    tlsConf,
		DisableCompression: true, // Accept-Encoding is ours; the body is decoded by the analysis
		Protocols:          new(http.Protocols),
	}
	switch o.HTTP {
	case "1.1":
		tr.Protocols.SetHTTP1(true)
	case "2":
		tr.Protocols.SetHTTP2(true)
		tr.Protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge for http URLs
	default:
		tr.Protocols.SetHTTP1(true)
		tr.Protocols.SetHTTP2(true)
	}
	return &http.Client{Transport: tr, CheckRedirect: noRedirect}, tr.CloseIdleConnections
}

// isReset reports whether err is a reset of the connection or the
// stream, as opposed to a close.
func isReset(err error) bool {
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return false
	}
	msg := err.Error()
	for _, s := range []string{"connection reset", "stream error", "RST_STREAM", "GOAWAY", "canceled by remote", "Application error"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
