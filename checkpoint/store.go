package checkpoint

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// StoreConfig configures a Store.
type StoreConfig struct {
	// ChunkSize is the chunk length in bytes for checkpoints created by Put.
	// Larger chunks mean smaller manifests and fewer requests; smaller ones
	// spread a fetch over more providers and lose less on a bad chunk.
	// Default 4 MiB; must be within [MinChunkSize, MaxChunkSize].
	ChunkSize uint32
	// Keep is how many of the most recently stored complete checkpoints
	// retention keeps (--keep-checkpoints): newest by arrival (saved by
	// Put or completed by a fetch), never by step number, so a mesh that
	// restarts at a lower step keeps its new saves. Pinned ones (being
	// served, fetched or exported) are never deleted. Default 3; at least 1.
	Keep int
	// VerifyOnOpen rehashes every chunk of every complete checkpoint when
	// the store is opened (partial ones are always rehashed). Costs one read
	// of everything held (about 1 s per GiB); a failing checkpoint is kept as
	// partial so a fetch can repair it. Default true.
	VerifyOnOpen bool
}

// DefaultStoreConfig returns the production defaults.
func DefaultStoreConfig() StoreConfig {
	return StoreConfig{ChunkSize: 4 << 20, Keep: 3, VerifyOnOpen: true}
}

// LocalStoreConfig is a preset for tests: 64 KiB chunks.
func LocalStoreConfig() StoreConfig {
	c := DefaultStoreConfig()
	c.ChunkSize = 64 << 10
	return c
}

// Validate checks the fields.
func (c StoreConfig) Validate() error {
	if c.ChunkSize < MinChunkSize || c.ChunkSize > MaxChunkSize {
		return fmt.Errorf("checkpoint: ChunkSize %d outside [%d, %d]", c.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	if c.Keep < 1 {
		return fmt.Errorf("checkpoint: Keep %d, want at least 1", c.Keep)
	}
	return nil
}

// Info describes a checkpoint held by a Store.
type Info struct {
	Step       uint64
	Root       Root
	Size       int64
	RunID      string // the manifest's run ID; "" for none
	Chunks     int    // chunks in the manifest
	HaveChunks int    // verified chunks held
	Complete   bool
}

type entry struct {
	root      Root
	m         Manifest
	mbytes    []byte
	dir       string
	f         *os.File // data file; O_RDWR for partials
	complete  bool
	finishing chan struct{} // non-nil while promote runs; closed when done
	have      []bool
	nhave     int
	refs      int
	// added orders retention: when the entry arrived (stored by Put,
	// begun or completed by a fetch), kept on disk as its manifest's mtime.
	added time.Time
}

func (e *entry) info() Info {
	return Info{Step: e.m.Step, Root: e.root, Size: e.m.Size, RunID: e.m.RunID, Chunks: len(e.m.Chunks),
		HaveChunks: e.nhave, Complete: e.complete}
}

// Store is a content-addressed checkpoint store in one directory
// (DATA_DIR/checkpoints). It is safe for concurrent use.
type Store struct {
	dir string
	cfg StoreConfig
	log *slog.Logger

	// writeAt writes chunk data; a test seam for disk-full errors.
	writeAt func(f *os.File, b []byte, off int64) (int, error)
	// free returns the bytes free on the store's file system; a test seam.
	free func() (int64, error)
	// putHook, when set, runs in Put between storing and retention; a test
	// seam for a save that retention drops at once.
	putHook func()

	lock *os.File // flock held while open

	mu      sync.Mutex
	entries map[Root]*entry
	closed  bool
	clock   time.Time // the last arrival time handed out
}

// StoreDir returns the store directory inside a node's data directory.
func StoreDir(dataDir string) string { return filepath.Join(dataDir, "checkpoints") }

const (
	tmpDirName    = "tmp"
	partialSuffix = ".partial"
	manifestFile  = "manifest"
	dataFile      = "data"
)

// OpenStore opens (creating it if needed) the store in dir (StoreDir of
// the data directory) and locks it against other processes (ErrLocked)
// before it reads or writes anything in it. It removes leftover temporary
// files, verifies what is held, keeps incomplete entries as resumable
// partials (their verified chunks are kept) and drops entries whose
// manifest is unreadable.
func OpenStore(dir string, cfg StoreConfig, logger *slog.Logger) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Store{
		dir:     dir,
		cfg:     cfg,
		log:     orDiscard(logger).With("component", "checkpoint"),
		writeAt: func(f *os.File, b []byte, off int64) (int, error) { return f.WriteAt(b, off) },
		free:    func() (int64, error) { return freeSpace(dir) },
		entries: make(map[Root]*entry),
	}
	// Only the directory itself is created before the lock (it holds LOCK).
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("checkpoint: open store: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s.lock = lock
	tmp := filepath.Join(dir, tmpDirName)
	if err := os.RemoveAll(tmp); err != nil {
		lock.Close()
		return nil, fmt.Errorf("checkpoint: clear %s: %w", tmp, err)
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		lock.Close()
		return nil, fmt.Errorf("checkpoint: open store: %w", err)
	}
	names, err := os.ReadDir(dir)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("checkpoint: open store: %w", err)
	}
	for _, de := range names {
		if de.Name() == tmpDirName || !de.IsDir() {
			continue
		}
		if err := s.load(de.Name()); err != nil {
			s.Close()
			return nil, err
		}
	}
	s.loadArrivals()
	s.prune()
	return s, nil
}

// loadArrivals reads back when each entry arrived (its manifest's mtime,
// set when it was stored) so retention keeps the same order across
// restarts.
func (s *Store) loadArrivals() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.entries {
		st, err := os.Stat(filepath.Join(e.dir, manifestFile))
		if err != nil {
			continue // zero time: the oldest
		}
		e.added = st.ModTime()
		if e.added.After(s.clock) {
			s.clock = e.added
		}
	}
}

