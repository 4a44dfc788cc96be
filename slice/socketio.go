package slice

import (
	"log/slog"
	"net/http"

	"github.com/zishang520/socket.io/servers/socket/v3"

	"github.com/slicehub/slicehub"
)

// Sockets is the slice's socket.io server (Engine.IO v4, polling and
// WebSocket). The gateway token is checked by Handler for every HTTP request
// that reaches it, the handshake, each long-poll and the WebSocket upgrade,
// so nothing here needs to check it again.
//
// Events:
//
//	server -> client  "hello"  {"slice_id"}        once, on connection
//	server -> client  "state"  {"state"}            on connection, then on every WhatsApp state change
//	server -> client  "qr"     {"seq","qr"}         on connection while a QR code is shown, then on every new code;
//	                                                "qr" is the payload ("" if the page hides it: GET /api/status/qr)
//	server -> client  "contact" {contact}         when a contact is created (every tab of the user sees it)
//	server -> client  "note"    {note}            when a note is added
//	server -> client  "message" {message}         a message new to the slice (incoming, sent, imported live)
//	server -> client  "message_status" {"id","chat_id","wa_id","status"}  a message's status moved
//	server -> client  "chat"    {chat}            a chat's last message, name or unread count changed
//	server -> client  "history" {"done","chats","messages"}  the history import is complete
//	client -> server  "whoami" (ack) -> {"slice_id","user_id"}
type Sockets struct {
	io      *socket.Server
	sliceID string
	state   StateSource
	log     *slog.Logger
	cancel  func()

	qr       QRSource // nil: no QR events
	cancelQR func()
}

// qrEvent is the payload of the "qr" event.
func qrEvent(c QRCode) map[string]any { return map[string]any{"seq": c.Seq, "qr": c.Payload} }

// SetQR subscribes the server to QR code changes. Call it before serving.
func (s *Sockets) SetQR(q QRSource) {
	s.qr = q
	s.cancelQR = q.SubscribeQR(func(c QRCode) {
		if err := s.io.Sockets().Emit("qr", qrEvent(c)); err != nil {
			s.log.Warn("broadcasting the QR code failed", "err", err)
		}
	})
}

// NewSockets builds the server and subscribes it to state changes.
func NewSockets(sliceID string, state StateSource, log *slog.Logger) *Sockets {
	opts := socket.DefaultServerOptions()
	// The browser gets its client library from the SPA bundle, not from a
	// slice; serving it would only widen the surface.
	opts.SetServeClient(false)
	// Bound what one message may cost the slice.
	opts.SetMaxHttpBufferSize(1 << 20)
	s := &Sockets{
		io:      socket.NewServer(nil, opts),
		sliceID: sliceID,
		state:   state,
		log:     log.With("component", "socketio"),
	}
	s.io.On("connection", func(args ...any) {
		if len(args) == 0 {
			return
		}
		if c, ok := args[0].(*socket.Socket); ok {
			s.onConnection(c)
		}
	})
	// One subscription for the whole server, broadcast to every socket.
	s.cancel = state.Subscribe(func(st string) {
		if err := s.io.Sockets().Emit("state", map[string]string{"state": st}); err != nil {
			s.log.Warn("broadcasting the state failed", "err", err)
		}
	})
	return s
}

func (s *Sockets) onConnection(c *socket.Socket) {
	userID := c.Handshake().Headers.Header().Get(slicehub.HeaderUserID)
	log := s.log.With("socket", string(c.Id()), "user_id", userID)
	log.Debug("connected")
	if err := c.Emit("hello", map[string]string{"slice_id": s.sliceID}); err != nil {
		log.Warn("emitting hello failed", "err", err)
	}
	if err := c.Emit("state", map[string]string{"state": s.state.State()}); err != nil {
		log.Warn("emitting the state failed", "err", err)
	}
	if s.qr != nil {
		if code, ok := s.qr.QR(); ok {
			if err := c.Emit("qr", qrEvent(code)); err != nil {
				log.Warn("emitting the QR code failed", "err", err)
			}
		}
	}
	c.On("whoami", func(args ...any) {
		// The ack, if the client asked for one, is the last argument.
		if len(args) == 0 {
			return
		}
		ack, ok := args[len(args)-1].(socket.Ack)
		if !ok {
			return
		}
		ack([]any{Identity{SliceID: s.sliceID, UserID: userID}}, nil)
	})
	c.On("disconnect", func(args ...any) {
		log.Debug("disconnected", "reason", args)
	})
}

// Emit pushes an event to every client of the slice: a slice serves one
// tenant, so every socket is one of the user's tabs.
func (s *Sockets) Emit(event string, v any) {
	if err := s.io.Sockets().Emit(event, v); err != nil {
		s.log.Warn("broadcasting failed", "event", event, "err", err)
	}
}

// Handler is the http.Handler to mount under /socket.io/.
func (s *Sockets) Handler() http.Handler { return s.io.ServeHandler(nil) }

// Close disconnects every client and stops listening to state changes.
// http.Server.Shutdown does not wait for hijacked WebSocket connections, so
// this is what actually tells the clients goodbye.
func (s *Sockets) Close() {
	s.cancel()
	if s.cancelQR != nil {
		s.cancelQR()
	}
	done := make(chan struct{})
	s.io.Close(func(error) { close(done) })
	<-done
}
