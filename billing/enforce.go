package billing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/slicehub/slicehub"
	"github.com/slicehub/slicehub/postgres"
)

// effect is what enforceTx did to the slice.
type effect int

const (
	effectNone effect = iota
	effectResumed
	effectSuspended
	// effectReleased: the user was freed from their retired slice; after
	// the commit, afterCommit gets them a new one.
	effectReleased
)

// enforceTx makes the user's slice follow the locked account's
// entitlement now, inside tx. It never retires: retiring needs an export
// first, which is too slow for a transaction (see retire). eventID and
// actor sign the records.
func (s *Service) enforceTx(ctx context.Context, tx billingTx, a *postgres.BillingAccount, eventID, actor string) (effect, error) {
	now := s.now()
	d := decide(*a, now, s.cfg.Grace, s.cfg.Retention)
	sl, ok, err := tx.UserSlice(ctx, a.UserID)
	if err != nil || !ok {
		return effectNone, err
	}
	audit := func(action, detail string) error {
		return tx.AuditBilling(ctx, postgres.BillingAudit{UserID: a.UserID, Actor: actor, Action: action, EventID: eventID,
			Detail: fmt.Sprintf("slice %d: %s", sl.ID, detail)})
	}
	switch d.want {
	case wantRun:
		if a.SuspendedAt.IsZero() {
			return effectNone, nil
		}
		var did effect
		resume := slicehub.Resume(Actor, "resumed by billing: "+d.reason)
		switch {
		case resume.StartsFrom(sl.State):
			// The same change as scheduler.Resume: a new generation of the
			// job, same database and profile, so WhatsApp stays linked.
			if _, err := tx.Transition(ctx, sl.ID, resume); err != nil {
				return effectNone, err
			}
			if err := s.fail("enforce.after_transition"); err != nil {
				return effectNone, err
			}
			if err := audit("slice_resumed", d.reason); err != nil {
				return effectNone, err
			}
			did = effectResumed
		case sl.State == slicehub.StateRetired:
			// Too late to resume: free the user so that their next claim
			// gets a new slice. Their export stays downloadable.
			if err := tx.ReleaseRetiredSlice(ctx, sl.ID, Actor, "entitled again: "+d.reason); err != nil {
				return effectNone, err
			}
			if err := audit("retired_slice_released", d.reason); err != nil {
				return effectNone, err
			}
			did = effectReleased
		}
		// Otherwise an admin resumed it, or it never was suspended by us:
		// either way billing no longer holds it.
		a.SuspendedAt = time.Time{}
		return did, nil
	case wantSuspend, wantRetire:
		if sl.State.Billable() {
			if _, err := tx.Transition(ctx, sl.ID, slicehub.Suspend(Actor, "suspended by billing: "+d.reason)); err != nil {
				return effectNone, err
			}
			if err := s.fail("enforce.after_transition"); err != nil {
				return effectNone, err
			}
			if err := audit("slice_suspended", d.reason); err != nil {
				return effectNone, err
			}
			a.SuspendedAt = now
			return effectSuspended, nil
		}
	}
	return effectNone, nil
}

// afterCommit logs what a committed enforceTx did (not before: a
// rollback would make the line a lie), and gets a user freed from their
// retired slice a new one at once, so that paying again is enough to work
// again. The claim is best effort: without a Claimer, or if it fails, the
// user's next login claims one.
func (s *Service) afterCommit(ctx context.Context, userID int64, did effect) {
	switch did {
	case effectNone:
		return
	case effectResumed:
		s.log.Info("slice resumed", "user_id", userID)
	case effectSuspended:
		s.log.Info("slice suspended", "user_id", userID)
	case effectReleased:
		s.log.Info("retired slice released", "user_id", userID)
	}
	if did != effectReleased || s.cfg.Claimer == nil {
		return
	}
	sl, err := s.cfg.Claimer.Claim(ctx, userID)
	if err != nil {
		s.log.Warn("could not claim a new slice after a retired one was released; the next login will", "user_id", userID, "err", err)
		return
	}
	s.log.Info("new slice claimed for a returning customer", "user_id", userID, "slice_id", sl.ID, "state", sl.State)
}