// nextArrivalLocked returns the arrival time for an entry stored now:
// the wall clock, or just after the last time handed out, so the order is
// strict even with a coarse clock or one that stepped back.
func (s *Store) nextArrivalLocked() time.Time {
	t := time.Now().Round(0)
	if !t.After(s.clock) {
		t = s.clock.Add(time.Nanosecond)
	}
	s.clock = t
	return t
}

// recordArrival stores t as the mtime of the manifest at path, durably.
func recordArrival(path string, t time.Time) error {
	if err := os.Chtimes(path, t, t); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// checkFree refuses a checkpoint of size bytes that does not fit in the
// free space of the store's file system (a *NoSpaceError), before
// anything is allocated for it.
func (s *Store) checkFree(root Root, size int64) error {
	if size == 0 {
		return nil
	}
	free, err := s.free()
	if err != nil {
		return fmt.Errorf("checkpoint: free space of %s: %w", s.dir, err)
	}
	if size > free {
		return &NoSpaceError{Root: root, Need: size, Free: free}
	}
	return nil
}

// load adopts one directory of the store.
func (s *Store) load(name string) error {
	hexRoot, partial := strings.CutSuffix(name, partialSuffix)
	root, err := ParseRoot(hexRoot)
	if err != nil {
		s.log.Warn("ignoring unknown entry", "name", name)
		return nil
	}
	path := filepath.Join(s.dir, name)
	m, mb, err := readManifestFile(filepath.Join(path, manifestFile), root)
	if err != nil {
		s.log.Warn("dropping entry with bad manifest", "root", root, "err", err)
		return os.RemoveAll(path)
	}
	if e, dup := s.entries[root]; dup {
		if e.dir == path {
			return nil // a demoted entry, already loaded
		}
		// A complete entry was loaded first ("<hex>" sorts before
		// "<hex>.partial"): the partial is stale.
		return os.RemoveAll(path)
	}
	if partial {
		return s.loadPartial(root, path, m, mb)
	}
	f, err := os.OpenFile(filepath.Join(path, dataFile), os.O_RDWR, 0)
	if err != nil {
		return s.demote(root, path, m, mb)
	}
	st, err := f.Stat()
	if err == nil && st.Size() == m.Size && !s.cfg.VerifyOnOpen {
		s.entries[root] = &entry{root: root, m: m, mbytes: mb, dir: path, f: f, complete: true,
			have: allTrue(len(m.Chunks)), nhave: len(m.Chunks)}
		return nil
	}
	if err == nil && st.Size() == m.Size {
		have, n := verifyChunks(f, &m)
		if n == len(m.Chunks) {
			s.entries[root] = &entry{root: root, m: m, mbytes: mb, dir: path, f: f, complete: true, have: have, nhave: n}
			return nil
		}
	}
	f.Close()
	return s.demote(root, path, m, mb)
}

// demote turns a complete entry that failed verification into a partial.
func (s *Store) demote(root Root, path string, m Manifest, mb []byte) error {
	s.log.Warn("checkpoint failed verification, keeping as partial", "root", root, "step", m.Step)
	ppath := path + partialSuffix
	if err := os.RemoveAll(ppath); err != nil {
		return fmt.Errorf("checkpoint: demote %s: %w", root, err)
	}
	if err := os.Rename(path, ppath); err != nil {
		return fmt.Errorf("checkpoint: demote %s: %w", root, err)
	}
	return s.loadPartial(root, ppath, m, mb)
}

func (s *Store) loadPartial(root Root, path string, m Manifest, mb []byte) error {
	f, err := os.OpenFile(filepath.Join(path, dataFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("checkpoint: open partial %s: %w", root, err)
	}
	if st, err := f.Stat(); err != nil || st.Size() != m.Size {
		if err := f.Truncate(m.Size); err != nil {
			f.Close()
			return fmt.Errorf("checkpoint: open partial %s: %w", root, err)
		}
	}
	have, n := verifyChunks(f, &m)
	e := &entry{root: root, m: m, mbytes: mb, dir: path, f: f, have: have, nhave: n}
	s.entries[root] = e
	s.log.Info("resumable partial checkpoint", "root", root, "step", m.Step, "chunks", n, "of", len(m.Chunks))
	if n == len(m.Chunks) {
		return s.promote(e)
	}
	return nil
}

func readManifestFile(path string, root Root) (Manifest, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return Manifest{}, nil, err
	}
	defer f.Close()
	mb, err := io.ReadAll(io.LimitReader(f, MaxManifestLen+1))
	if err != nil {
		return Manifest{}, nil, err
	}
	if Root(sha256.Sum256(mb)) != root {
		return Manifest{}, nil, fmt.Errorf("%w: manifest does not hash to its root", ErrHashMismatch)
	}
	m, err := DecodeManifest(mb)
	return m, mb, err
}

// verifyChunks hashes every chunk of f against m.
func verifyChunks(f *os.File, m *Manifest) ([]bool, int) {
	have := make([]bool, len(m.Chunks))
	buf := make([]byte, m.ChunkSize)
	n := 0
	for i := range m.Chunks {
		b := buf[:m.ChunkLen(i)]
		if _, err := f.ReadAt(b, m.ChunkOffset(i)); err != nil {
			continue
		}
		if sha256.Sum256(b) == m.Chunks[i] {
			have[i] = true
			n++
		}
	}
	return have, n
}

func allTrue(n int) []bool {
	b := make([]bool, n)
	for i := range b {
		b[i] = true
	}
	return b
}

// Close closes the store's files. Calls after Close return ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for _, e := range s.entries {
		e.f.Close()
	}
	return s.lock.Close()
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// List returns every checkpoint held, complete or partial, newest step first.
func (s *Store) List() []Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Info, 0, len(s.entries))
	for _, e := range s.entries {
		out = append(out, e.info())
	}
	sortInfos(out)
	return out
}

