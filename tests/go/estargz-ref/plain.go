package main

// The plain pass: the blob read the way any gzip and tar reader reads it
// (the standard library only), recording what the eStargz checks need to
// compare against: where each gzip member starts, every tar entry with the
// offset of its data and the sha256 of its content, and which entries a
// plain extractor would create (those before the first end-of-archive
// marker).

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"strings"
	"time"
)

const blockSize = 512

// tarEntry is one entry of the uncompressed stream.
type tarEntry struct {
	name         string
	header       *tar.Header
	dataStart    int64  // offset of its content in the uncompressed stream
	sha256       string // of its content, for regular files
	afterEndMark bool   // after an end-of-archive marker: plain extractors never see it
}

// plainView is everything the plain pass learned.
type plainView struct {
	entries       map[string]*tarEntry // by cleaned name
	order         []string             // names in stream order
	memberStarts  map[int64]int64      // compressed offset of each gzip member -> uncompressed offset
	members       int
	streamSize    int64 // uncompressed bytes
	diffID        string
	blobDigest    string
	endMarkBefore bool // some entry comes after an end-of-archive marker
}

// byteCounter is the compressed side: it counts what gzip consumed. It is
// an io.ByteReader, so compress/gzip reads exactly one member and no more.
type byteCounter struct {
	r *bufio.Reader
	n int64
}

func (c *byteCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *byteCounter) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}

// members is the uncompressed stream of a sequence of gzip members; it
// notes where each member starts, on both sides.
type members struct {
	in     *byteCounter
	gz     *gzip.Reader
	out    int64
	start  int64 // compressed offset of the current member
	starts map[int64]int64
	count  int
	diff   hash.Hash
	ended  bool
}

func openMembers(in *byteCounter) (*members, error) {
	m := &members{in: in, starts: map[int64]int64{0: 0}, count: 1, diff: sha256.New()}
	gz, err := gzip.NewReader(in)
	if err != nil {
		return nil, fmt.Errorf("not gzip at offset 0: %v", err)
	}
	gz.Multistream(false)
	m.gz = gz
	return m, nil
}

func (m *members) Read(p []byte) (int, error) {
	for !m.ended {
		n, err := m.gz.Read(p)
		m.out += int64(n)
		m.diff.Write(p[:n])
		switch {
		case err == io.EOF:
			err = m.nextMember()
		case err != nil:
			err = fmt.Errorf("the gzip member at compressed offset %d: %v", m.start, err)
		}
		if n > 0 || err != nil {
			return n, err
		}
	}
	return 0, io.EOF
}

func (m *members) nextMember() error {
	at := m.in.n
	switch err := m.gz.Reset(m.in); {
	case err == io.EOF:
		m.ended = true
		return nil
	case err != nil:
		return fmt.Errorf("gzip member at compressed offset %d: %v", at, err)
	}
	m.gz.Multistream(false)
	m.start = at
	m.starts[at] = m.out
	m.count++
	return nil
}

// blocks is the uncompressed stream as tar sees it: it counts the offset
// and can take back one block read past an end-of-archive marker.
type blocks struct {
	r       io.Reader
	pending []byte
	offset  int64
}

func (b *blocks) Read(p []byte) (int, error) {
	var n int
	var err error
	if len(b.pending) > 0 {
		n = copy(p, b.pending)
		b.pending = b.pending[n:]
	} else {
		n, err = b.r.Read(p)
	}
	b.offset += int64(n)
	return n, err
}

// skipZeroBlocks reads past zero blocks; it reports whether a non-zero
// block follows (and puts it back), or the stream ended.
func (b *blocks) skipZeroBlocks() (bool, error) {
	block := make([]byte, blockSize)
	for {
		n, err := io.ReadFull(b, block)
		switch {
		case n == 0 && err == io.EOF:
			return false, nil
		case err == io.ErrUnexpectedEOF:
			return false, fmt.Errorf("a partial %d-byte block after the end-of-archive marker at offset %d", n, b.offset-int64(n))
		case err != nil:
			return false, err
		}
		if !isZero(block) {
			b.pending = append(block, b.pending...)
			b.offset -= blockSize
			return true, nil
		}
	}
}

