package checkpoint

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/ringmesh/ringmesh/internal/atomicfile"
)

// PutOptions are the optional settings of PutWithOptions.
type PutOptions struct {
	// RunID names the training run the checkpoint belongs to (see
	// ValidateRunID). It is recorded in the manifest, so it is part of the
	// root, and announced with it. "" records none (the format older nodes
	// read).
	RunID string
}

// Put is PutWithOptions without options: no run ID.
func (s *Store) Put(ctx context.Context, path string, step uint64) (Manifest, Root, error) {
	return s.PutWithOptions(ctx, path, step, PutOptions{})
}

// PutWithOptions copies the file at path into the store as the checkpoint
// of step: it cuts it into chunks, hashes each, and writes data and
// manifest atomically (temporary directory, fsync, rename, fsync of the
// directory). A file larger than the store's free space is refused first
// (*NoSpaceError, ErrDiskFull). Putting the same bytes, step and run twice
// yields the same root, stores them once and counts as a new arrival.
// Retention runs afterwards and keeps the most recent arrivals, so the
// checkpoint just stored is kept; if a concurrent Put made it one too many
// and it is gone by the time Put returns, Put fails with ErrDropped rather
// than answer with a root it does not hold.
func (s *Store) PutWithOptions(ctx context.Context, path string, step uint64, opts PutOptions) (Manifest, Root, error) {
	if err := ValidateRunID(opts.RunID); err != nil {
		return Manifest{}, Root{}, fmt.Errorf("checkpoint: put %s: %w", path, err)
	}
	src, err := os.Open(path)
	if err != nil {
		return Manifest{}, Root{}, fmt.Errorf("checkpoint: put: %w", err)
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return Manifest{}, Root{}, fmt.Errorf("checkpoint: put: %w", err)
	}
	if st.Size() > MaxCheckpointSize {
		return Manifest{}, Root{}, fmt.Errorf("checkpoint: put %s: size %d exceeds %d", path, st.Size(), int64(MaxCheckpointSize))
	}
	if err := s.checkFree(Root{}, st.Size()); err != nil {
		return Manifest{}, Root{}, fmt.Errorf("checkpoint: put %s: %w", path, err)
	}
	tmp, err := os.MkdirTemp(filepath.Join(s.dir, tmpDirName), "put-")
	if err != nil {
		return Manifest{}, Root{}, fmt.Errorf("checkpoint: put: %w", diskErr(err))
	}
	defer os.RemoveAll(tmp) // no-op after the rename
	m, mb, err := s.copyIn(ctx, src, st.Size(), step, opts.RunID, tmp)
	if err != nil {
		return Manifest{}, Root{}, fmt.Errorf("checkpoint: put %s: %w", path, err)
	}
	root := Root(sha256.Sum256(mb))
	if err := s.adopt(root, m, mb, tmp); err != nil {
		return Manifest{}, Root{}, fmt.Errorf("checkpoint: put %s: %w", path, err)
	}
	s.log.Info("checkpoint stored", "root", root, "step", step, "size", m.Size, "run", m.RunID)
	if s.putHook != nil {
		s.putHook()
	}
	s.prune()
	if in, ok := s.Stat(root); !ok || !in.Complete {
		return Manifest{}, Root{}, fmt.Errorf("checkpoint: put %s (step %d, root %s): %w: newer checkpoints were stored meanwhile and Keep is %d",
			path, step, root.Short(), ErrDropped, s.cfg.Keep)
	}
	return m, root, nil
}