func sortInfos(in []Info) {
	slices.SortFunc(in, func(a, b Info) int {
		if a.Step != b.Step {
			if a.Step > b.Step {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Root.String(), b.Root.String())
	})
}

// Latest returns the complete checkpoint with the highest step.
func (s *Store) Latest() (Info, bool) {
	for _, in := range s.List() {
		if in.Complete {
			return in, true
		}
	}
	return Info{}, false
}

// Stat returns what the store holds of root.
func (s *Store) Stat(root Root) (Info, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[root]
	if !ok {
		return Info{}, false
	}
	return e.info(), true
}

// Manifest returns the manifest of a held checkpoint (complete or partial).
func (s *Store) Manifest(root Root) (Manifest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[root]
	if !ok {
		return Manifest{}, ErrUnknownRoot
	}
	return e.m, nil
}

// manifestBytes returns the encoded manifest of a held checkpoint.
func (s *Store) manifestBytes(root Root) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[root]
	if !ok || s.closed {
		return nil, ErrUnknownRoot
	}
	return e.mbytes, nil
}

// Pin protects root from retention until release is called (release is
// idempotent). Pinning an unknown root fails with ErrUnknownRoot.
func (s *Store) Pin(root Root) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	e, ok := s.entries[root]
	if !ok {
		return nil, ErrUnknownRoot
	}
	e.refs++
	var once sync.Once
	return func() { once.Do(func() { s.unpin(e) }) }, nil
}

func (s *Store) unpin(e *entry) {
	s.mu.Lock()
	e.refs--
	s.mu.Unlock()
	s.prune()
}

// ReadChunk reads chunk i of root into buf (which must hold the chunk) and
// returns its length. The chunk must be verified (complete checkpoints hold
// all of them).
func (s *Store) ReadChunk(root Root, i int, buf []byte) (int, error) {
	release, err := s.Pin(root)
	if err != nil {
		return 0, err
	}
	defer release()
	s.mu.Lock()
	e := s.entries[root]
	if i < 0 || i >= len(e.m.Chunks) {
		s.mu.Unlock()
		return 0, fmt.Errorf("%w: %d of %d", ErrOutOfRange, i, len(e.m.Chunks))
	}
	held := e.have[i]
	s.mu.Unlock()
	if !held {
		return 0, fmt.Errorf("%w: chunk %d not held", ErrIncomplete, i)
	}
	n := e.m.ChunkLen(i)
	if len(buf) < n {
		return 0, fmt.Errorf("checkpoint: read chunk %d: buffer %d < %d", i, len(buf), n)
	}
	if _, err := e.f.ReadAt(buf[:n], e.m.ChunkOffset(i)); err != nil {
		return 0, fmt.Errorf("checkpoint: read chunk %d of %s: %w", i, root.Short(), err)
	}
	return n, nil
}

// diskErr marks ENOSPC as ErrDiskFull.
func diskErr(err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: %w", ErrDiskFull, err)
	}
	return err
}

func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// ctxErr returns ctx's error, if any.
func ctxErr(ctx context.Context) error { return context.Cause(ctx) }