// Run runs Enforce every interval until ctx ends. Every replica may run
// it: a PostgreSQL advisory lock lets one pass act at a time.
func (s *Service) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = time.Minute
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.Enforce(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("billing check failed; the next one retries", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Enforce applies what time changes to every account that may owe an
// action: a grace period that ran out, a canceled period that ended, a
// retention that passed (export, then retire). Each account is its own
// transaction; one failing does not stop the others.
func (s *Service) Enforce(ctx context.Context) error {
	const op = "billing.enforce"
	release, ok, err := s.db.TryBillingLock(ctx)
	if err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	if !ok {
		return nil // another replica is at it
	}
	defer release()
	ids, err := s.db.BillingAttention(ctx)
	if err != nil {
		return slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	var errs []error
	for _, id := range ids {
		if ctx.Err() != nil {
			break
		}
		if err := s.enforceAccount(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("user %d: %w", id, err))
		}
	}
	return slicehub.Wrap(op, slicehub.KindInternal, errors.Join(errs...))
}

func (s *Service) enforceAccount(ctx context.Context, userID int64) error {
	a, err := s.db.BillingAccount(ctx, userID)
	if err != nil {
		return err
	}
	d := decide(a, s.now(), s.cfg.Grace, s.cfg.Retention)
	sl, err := s.db.SliceForUser(ctx, userID)
	if slicehub.KindOf(err) == slicehub.KindNotFound {
		return nil
	}
	if err != nil {
		return err
	}
	// Skip the transaction when nothing is owed: most accounts, most passes.
	switch {
	case d.want == wantRun && !a.SuspendedAt.IsZero():
	case (d.want == wantSuspend || d.want == wantRetire) && sl.State.Billable():
	case d.want == wantRetire && sl.State == slicehub.StateSuspended:
		return s.retire(ctx, a, sl, d)
	default:
		return nil
	}
	var did effect
	err = s.inAccount(ctx, userID, func(tx billingTx, a *postgres.BillingAccount) error {
		var err error
		did, err = s.enforceTx(ctx, tx, a, "", Actor)
		return err
	})
	if err == nil {
		s.afterCommit(ctx, userID, did)
	}
	return err
}

// retire exports the suspended slice's database for its user, then
// retires the slice. The two steps commit separately, on purpose: a dump
// can take minutes and must not hold locks, and a crash between them
// leaves an export on record, which the next pass finds and does not
// repeat. The retirement itself re-checks the entitlement under the
// account's lock, so a payment made during the dump wins.
func (s *Service) retire(ctx context.Context, a postgres.BillingAccount, sl slicehub.Slice, d decision) error {
	const op = "billing.retire"
	// Only an export made since the slice stopped holds its final data.
	since := d.retireAt.Add(-s.cfg.Retention)
	ex, ok, err := s.db.SliceExport(ctx, a.UserID, sl.ID, since)
	if err != nil {
		return err
	}
	path := ex.Path
	if !ok {
		path, err = s.export(ctx, a.UserID, sl.ID)
		if err != nil && slicehub.KindOf(err) != slicehub.KindNotFound {
			return slicehub.Wrap(op, slicehub.KindInternal, err)
		}
		// KindNotFound: the database is gone (dropped by hand): there is
		// nothing to export, and retiring is all that is left.
	}
	retired := false
	err = s.inAccount(ctx, a.UserID, func(tx billingTx, a *postgres.BillingAccount) error {
		d := decide(*a, s.now(), s.cfg.Grace, s.cfg.Retention)
		if d.want != wantRetire {
			return nil
		}
		if _, err := tx.RetireSuspendedSlice(ctx, sl.ID, Actor, "retired by billing: "+d.reason, path); err != nil {
			if slicehub.KindOf(err) == slicehub.KindConflict {
				return nil // moved meanwhile (an admin): the next pass looks again
			}
			return err
		}
		if err := s.fail("retire.after_transition"); err != nil {
			return err
		}
		retired = true
		return tx.AuditBilling(ctx, postgres.BillingAudit{UserID: a.UserID, Actor: Actor, Action: "slice_retired",
			Detail: fmt.Sprintf("slice %d: %s; export %s", sl.ID, d.reason, orNone(path))})
	})
	if err == nil && retired {
		s.log.Info("slice retired", "user_id", a.UserID, "slice_id", sl.ID, "export", path)
	}
	return err
}

// export dumps slice sliceID's database into userID's export directory
// and records it. KindNotFound when the database does not exist.
func (s *Service) export(ctx context.Context, userID, sliceID int64) (string, error) {
	dir := filepath.Join(s.cfg.ExportDir, strconv.FormatInt(userID, 10))
	path, err := s.db.DumpDatabase(ctx, sliceID, dir, s.cfg.PgDump)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if _, err := s.db.AddBillingExport(ctx, postgres.BillingExport{UserID: userID, SliceID: sliceID, Path: path,
		SizeBytes: fi.Size(), CreatedAt: s.now()},
		postgres.BillingAudit{UserID: userID, Actor: Actor, Action: "export_written",
			Detail: fmt.Sprintf("slice %d: %s (%d bytes)", sliceID, filepath.Base(path), fi.Size())}); err != nil {
		return "", err
	}
	s.log.Info("data export written", "user_id", userID, "slice_id", sliceID, "bytes", fi.Size())
	return path, nil
}

// Export is an export as its owner sees it.
type Export struct {
	ID        int64     `json:"id"`
	SliceID   int64     `json:"slice_id"`
	SizeBytes int64     `json:"size_bytes"`
	CreatedAt time.Time `json:"created_at"`
	URL       string    `json:"url"`
}

// Exports lists user's exports, newest first.
func (s *Service) Exports(ctx context.Context, user slicehub.User) ([]Export, error) {
	const op = "billing.exports"
	list, err := s.db.BillingExports(ctx, user.ID)
	if err != nil {
		return nil, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	out := make([]Export, 0, len(list))
	for _, e := range list {
		out = append(out, Export{ID: e.ID, SliceID: e.SliceID, SizeBytes: e.SizeBytes, CreatedAt: e.CreatedAt,
			URL: "/billing/export?id=" + strconv.FormatInt(e.ID, 10)})
	}
	return out, nil
}

// exportFile returns the file of user's export id (0: the newest). Only
// the owner's exports are found: anyone else's is not_found, so that ids
// reveal nothing.
func (s *Service) exportFile(ctx context.Context, user slicehub.User, id int64) (postgres.BillingExport, error) {
	const op = "billing.export_file"
	list, err := s.db.BillingExports(ctx, user.ID)
	if err != nil {
		return postgres.BillingExport{}, slicehub.Wrap(op, slicehub.KindInternal, err)
	}
	for _, e := range list {
		if id == 0 || e.ID == id {
			if _, err := os.Stat(e.Path); err != nil {
				return e, slicehub.Errorf(op, slicehub.KindNotFound, "export_gone", "the export file is no longer available")
			}
			return e, nil
		}
	}
	return postgres.BillingExport{}, slicehub.Errorf(op, slicehub.KindNotFound, "no_export", "no such export")
}