func isZero(p []byte) bool {
	for _, c := range p {
		if c != 0 {
			return false
		}
	}
	return true
}

func cleanName(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// readPlain runs the plain pass over the whole blob. Problems go to res.
func readPlain(blob io.Reader, res *verifyReport) *plainView {
	blobHash := sha256.New()
	in := &byteCounter{r: bufio.NewReaderSize(io.TeeReader(blob, blobHash), 1<<20)}
	stream, err := openMembers(in)
	if err != nil {
		res.fail("plain gzip: %v", err)
		return nil
	}
	view := &plainView{entries: map[string]*tarEntry{}}
	if err := view.readTar(&blocks{r: stream}, res); err != nil {
		res.fail("plain gzip+tar: %v", err)
		return nil
	}
	if _, err := io.Copy(io.Discard, stream); err != nil {
		res.fail("plain gzip: %v", err)
		return nil
	}
	if trailing, _ := io.Copy(io.Discard, in); trailing > 0 {
		res.fail("plain gzip: %d bytes after the last gzip member", trailing)
	}
	view.memberStarts, view.members, view.streamSize = stream.starts, stream.count, stream.out
	view.diffID = fmt.Sprintf("sha256:%x", stream.diff.Sum(nil))
	view.blobDigest = fmt.Sprintf("sha256:%x", blobHash.Sum(nil))
	return view
}

// readTar reads tar entries, going on past end-of-archive markers: the eStargz
// layout modelyard and BuildKit write puts the TOC after one, so that plain
// extractors stop before it.
func (v *plainView) readTar(stream *blocks, res *verifyReport) error {
	afterEnd := false
	for {
		tr := tar.NewReader(stream)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("after %d tar entries: %v", len(v.order), err)
			}
			if h.Typeflag == tar.TypeXGlobalHeader {
				res.warn("a PAX global header at offset %d (the reference writer refuses them)", stream.offset)
				continue
			}
			if err := v.add(h, tr, stream.offset, afterEnd, res); err != nil {
				return err
			}
		}
		more, err := stream.skipZeroBlocks()
		if err != nil || !more {
			return err
		}
		afterEnd, v.endMarkBefore = true, true
	}
}

func (v *plainView) add(h *tar.Header, content io.Reader, dataStart int64, afterEnd bool, res *verifyReport) error {
	e := &tarEntry{name: cleanName(h.Name), header: h, dataStart: dataStart, afterEndMark: afterEnd}
	if h.Typeflag == tar.TypeReg {
		digest := sha256.New()
		n, err := io.Copy(digest, content)
		if err != nil || n != h.Size {
			return fmt.Errorf("reading %q: %d of %d bytes: %v", e.name, n, h.Size, err)
		}
		e.sha256 = fmt.Sprintf("sha256:%x", digest.Sum(nil))
	}
	if _, dup := v.entries[e.name]; dup {
		res.warn("tar entry %q appears more than once", e.name)
	}
	v.entries[e.name] = e
	v.order = append(v.order, e.name)
	return nil
}

// last is the name of the last tar entry.
func (v *plainView) last() string {
	if len(v.order) == 0 {
		return ""
	}
	return v.order[len(v.order)-1]
}

// seenByPlainExtractor says whether GNU tar, Python's tarfile or containerd's
// applier would create this entry (it comes before any end-of-archive marker).
func (v *plainView) seenByPlainExtractor(name string) bool {
	e, ok := v.entries[name]
	return ok && !e.afterEndMark
}

func tocType(flag byte) string {
	switch flag {
	case tar.TypeReg:
		return "reg"
	case tar.TypeDir:
		return "dir"
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeLink:
		return "hardlink"
	case tar.TypeChar:
		return "char"
	case tar.TypeBlock:
		return "block"
	case tar.TypeFifo:
		return "fifo"
	}
	return fmt.Sprintf("tar type %q", flag)
}

func sameSecond(a, b time.Time) bool {
	return a.UTC().Truncate(time.Second).Equal(b.UTC().Truncate(time.Second))
}
