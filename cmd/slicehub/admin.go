package main

import (
	"github.com/slicehub/slicehub/admin"
	"github.com/slicehub/slicehub/gateway"
)

// startAdmin adds the admin JSON API (/admin/api/: status, slices, pool,
// users; see package admin) to the gateway's /admin router, behind its
// admin guard. It must run before the gateway serves.
func (m *Main) startAdmin() {
	admin.Register(m.Gateway.Admin(), admin.Deps{
		Store: m.DB, Pool: m.Scheduler, Routes: m.Routes,
		UserKey: gateway.LocalsUserID, KeyKey: gateway.LocalsAdminKeyID,
		Logger: m.Log,
	})
}
