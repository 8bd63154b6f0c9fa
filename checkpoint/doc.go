// Package checkpoint owns the content-addressed checkpoint store (chunked,
// SHA-256 verified, written atomically), announcements of new checkpoints and
// the multi-peer fetch protocol, through the small Announcer and Fetcher
// interfaces it defines.
package checkpoint