// copyIn copies size bytes of src into dir/data, hashing chunks, and writes
// dir/manifest. Both files are fsynced.
func (s *Store) copyIn(ctx context.Context, src io.Reader, size int64, step uint64, run, dir string) (Manifest, []byte, error) {
	m := Manifest{Step: step, Size: size, ChunkSize: s.cfg.ChunkSize, RunID: run}
	if NumChunks(size, m.ChunkSize) > MaxChunks {
		return m, nil, fmt.Errorf("%w: %d chunks exceed %d", ErrBadManifest, NumChunks(size, m.ChunkSize), MaxChunks)
	}
	dst, err := os.Create(filepath.Join(dir, dataFile))
	if err != nil {
		return m, nil, diskErr(err)
	}
	defer dst.Close()
	buf := make([]byte, m.ChunkSize)
	var total int64
	for total < size {
		if err := ctxErr(ctx); err != nil {
			return m, nil, err
		}
		b := buf[:min(int64(len(buf)), size-total)]
		if _, err := io.ReadFull(src, b); err != nil {
			return m, nil, fmt.Errorf("read: %w", err) // file shrank while copying
		}
		m.Chunks = append(m.Chunks, sha256.Sum256(b))
		if _, err := dst.Write(b); err != nil {
			return m, nil, diskErr(err)
		}
		total += int64(len(b))
	}
	if err := dst.Sync(); err != nil {
		return m, nil, diskErr(err)
	}
	mb, err := m.Encode()
	if err != nil {
		return m, nil, err
	}
	if err := writeFileSync(filepath.Join(dir, manifestFile), mb); err != nil {
		return m, nil, err
	}
	return m, mb, nil
}

// adopt renames a fully written temporary directory into place as a
// complete entry that arrived now. An existing complete entry wins (and
// counts as arriving now); an existing partial is replaced (a concurrent
// fetch into it then writes to an unlinked file and finds the entry
// complete).
func (s *Store) adopt(root Root, m Manifest, mb []byte, tmp string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	added := s.nextArrivalLocked()
	old := s.entries[root]
	if old != nil && old.complete {
		if err := recordArrival(filepath.Join(old.dir, manifestFile), added); err != nil {
			return diskErr(err)
		}
		old.added = added
		return nil
	}
	if err := recordArrival(filepath.Join(tmp, manifestFile), added); err != nil {
		return diskErr(err)
	}
	final := filepath.Join(s.dir, root.String())
	if err := os.RemoveAll(final); err != nil {
		return err
	}
	if err := publish(tmp, final, s.dir); err != nil {
		return err
	}
	f, err := os.Open(filepath.Join(final, dataFile))
	if err != nil {
		return err
	}
	e := &entry{root: root, m: m, mbytes: mb, dir: final, f: f, complete: true,
		have: allTrue(len(m.Chunks)), nhave: len(m.Chunks), added: added}
	if old != nil {
		e.refs = old.refs
		old.f.Close()
		os.RemoveAll(old.dir)
	}
	s.entries[root] = e
	return nil
}

// publish renames the fully written directory tmp to final, fsyncing tmp
// first so its entries are durable and dir (final's parent) after, so the
// rename is.
func publish(tmp, final, dir string) error {
	if err := atomicfile.SyncDir(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	return atomicfile.SyncDir(dir)
}

func writeFileSync(path string, b []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return diskErr(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		return diskErr(err)
	}
	return diskErr(f.Sync())
}

// Export writes the complete checkpoint root to dstPath atomically (a
// temporary file next to it, fsync, rename), verifying every chunk on the
// way out.
func (s *Store) Export(ctx context.Context, root Root, dstPath string) error {
	release, err := s.Pin(root)
	if err != nil {
		return fmt.Errorf("checkpoint: export %s: %w", root.Short(), err)
	}
	defer release()
	s.mu.Lock()
	e := s.entries[root]
	complete := e.complete
	s.mu.Unlock()
	if !complete {
		return fmt.Errorf("checkpoint: export %s: %w", root.Short(), ErrIncomplete)
	}
	dir, base := filepath.Split(dstPath)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("checkpoint: export: %w", diskErr(err))
	}
	if err := exportTo(ctx, e, tmp); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("checkpoint: export %s: %w", root.Short(), err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("checkpoint: export: %w", diskErr(err))
	}
	if err := os.Rename(tmp.Name(), dstPath); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("checkpoint: export: %w", err)
	}
	return atomicfile.SyncDir(dir)
}

