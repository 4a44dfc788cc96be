package gateway

import (
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/slicehub/slicehub"
)

// benchSlice is the cheapest possible slice: a fasthttp server answering a
// 17-byte JSON body, as in the baseline of docs/architecture.md.
func benchSlice(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"status":"ok"}` + "\n ")
	}}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String()
}

// BenchmarkProxy measures a proxied request end to end on loopback: client
// -> gateway -> slice and back, with the session and route caches warm.
// Compare with BenchmarkDirect for the gateway's own cost.
func BenchmarkProxy(b *testing.B) {
	e := newEnv(b)
	u := e.signup("bench@example.com")
	addr := benchSlice(b)
	e.slices.set(u.id, slicehub.Slice{ID: 99, State: slicehub.StateAssigned, UserID: u.id})
	e.routes.set(99, addr)
	e.srv.Invalidate(u.id)
	cookie := slicehub.SessionCookie + "=" + e.sessionToken(u)
	run(b, e.host, "/api/status/state", cookie)
}

// BenchmarkDirect is the same client against the slice itself.
func BenchmarkDirect(b *testing.B) {
	run(b, benchSlice(b), "/api/status/state", "")
}

func run(b *testing.B, addr, path, cookie string) {
	client := &fasthttp.HostClient{Addr: addr, MaxConns: 64}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		for pb.Next() {
			req.Reset()
			req.SetRequestURI("http://" + addr + path)
			if cookie != "" {
				req.Header.Set("Cookie", cookie)
			}
			if err := client.DoTimeout(req, resp, 5*time.Second); err != nil || resp.StatusCode() != 200 {
				b.Fatalf("%v, status %d: %s", err, resp.StatusCode(), resp.Body())
			}
		}
	})
}
