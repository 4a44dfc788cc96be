package main

import (
	"context"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/admin"
	"github.com/slicehub/slicehub/gateway"
	"github.com/slicehub/slicehub/postgres"
)

// startAdmin adds the admin JSON API (/admin/api/: status, slices, pool,
// users) and the HTML dashboard (/admin; see package admin) to the
// gateway's /admin router, behind its admin guard. It must run before the
// gateway serves. The dashboard reads telemetry from the tables the
// telemetry collector fills, whichever replica collects (AdminTelemetry,
// telemetry.go).
func (m *Main) startAdmin() {
	// A restore's dump goes to pg_restore as it arrives, not through memory.
	m.Gateway.StreamBody(fiber.MethodPost, admin.StreamsBody)
	admin.Register(m.Gateway.Admin(), admin.Deps{
		Store: m.DB, Pool: m.Scheduler, Routes: m.Routes,
		UserKey: gateway.LocalsUserID, KeyKey: gateway.LocalsAdminKeyID,
		Logger: m.Log,
		Web:    m.Gateway, Tokens: m.Scheduler, Events: auditLog{m.DB},
		Logs: m.Nomad, Backups: m.DB,
		Jobs:  m.Nomad,
		Audit: m.DB, Settings: m.DB,
		NomadURL: withScheme(m.Config.NomadAddr), ConsulURL: withScheme(m.Config.ConsulAddr),
		ConsulDC:  m.Config.Datacenter,
		Telemetry: m.AdminTelemetry(),
		Done:      m.closing,
	})
}

// withScheme turns CONSUL_HTTP_ADDR's host:port into a URL for a link.
func withScheme(addr string) string {
	if addr == "" || strings.Contains(addr, "://") {
		return addr
	}
	return "http://" + addr
}

// auditLog reads the newest slice_events of all slices for the dashboard's
// audit log, with the admin actions of admin_audit that are not slice
// transitions or notes (those are in slice_events already, and
// slicehub.AdminActions says which actions they are): user disables, pool
// changes, logs read, backups and restores. Those come with a negative id
// (the two tables number their rows apart), no from state, the action as
// the change and the target and details as the reason. It lives here
// rather than in package postgres so that the dashboard could be added
// without touching the store.
type auditLog struct{ db *postgres.DB }

func (l auditLog) RecentSliceEvents(ctx context.Context, limit int) ([]slicehub.SliceEvent, error) {
	const op = "admin.audit_log"
	rows, err := l.db.Pool.Query(ctx, `(SELECT id, slice_id, at, actor, coalesce(from_state, '') AS from_state, to_state, reason
			FROM slice_events ORDER BY id DESC LIMIT $1)
		UNION ALL
		(SELECT -id, CASE WHEN target LIKE 'slice:%' THEN substr(target, 7)::bigint ELSE 0 END, at, actor, '', action,
			trim(target || ' ' || CASE WHEN detail = '{}' THEN '' ELSE detail::text END)
			FROM admin_audit WHERE action <> ALL($2) ORDER BY id DESC LIMIT $1)
		ORDER BY at DESC, id DESC LIMIT $1`, limit, slicehub.EventAdminActions())
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	defer rows.Close()
	var out []slicehub.SliceEvent
	for rows.Next() {
		var e slicehub.SliceEvent
		var from, to string
		if err := rows.Scan(&e.ID, &e.SliceID, &e.At, &e.Actor, &from, &to, &e.Reason); err != nil {
			return nil, slicehub.Wrap(op, slicehub.KindInternal, err)
		}
		e.From, e.To = slicehub.SliceState(from), slicehub.SliceState(to)
		out = append(out, e)
	}
	return out, slicehub.Wrap(op, slicehub.KindInternal, rows.Err())
}