func exportTo(ctx context.Context, e *entry, dst *os.File) error {
	buf := make([]byte, e.m.ChunkSize)
	for i := range e.m.Chunks {
		if err := ctxErr(ctx); err != nil {
			return err
		}
		b := buf[:e.m.ChunkLen(i)]
		if _, err := e.f.ReadAt(b, e.m.ChunkOffset(i)); err != nil {
			return fmt.Errorf("read chunk %d: %w", i, err)
		}
		if sha256.Sum256(b) != e.m.Chunks[i] {
			return fmt.Errorf("chunk %d on disk: %w", i, ErrHashMismatch)
		}
		if _, err := dst.Write(b); err != nil {
			return diskErr(err)
		}
	}
	return diskErr(dst.Sync())
}

// beginPartial makes sure root has an entry (creating a pinned partial one
// from its verified manifest bytes) and pins it.
func (s *Store) beginPartial(root Root, mb []byte) (release func(), err error) {
	if Root(sha256.Sum256(mb)) != root {
		return nil, fmt.Errorf("manifest: %w", ErrHashMismatch)
	}
	m, err := DecodeManifest(mb)
	if err != nil {
		return nil, err
	}
	if release, err := s.Pin(root); err == nil {
		return release, nil
	}
	if err := s.checkFree(root, m.Size); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Join(s.dir, tmpDirName), "fetch-")
	if err != nil {
		return nil, diskErr(err)
	}
	defer os.RemoveAll(tmp)
	if err := writeFileSync(filepath.Join(tmp, manifestFile), mb); err != nil {
		return nil, err
	}
	f, err := os.Create(filepath.Join(tmp, dataFile))
	if err != nil {
		return nil, diskErr(err)
	}
	if err := preallocate(f, m.Size); err != nil {
		f.Close()
		return nil, diskErr(err)
	}
	return s.adoptPartial(root, m, mb, tmp, f)
}

func (s *Store) adoptPartial(root Root, m Manifest, mb []byte, tmp string, f *os.File) (func(), error) {
	s.mu.Lock()
	if _, ok := s.entries[root]; ok || s.closed { // lost a race
		s.mu.Unlock()
		f.Close()
		return s.Pin(root)
	}
	final := filepath.Join(s.dir, root.String()+partialSuffix)
	added := s.nextArrivalLocked()
	err := recordArrival(filepath.Join(tmp, manifestFile), added)
	if err == nil {
		err = os.RemoveAll(final)
	}
	if err == nil {
		err = publish(tmp, final, s.dir)
	}
	if err != nil {
		s.mu.Unlock()
		f.Close()
		return nil, diskErr(err)
	}
	s.entries[root] = &entry{root: root, m: m, mbytes: mb, dir: final, f: f, have: make([]bool, len(m.Chunks)), added: added}
	s.mu.Unlock()
	return s.Pin(root)
}

// haveChunks returns which chunks of root are verified, or nil if root is
// not held.
func (s *Store) haveChunks(root Root) []bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[root]; ok {
		return append([]bool(nil), e.have...)
	}
	return nil
}

