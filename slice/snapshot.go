package slice

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/slicehub/slicehub"
)

// SnapshotStore keeps the latest snapshot of the profile's essentials in the
// slice's own database (table profile_snapshot, one row). The database
// outlives any node, and the slice already holds its credentials, so a slice
// placed on a node without its profile restores from there instead of asking
// for a new QR code. One row, replaced each time: the newest login is the
// only one worth restoring, and the table cannot grow.
type SnapshotStore struct {
	pool *pgxpool.Pool
}

// NewSnapshotStore returns the store over pool.
func NewSnapshotStore(pool *pgxpool.Pool) *SnapshotStore { return &SnapshotStore{pool: pool} }

// StoredSnapshot is the row.
type StoredSnapshot struct {
	Generation int64
	SHA256     []byte
	Data       []byte
	Files      int
	AllocID    string
	TakenAt    time.Time
}

// Latest returns the snapshot, without its data when withData is false;
// ok is false when none was ever taken.
func (s *SnapshotStore) Latest(ctx context.Context, withData bool) (StoredSnapshot, bool, error) {
	const op = "slice.snapshot_latest"
	var st StoredSnapshot
	data := "NULL::bytea"
	if withData {
		data = "data"
	}
	err := s.pool.QueryRow(ctx,
		`SELECT generation, sha256, `+data+`, files, alloc_id, taken_at FROM profile_snapshot WHERE id = 1`).
		Scan(&st.Generation, &st.SHA256, &st.Data, &st.Files, &st.AllocID, &st.TakenAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return StoredSnapshot{}, false, nil
	}
	if err != nil {
		return StoredSnapshot{}, false, dbError(op, err)
	}
	return st, true, nil
}

// Save replaces the snapshot and returns its generation, one more than the
// one it replaces.
func (s *SnapshotStore) Save(ctx context.Context, a archive, allocID string) (int64, error) {
	const op = "slice.snapshot_save"
	var gen int64
	err := s.pool.QueryRow(ctx, `
INSERT INTO profile_snapshot (id, generation, sha256, data, files, alloc_id, taken_at)
VALUES (1, 1, $1, $2, $3, $4, now())
ON CONFLICT (id) DO UPDATE SET
    generation = profile_snapshot.generation + 1,
    sha256 = EXCLUDED.sha256, data = EXCLUDED.data, files = EXCLUDED.files,
    alloc_id = EXCLUDED.alloc_id, taken_at = EXCLUDED.taken_at
RETURNING generation`, a.SHA256[:], a.Data, a.Files, allocID).Scan(&gen)
	if err != nil {
		return 0, dbError(op, err)
	}
	return gen, nil
}

// SnapshotPolicy says when the profile is copied to the database.
type SnapshotPolicy struct {
	// Disabled takes no snapshots and restores none (SLICE_SNAPSHOT=off).
	Disabled bool
	// Poll is how often the essentials' fingerprint is checked; default 2 s.
	Poll time.Duration
	// Debounce is how long the essentials must stay unchanged before a copy,
	// so that a burst of writes gives one snapshot; default 2 s.
	Debounce time.Duration
	// MinInterval spaces snapshots while the session just lives (WhatsApp
	// writes its IndexedDB as messages come); default 2 min.
	MinInterval time.Duration
	// Settle is how long after reaching "connected" changes are saved
	// without waiting for MinInterval: the login itself is what must not be
	// lost, and Chromium writes Local Storage a few seconds late; default
	// 1 min.
	Settle time.Duration
	// MaxBytes caps the uncompressed essentials; default 256 MiB.
	MaxBytes int64
}

func (p SnapshotPolicy) withDefaults() SnapshotPolicy {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&p.Poll, 2*time.Second)
	def(&p.Debounce, 2*time.Second)
	def(&p.MinInterval, 2*time.Minute)
	def(&p.Settle, time.Minute)
	if p.MaxBytes <= 0 {
		p.MaxBytes = 256 << 20
	}
	return p
}

