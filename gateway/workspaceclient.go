package gateway

import (
	"bytes"
	"io"
	"net/http"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/slicehub/slicehub/gateway/accounts"
	"github.com/slicehub/slicehub/gateway/proxy"
	"github.com/slicehub/slicehub/sliceclient"
)

// sliceClient asks sess's own slice on the gateway's behalf (package
// sliceclient), through the same route, token and connection pool as the
// proxy, as the session's user.
func (s *Server) sliceClient(sess *accounts.Session) (sliceclient.Client, sliceclient.Slice, error) {
	route, token, err := s.target(sess)
	if err != nil {
		return sliceclient.Client{}, sliceclient.Slice{}, err
	}
	up := s.upstreams.Get(route.Addr, time.Now())
	c := sliceclient.Client{HTTP: upstreamDoer{up.HC}, Timeout: min(s.cfg.ProxyTimeout, sliceclient.DefaultTimeout)}
	return c, sliceclient.Slice{ID: sess.SliceID, Addr: route.Addr, Token: string(token), UserID: sess.User.ID}, nil
}

// upstreamDoer sends a sliceclient request over the proxy's pool to one
// slice. It reads a streamed body up to sliceclient.MaxQRBytes and one byte
// more, which is enough for the client to tell an answer over its limit.
type upstreamDoer struct{ hc *fasthttp.HostClient }

func (d upstreamDoer) Do(r *http.Request) (*http.Response, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(r.URL.String())
	req.Header.SetMethod(r.Method)
	for k, vs := range r.Header {
		for _, v := range vs {
			req.Header.Set(k, v)
		}
	}
	deadline, ok := r.Context().Deadline()
	if !ok {
		deadline = time.Now().Add(sliceclient.DefaultTimeout)
	}
	if err := d.hc.DoDeadline(req, resp, deadline); err != nil {
		return nil, proxy.ClientError(err) // the proxy's answer to it, for the pages to give
	}
	var body []byte
	if resp.IsBodyStream() {
		var err error
		body, err = io.ReadAll(io.LimitReader(resp.BodyStream(), sliceclient.MaxQRBytes+1))
		if err != nil {
			return nil, proxy.ClientError(err)
		}
	} else {
		body = bytes.Clone(resp.Body())
	}
	h := make(http.Header)
	resp.Header.VisitAll(func(k, v []byte) { h.Add(string(k), string(v)) })
	return &http.Response{StatusCode: resp.StatusCode(), Header: h, Body: io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)), Request: r}, nil
}