// writeChunk verifies chunk i of a partial entry against its manifest and
// writes it. Writing a chunk already held is a no-op.
func (s *Store) writeChunk(root Root, i int, data []byte) error {
	s.mu.Lock()
	e, ok := s.entries[root]
	if !ok || s.closed {
		s.mu.Unlock()
		return ErrUnknownRoot
	}
	if i < 0 || i >= len(e.m.Chunks) {
		s.mu.Unlock()
		return fmt.Errorf("%w: %d of %d", ErrOutOfRange, i, len(e.m.Chunks))
	}
	if e.complete || e.have[i] {
		s.mu.Unlock()
		return nil
	}
	want, wantLen, off := e.m.Chunks[i], e.m.ChunkLen(i), e.m.ChunkOffset(i)
	s.mu.Unlock()
	if len(data) != wantLen || sha256.Sum256(data) != want {
		return fmt.Errorf("chunk %d: %w", i, ErrHashMismatch)
	}
	if _, err := s.writeAt(e.f, data, off); err != nil {
		return fmt.Errorf("write chunk %d: %w", i, diskErr(err))
	}
	startWriteback(e.f, off, len(data))
	s.mu.Lock()
	if !e.have[i] {
		e.have[i] = true
		e.nhave++
	}
	s.mu.Unlock()
	return nil
}

// finish promotes a partial entry whose chunks are all verified.
func (s *Store) finish(root Root) error {
	s.mu.Lock()
	e, ok := s.entries[root]
	s.mu.Unlock()
	if !ok {
		return ErrUnknownRoot
	}
	if err := s.promote(e); err != nil {
		return err
	}
	s.prune()
	return nil
}

// promote fsyncs a fully verified partial and renames it into place, as
// an entry that arrived now.
func (s *Store) promote(e *entry) error {
	s.mu.Lock()
	for e.finishing != nil { // another caller is promoting it: wait
		ch := e.finishing
		s.mu.Unlock()
		<-ch
		s.mu.Lock()
	}
	if e.complete {
		s.mu.Unlock()
		return nil
	}
	if e.nhave != len(e.m.Chunks) {
		s.mu.Unlock()
		return fmt.Errorf("%w: %d of %d chunks", ErrIncomplete, e.nhave, len(e.m.Chunks))
	}
	done := make(chan struct{})
	e.finishing = done
	added := s.nextArrivalLocked()
	s.mu.Unlock()
	defer close(done)
	err := e.f.Sync()
	if err == nil {
		err = recordArrival(filepath.Join(e.dir, manifestFile), added)
	}
	final := filepath.Join(s.dir, e.root.String())
	if err == nil {
		err = publish(e.dir, final, s.dir)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e.finishing = nil
	if err != nil {
		return fmt.Errorf("checkpoint: complete %s: %w", e.root.Short(), diskErr(err))
	}
	e.dir, e.complete, e.added = final, true, added
	return nil
}

// prune applies retention: it keeps the Keep complete checkpoints that
// arrived last and deletes the others, and partials that arrived before
// all of those, unless they are pinned. Step numbers play no part.
func (s *Store) prune() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	var complete []*entry
	for _, e := range s.entries {
		if e.complete {
			complete = append(complete, e)
		}
	}
	sort.Slice(complete, func(i, j int) bool { return newer(complete[i], complete[j]) })
	var victims []*entry
	for _, e := range complete[min(len(complete), s.cfg.Keep):] {
		if e.refs == 0 {
			victims = append(victims, e)
		}
	}
	if len(complete) >= s.cfg.Keep {
		oldestKept := complete[s.cfg.Keep-1]
		for _, e := range s.entries {
			if !e.complete && e.refs == 0 && e.finishing == nil && newer(oldestKept, e) {
				victims = append(victims, e)
			}
		}
	}
	for _, e := range victims {
		delete(s.entries, e.root)
	}
	s.mu.Unlock()
	for _, e := range victims {
		e.f.Close()
		if err := os.RemoveAll(e.dir); err != nil {
			s.log.Warn("retention: remove failed", "root", e.root, "err", err)
			continue
		}
		s.log.Info("retention: checkpoint removed", "root", e.root, "step", e.m.Step)
	}
}

// newer reports whether a arrived after b (ties, which nextArrivalLocked
// avoids, broken by root).
func newer(a, b *entry) bool {
	if !a.added.Equal(b.added) {
		return a.added.After(b.added)
	}
	return a.root.String() < b.root.String()
}