// snapshotter copies the profile's essentials to the store when they change
// while WhatsApp is connected, and restores them at start when the local
// profile lacks them or is older than the stored copy.
//
// Only a connected profile is ever saved: a profile showing a QR code holds
// no login, and saving it (say, on a node where the restore failed) would
// overwrite the one login worth keeping.
type snapshotter struct {
	profile Profile
	store   *SnapshotStore
	state   StateSource
	policy  SnapshotPolicy
	allocID string
	log     *slog.Logger
	now     func() time.Time

	mu          sync.Mutex
	savedFP     string // fingerprint of the profile when it last matched the store
	savedSum    []byte
	lastSave    time.Time
	connectedAt time.Time
	seenFP      string // last fingerprint seen by the poll
	seenAt      time.Time
	stats       SnapshotStats
}

// SnapshotStats is what the snapshotter measured, for logs and benchmarks.
type SnapshotStats struct {
	// Saves counts the snapshots this process wrote to the database.
	Saves int
	// LastBytes and LastFiles describe the last snapshot saved or restored
	// (compressed size); LastRawBytes the uncompressed size of the last save.
	LastBytes    int
	LastFiles    int
	LastRawBytes int64
	// LastSaveTook is the copy plus the database write.
	LastSaveTook    time.Duration
	LastSaveTakenAt time.Time
	// LastGeneration is the generation the profile matches.
	LastGeneration int64
	// Restored: the start restored the profile from the database, in
	// RestoreTook (database read and unpack), generation RestoreGen.
	Restored    bool
	RestoreTook time.Duration
	RestoreGen  int64
	// RestoreSkipWhy says why the local profile was kept.
	RestoreSkipWhy string
}

func newSnapshotter(p Profile, store *SnapshotStore, state StateSource, policy SnapshotPolicy, allocID string, log *slog.Logger) *snapshotter {
	s := &snapshotter{
		profile: p, store: store, state: state, policy: policy.withDefaults(),
		allocID: allocID, log: log.With("component", "snapshot"), now: time.Now,
	}
	return s
}

// Stats returns a copy of the measurements.
func (s *snapshotter) Stats() SnapshotStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// restore runs before Chromium starts. The local profile wins unless it has
// no essentials (a new node, or an emptied directory) or its marker names an
// older generation than the store's (a profile left on this node by an
// earlier placement, since superseded by one saved elsewhere).
func (s *snapshotter) restore(ctx context.Context) error {
	const op = "slice.snapshot_restore"
	t0 := s.now()
	info, ok, err := s.store.Latest(ctx, false)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	local := s.profile.hasEssentials()
	marker, hasMarker := s.profile.readMarker()
	skip := ""
	switch {
	case !ok:
		skip = "no snapshot stored yet"
	case local && !hasMarker:
		skip = "the local profile has no marker; keeping it"
	case local && marker.Generation >= info.Generation:
		skip = "the local profile is as new as the stored snapshot"
	}
	if skip != "" {
		s.mu.Lock()
		s.stats.RestoreSkipWhy = skip
		if ok && local && hasMarker && marker.Generation == info.Generation {
			// Unchanged since it was saved: no need to save it again
			// unless Chromium writes to it.
			s.savedSum = info.SHA256
			s.stats.LastGeneration = info.Generation
		}
		s.mu.Unlock()
		s.log.Info("keeping the local profile", "why", skip, "local_essentials", local)
		return nil
	}
	snap, ok, err := s.store.Latest(ctx, true)
	if err != nil || !ok {
		return fmt.Errorf("%s: reading the snapshot: %w", op, err)
	}
	files, err := s.profile.restore(snap.Data, s.policy.MaxBytes)
	if err != nil {
		return err
	}
	fp, err := s.profile.fingerprint()
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := s.profile.writeMarker(profileMarker{Generation: snap.Generation, SHA256: hex.EncodeToString(snap.SHA256)}); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	took := s.now().Sub(t0)
	s.mu.Lock()
	s.savedFP, s.savedSum = fp, snap.SHA256
	s.stats.Restored, s.stats.RestoreTook, s.stats.RestoreGen = true, took, snap.Generation
	s.stats.LastBytes, s.stats.LastFiles, s.stats.LastGeneration = len(snap.Data), files, snap.Generation
	s.mu.Unlock()
	why := "the local profile has no login state"
	if local {
		why = fmt.Sprintf("the local profile is generation %d, the stored one %d", marker.Generation, snap.Generation)
	}
	s.log.Info("profile restored from the database", "why", why, "generation", snap.Generation,
		"bytes", len(snap.Data), "files", files, "taken_at", snap.TakenAt, "taken_by_alloc", snap.AllocID,
		"duration_ms", took.Milliseconds())
	return nil
}

