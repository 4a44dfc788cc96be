package postgres

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/slicehub/slicehub"
)

// The telemetry store: time series of slices and nodes, and alerts (see
// package telemetry). Samples are written in one batch per collection, so a
// collection over hundreds of slices costs one round trip.

// InsertSliceSamples stores one collection's slice samples. A repeated
// (slice, time) pair is ignored: a retried write is harmless.
func (db *DB) InsertSliceSamples(ctx context.Context, samples []slicehub.SliceSample) error {
	const op = "postgres.insert_slice_samples"
	if len(samples) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, s := range samples {
		b.Queue(`INSERT INTO slice_samples (slice_id, at, alloc_id, node_id, memory_bytes, memory_max_bytes, cpu_percent, db_bytes, wa_state, healthy, contacts, notes)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING`,
			s.SliceID, s.At, s.AllocID, s.NodeID, s.MemoryBytes, s.MemoryMaxBytes, s.CPUPercent, s.DBBytes, s.WAState, s.Healthy, s.Contacts, s.Notes)
	}
	if err := db.Pool.SendBatch(ctx, b).Close(); err != nil {
		return slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	return nil
}

// InsertNodeSamples stores one collection's node samples.
func (db *DB) InsertNodeSamples(ctx context.Context, samples []slicehub.NodeSample) error {
	const op = "postgres.insert_node_samples"
	if len(samples) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, s := range samples {
		b.Queue(`INSERT INTO node_samples (node_id, at, name, memory_used, memory_total, cpu_percent, disk_used, disk_total)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING`,
			s.NodeID, s.At, s.Name, s.MemoryUsed, s.MemoryTotal, s.CPUPercent, s.DiskUsed, s.DiskTotal)
	}
	if err := db.Pool.SendBatch(ctx, b).Close(); err != nil {
		return slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	return nil
}

// PruneTelemetry deletes samples taken before before and alerts resolved
// before it; active alerts are kept however old.
func (db *DB) PruneTelemetry(ctx context.Context, before time.Time) (int64, error) {
	const op = "postgres.prune_telemetry"
	var n int64
	for _, q := range []string{
		`DELETE FROM slice_samples WHERE at < $1`,
		`DELETE FROM node_samples WHERE at < $1`,
		`DELETE FROM alerts WHERE resolved_at < $1`,
	} {
		tag, err := db.Pool.Exec(ctx, q, before)
		if err != nil {
			return n, slicehub.Wrap(op, slicehub.KindUnavailable, err)
		}
		n += tag.RowsAffected()
	}
	return n, nil
}

const sliceSampleCols = `slice_id, at, alloc_id, node_id, memory_bytes, memory_max_bytes, cpu_percent, db_bytes, wa_state, healthy, contacts, notes`

func scanSliceSamples(rows pgx.Rows) ([]slicehub.SliceSample, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (slicehub.SliceSample, error) {
		var s slicehub.SliceSample
		err := r.Scan(&s.SliceID, &s.At, &s.AllocID, &s.NodeID, &s.MemoryBytes, &s.MemoryMaxBytes, &s.CPUPercent, &s.DBBytes, &s.WAState, &s.Healthy, &s.Contacts, &s.Notes)
		return s, err
	})
}

// LatestSlices returns the newest sample of every slice sampled since
// since, by slice id: the dashboard's slice grid.
func (db *DB) LatestSlices(ctx context.Context, since time.Time) ([]slicehub.SliceSample, error) {
	const op = "postgres.latest_slices"
	rows, err := db.Pool.Query(ctx, `SELECT DISTINCT ON (slice_id) `+sliceSampleCols+`
		FROM slice_samples WHERE at >= $1 ORDER BY slice_id, at DESC`, since)
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	out, err := scanSliceSamples(rows)
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	return out, nil
}

// SliceSeries returns one slice's samples since since, oldest first: its
// sparklines.
func (db *DB) SliceSeries(ctx context.Context, sliceID int64, since time.Time) ([]slicehub.SliceSample, error) {
	const op = "postgres.slice_series"
	rows, err := db.Pool.Query(ctx, `SELECT `+sliceSampleCols+`
		FROM slice_samples WHERE slice_id = $1 AND at >= $2 ORDER BY at`, sliceID, since)
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	out, err := scanSliceSamples(rows)
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	return out, nil
}

// NodeSeries returns every node's samples since since, oldest first (group
// by NodeID for per-node bars and sparklines).
func (db *DB) NodeSeries(ctx context.Context, since time.Time) ([]slicehub.NodeSample, error) {
	const op = "postgres.node_series"
	rows, err := db.Pool.Query(ctx, `SELECT node_id, at, name, memory_used, memory_total, cpu_percent, disk_used, disk_total
		FROM node_samples WHERE at >= $1 ORDER BY at, node_id`, since)
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (slicehub.NodeSample, error) {
		var s slicehub.NodeSample
		err := r.Scan(&s.NodeID, &s.At, &s.Name, &s.MemoryUsed, &s.MemoryTotal, &s.CPUPercent, &s.DiskUsed, &s.DiskTotal)
		return s, err
	})
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	return out, nil
}

