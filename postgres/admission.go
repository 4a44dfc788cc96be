package postgres

import (
	"context"
	"errors"
	"net"

	"github.com/jackc/pgx/v5"

	"github.com/slicehub/slicehub"
)

// hostOf is the host part of a recorded alloc_addr ("10.0.0.7:23145"):
// the node's address, since slices advertise the host's address. Two Nomad
// clients on one machine share it, which is right for admission: memory is
// the machine's.
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// AdmitPairing is the pairing gate (slicehub.PairingAsk): under a per-host
// advisory lock it gives back expired permits, renews, converts or gives
// back the slice's own, grants waiting slices in the order they asked while
// the host's caps allow, and answers the slice's permit or its place in line.
//
// The slice's word ("importing") is trusted for one bounded grant only: a
// slice's row outlives its permit ('idle') and remembers whether the link
// may still take an import permit (import_due). It may once per allocation,
// and again only after a QR code is granted (a new pairing). So a slice that
// reports importing forever holds one import permit for at most ImportHold.
func (db *DB) AdmitPairing(ctx context.Context, a slicehub.PairingAsk) (slicehub.Permit, error) {
	const op = "postgres.admit_pairing"
	var out slicehub.Permit
	err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		var addr, alloc string
		if err := tx.QueryRow(ctx, `SELECT coalesce(alloc_addr, ''), coalesce(alloc_id, '') FROM slices WHERE id = $1`, a.SliceID).Scan(&addr, &alloc); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return slicehub.Errorf(op, slicehub.KindNotFound, "no_slice", "no such slice")
			}
			return err
		}
		host := hostOf(addr)
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('slicehub.admission:' || $1, 0))`, host); err != nil {
			return err
		}
		// A slice moved to another host keeps no permit on the old one, and
		// a new allocation is a new link: it may import once again.
		if _, err := tx.Exec(ctx, `DELETE FROM admission_permits WHERE slice_id = $1 AND (host <> $2 OR alloc_id <> $3)`,
			a.SliceID, host, alloc); err != nil {
			return err
		}
		// Expired permits are given back; the row stays, remembering the link.
		if _, err := tx.Exec(ctx, `UPDATE admission_permits SET kind = 'idle' WHERE host = $1 AND (
				(kind IN ('waiting', 'pairing') AND seen_at < $2::timestamptz - make_interval(secs => $3))
				OR (kind = 'pairing' AND granted_at < $2::timestamptz - make_interval(secs => $4))
				OR (kind = 'import' AND granted_at < $2::timestamptz - make_interval(secs => $5)))`,
			host, a.Now, a.TTL.Seconds(), a.PairingHold.Seconds(), a.ImportHold.Seconds()); err != nil {
			return err
		}
		switch a.Phase {
		case slicehub.PhaseDone:
			_, err := tx.Exec(ctx, `UPDATE admission_permits SET kind = 'idle' WHERE slice_id = $1 AND kind <> 'idle'`, a.SliceID)
			out.Granted = true
			if err != nil {
				return err
			}
			return grantWaiting(ctx, tx, host, a)
		case slicehub.PhaseImporting:
			// Counted whatever came before, if the link has not had its
			// import permit yet: an import the gate did not see start (a
			// relink after a restart) still weighs on the host. Once had,
			// the slice's word is not taken again: a waiting or granted QR
			// slot is given up (the slice says it is linked) and nothing is
			// held. Nothing is shown either way, so Granted is moot.
			_, err := tx.Exec(ctx, `INSERT INTO admission_permits (slice_id, host, alloc_id, kind, requested_at, granted_at, seen_at, import_due)
				VALUES ($1, $2, $3, 'import', $4, $4, $4, false)
				ON CONFLICT (slice_id) DO UPDATE SET seen_at = $4,
					kind = CASE WHEN admission_permits.kind = 'import' OR admission_permits.import_due THEN 'import' ELSE 'idle' END,
					granted_at = CASE WHEN admission_permits.kind <> 'import' AND admission_permits.import_due THEN $4
						ELSE admission_permits.granted_at END,
					import_due = false`, a.SliceID, host, alloc, a.Now)
			out.Granted = true
			return err
		case slicehub.PhaseQR:
		default:
			return slicehub.Errorf(op, slicehub.KindInvalid, "invalid_phase", "unknown pairing phase %q", a.Phase)
		}
		// An idle row asks anew: the back of the line.
		if _, err := tx.Exec(ctx, `INSERT INTO admission_permits (slice_id, host, alloc_id, kind, requested_at, seen_at)
				VALUES ($1, $2, $3, 'waiting', $4, $4)
				ON CONFLICT (slice_id) DO UPDATE SET seen_at = $4,
					requested_at = CASE WHEN admission_permits.kind = 'idle' THEN $4 ELSE admission_permits.requested_at END,
					kind = CASE WHEN admission_permits.kind = 'idle' THEN 'waiting' ELSE admission_permits.kind END`,
			a.SliceID, host, alloc, a.Now); err != nil {
			return err
		}
		if err := grantWaiting(ctx, tx, host, a); err != nil {
			return err
		}
		var kind string
		var pos int
		if err := tx.QueryRow(ctx, `SELECT p.kind, (SELECT count(*) FROM admission_permits w
				WHERE w.host = p.host AND w.kind = 'waiting' AND (w.requested_at, w.slice_id) <= (p.requested_at, p.slice_id))
			FROM admission_permits p WHERE p.slice_id = $1`, a.SliceID).Scan(&kind, &pos); err != nil {
			return err
		}
		// A permit granted as 'import' was linked already: the QR is back
		// (unlinked), and the import permit still counts until it expires.
		out.Granted = kind != "waiting"
		if !out.Granted {
			out.Queue = &slicehub.QueuePlace{For: slicehub.QueuePairing, Position: pos}
		}
		return nil
	})
	if err != nil {
		if slicehub.KindOf(err) != slicehub.KindInternal {
			return out, err
		}
		return out, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	return out, nil
}

// grantWaiting grants the host's oldest waiting slices as long as both
// caps leave room: each pairing leads to an import, so a full import cap
// holds new QR codes back too. A granted QR code is a new pairing: its link
// may take one import permit.
func grantWaiting(ctx context.Context, tx pgx.Tx, host string, a slicehub.PairingAsk) error {
	_, err := tx.Exec(ctx, `WITH held AS (
			SELECT count(*) FILTER (WHERE kind = 'pairing') AS pairing,
			       count(*) FILTER (WHERE kind = 'import') AS import
			FROM admission_permits WHERE host = $1),
		room AS (
			SELECT LEAST(CASE WHEN $2 > 0 THEN $2 - held.pairing ELSE 1000000 END,
			             CASE WHEN $3 > 0 THEN $3 - held.import - held.pairing ELSE 1000000 END) AS n
			FROM held)
		UPDATE admission_permits SET kind = 'pairing', granted_at = $4, import_due = true
		WHERE slice_id IN (SELECT slice_id FROM admission_permits
			WHERE host = $1 AND kind = 'waiting'
			ORDER BY requested_at, slice_id
			LIMIT (SELECT GREATEST(n, 0) FROM room))`, host, a.Pairings, a.Imports, a.Now)
	return err
}