// run polls the essentials until ctx ends and saves them when they have
// changed, stayed quiet for Debounce, and WhatsApp is connected.
func (s *snapshotter) run(ctx context.Context) {
	cancel := s.state.Subscribe(func(st string) {
		if st == slicehub.WAConnected {
			s.mu.Lock()
			s.connectedAt = s.now()
			s.mu.Unlock()
		}
	})
	defer cancel()
	if s.state.State() == slicehub.WAConnected {
		s.mu.Lock()
		s.connectedAt = s.now()
		s.mu.Unlock()
	}
	t := time.NewTicker(s.policy.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.maybeSave(ctx, false); err != nil && ctx.Err() == nil {
			s.log.Warn("snapshot failed; will retry", "err", err)
		}
	}
}

// final saves the essentials once Chromium has closed, when the session was
// connected: that copy is exact, and it is the one a move to another node
// restores.
func (s *snapshotter) final(ctx context.Context) {
	if err := s.maybeSave(ctx, true); err != nil {
		s.log.Warn("final snapshot failed", "err", err)
	}
}

// maybeSave takes a snapshot if the policy says so. final skips the debounce
// and the interval (Chromium has closed; nothing will write any more).
func (s *snapshotter) maybeSave(ctx context.Context, final bool) error {
	if s.state.State() != slicehub.WAConnected {
		return nil
	}
	fp, err := s.profile.fingerprint()
	if err != nil {
		return err
	}
	now := s.now()
	s.mu.Lock()
	if fp == s.savedFP {
		s.mu.Unlock()
		return nil
	}
	if fp != s.seenFP {
		s.seenFP, s.seenAt = fp, now
	}
	quiet := now.Sub(s.seenAt) >= s.policy.Debounce
	settling := !s.connectedAt.IsZero() && now.Sub(s.connectedAt) < s.policy.Settle
	due := s.lastSave.IsZero() || now.Sub(s.lastSave) >= s.policy.MinInterval
	s.mu.Unlock()
	if !final && (!quiet || (!settling && !due)) {
		return nil
	}
	return s.save(ctx)
}

func (s *snapshotter) save(ctx context.Context) error {
	t0 := s.now()
	a, err := s.profile.snapshot(s.policy.MaxBytes)
	if errors.Is(err, errProfileChanging) {
		// Written to while copied: wait for the next quiet moment.
		s.mu.Lock()
		s.seenFP = ""
		s.mu.Unlock()
		return nil
	}
	if err != nil {
		return err
	}
	s.mu.Lock()
	unchanged := bytes.Equal(s.savedSum, a.SHA256[:])
	s.mu.Unlock()
	if unchanged {
		// Times changed, content did not (Chromium rewrote a file as it
		// was): nothing to send.
		s.mu.Lock()
		s.savedFP = a.Fingerprint
		s.mu.Unlock()
		return nil
	}
	gen, err := s.store.Save(ctx, a, s.allocID)
	if err != nil {
		return err
	}
	if err := s.profile.writeMarker(profileMarker{Generation: gen, SHA256: hex.EncodeToString(a.SHA256[:])}); err != nil {
		s.log.Warn("cannot write the snapshot marker", "err", err)
	}
	took := s.now().Sub(t0)
	s.mu.Lock()
	s.savedFP, s.savedSum, s.lastSave = a.Fingerprint, bytes.Clone(a.SHA256[:]), s.now()
	s.stats.Saves++
	s.stats.LastBytes, s.stats.LastFiles, s.stats.LastRawBytes = len(a.Data), a.Files, a.Bytes
	s.stats.LastSaveTook, s.stats.LastGeneration, s.stats.LastSaveTakenAt = took, gen, s.lastSave
	s.mu.Unlock()
	s.log.Info("profile snapshot saved", "generation", gen, "bytes", len(a.Data), "raw_bytes", a.Bytes,
		"files", a.Files, "duration_ms", took.Milliseconds())
	return nil
}