// FireAlert inserts an active alert unless one of the same rule and subject
// is active already; the partial unique index alerts_active decides, so two
// callers racing cannot both fire.
func (db *DB) FireAlert(ctx context.Context, a slicehub.Alert) (bool, error) {
	const op = "postgres.fire_alert"
	tag, err := db.Pool.Exec(ctx, `INSERT INTO alerts (rule, subject, message, fired_at, last_value)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (rule, subject) WHERE resolved_at IS NULL DO NOTHING`,
		a.Rule, a.Subject, a.Message, a.FiredAt, a.LastValue)
	if err != nil {
		return false, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	if tag.RowsAffected() == 0 {
		// Still active: keep its value current for the banner.
		_, err = db.Pool.Exec(ctx, `UPDATE alerts SET last_value = $3 WHERE rule = $1 AND subject = $2 AND resolved_at IS NULL`,
			a.Rule, a.Subject, a.LastValue)
		if err != nil {
			return false, slicehub.Wrap(op, slicehub.KindUnavailable, err)
		}
		return false, nil
	}
	return true, nil
}

const alertCols = `id, rule, subject, message, fired_at, resolved_at, last_value`

func scanAlert(r pgx.Row) (slicehub.Alert, error) {
	var a slicehub.Alert
	err := r.Scan(&a.ID, &a.Rule, &a.Subject, &a.Message, &a.FiredAt, &a.ResolvedAt, &a.LastValue)
	return a, err
}

// ResolveAlert ends the active alert of rule and subject.
func (db *DB) ResolveAlert(ctx context.Context, rule, subject string, at time.Time, lastValue float64) (slicehub.Alert, bool, error) {
	const op = "postgres.resolve_alert"
	a, err := scanAlert(db.Pool.QueryRow(ctx, `UPDATE alerts SET resolved_at = $3, last_value = $4
		WHERE rule = $1 AND subject = $2 AND resolved_at IS NULL RETURNING `+alertCols, rule, subject, at, lastValue))
	if errors.Is(err, pgx.ErrNoRows) {
		return slicehub.Alert{}, false, nil
	}
	if err != nil {
		return slicehub.Alert{}, false, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	return a, true, nil
}

// ActiveAlerts lists the alerts not resolved yet, oldest first: the
// dashboard's banner.
func (db *DB) ActiveAlerts(ctx context.Context) ([]slicehub.Alert, error) {
	const op = "postgres.active_alerts"
	rows, err := db.Pool.Query(ctx, `SELECT `+alertCols+` FROM alerts WHERE resolved_at IS NULL ORDER BY fired_at, id`)
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (slicehub.Alert, error) { return scanAlert(r) })
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	return out, nil
}

// DatabaseSizes returns the size in bytes of each slice's database, from
// the catalog of this server: no connection to the slice databases. A
// database this role may not measure (no CONNECT) is left out.
func (db *DB) DatabaseSizes(ctx context.Context, ids []int64) (map[int64]int64, error) {
	const op = "postgres.database_sizes"
	names := make([]string, len(ids))
	byName := make(map[string]int64, len(ids))
	for i, id := range ids {
		names[i] = slicehub.DatabaseName(id)
		byName[names[i]] = id
	}
	rows, err := db.Pool.Query(ctx, `SELECT datname, pg_database_size(oid) FROM pg_database
		WHERE datname = ANY($1) AND has_database_privilege(oid, 'CONNECT')`, names)
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	out := map[int64]int64{}
	var name string
	var size int64
	_, err = pgx.ForEachRow(rows, []any{&name, &size}, func() error {
		out[byName[name]] = size
		return nil
	})
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindUnavailable, err)
	}
	return out, nil
}

// CRMCounts returns the rows of each slice CRM's contacts and notes, by
// slice id, from PostgreSQL's statistics (pg_stat_user_tables.n_live_tup)
// rather than count(*): a catalog read per slice instead of a scan of
// tables that only grow, every collection. The figures are estimates,
// current to the last transaction the statistics saw, which is what a
// dashboard needs. The statistics are per database, so this opens a short
// connection to each slice's database, a few at a time; a slice whose
// database cannot be read is left out.
func (db *DB) CRMCounts(ctx context.Context, ids []int64) (map[int64]slicehub.CRMCount, error) {
	out := make(map[int64]slicehub.CRMCount, len(ids))
	var mu sync.Mutex
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := db.crmCount(ctx, id)
			if err != nil {
				db.log.Debug("no CRM counts for a slice", "slice_id", id, "err", err)
				return
			}
			mu.Lock()
			out[id] = c
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out, ctx.Err()
}

func (db *DB) crmCount(ctx context.Context, id int64) (slicehub.CRMCount, error) {
	var c slicehub.CRMCount
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// The slice owns this database: read it as the monitoring role, with
	// every name qualified (see monitor.go).
	conn, err := db.monitorConn(ctx, id)
	if err != nil {
		return c, err
	}
	defer conn.Close(context.Background())
	err = conn.QueryRow(ctx, `SELECT
		coalesce(pg_catalog.sum(n_live_tup) FILTER (WHERE relname OPERATOR(pg_catalog.=) 'contacts'), 0)::pg_catalog.int8,
		coalesce(pg_catalog.sum(n_live_tup) FILTER (WHERE relname OPERATOR(pg_catalog.=) 'notes'), 0)::pg_catalog.int8
		FROM pg_catalog.pg_stat_user_tables WHERE schemaname OPERATOR(pg_catalog.=) 'public'`).Scan(&c.Contacts, &c.Notes)
	return c, err
}
