package main

// verify: the plain pass (plain.go), then the blob through the reference
// reader, every chunk of every file, each compared with the plain pass.

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	digest "github.com/opencontainers/go-digest"
)

const maxListed = 50

var verifyCommand = command{
	positional: []string{"BLOB"},
	flags: func(fs *flag.FlagSet) {
		fs.String("toc-digest", "", "the TOC digest the layer descriptor announces")
		fs.String("diff-id", "", "the DiffID the image config announces")
	},
	run: func(fs *flag.FlagSet, args []string) (report, error) {
		res := &verifyReport{
			Blob:              args[0],
			TOCDigestExpected: fs.Lookup("toc-digest").Value.String(),
			DiffIDExpected:    fs.Lookup("diff-id").Value.String(),
			EntriesByType:     map[string]int{},
			Warnings:          []string{},
			Errors:            []string{},
		}
		started := time.Now()
		res.check()
		res.Seconds = time.Since(started).Seconds()
		res.OK = len(res.Errors) == 0
		return res, nil
	},
}

type verifyReport struct {
	OK                       bool           `json:"ok"`
	Blob                     string         `json:"blob"`
	BlobBytes                int64          `json:"blob_bytes"`
	BlobDigest               string         `json:"blob_digest"`
	GzipMembers              int            `json:"gzip_members"`
	FooterSize               int64          `json:"footer_size"`
	TOCOffset                int64          `json:"toc_offset"`
	TOCDigest                string         `json:"toc_digest"`
	TOCDigestExpected        string         `json:"toc_digest_expected,omitempty"`
	TOCDigestVerified        bool           `json:"toc_digest_verified"`
	TOCVersion               int            `json:"toc_version"`
	TOCJSONBytes             int64          `json:"toc_json_bytes"`
	DiffID                   string         `json:"diff_id"`
	DiffIDExpected           string         `json:"diff_id_expected,omitempty"`
	Entries                  int            `json:"entries"`
	EntriesByType            map[string]int `json:"entries_by_type"`
	RegularFiles             int            `json:"regular_files"`
	Chunks                   int            `json:"chunks"`
	UncompressedBytes        int64          `json:"uncompressed_bytes"`
	UncompressedTarBytes     int64          `json:"uncompressed_tar_bytes"`
	TarEntries               int            `json:"tar_entries"`
	TOCIsLastTarEntry        bool           `json:"toc_is_last_tar_entry"`
	EndMarkerBeforeTOC       bool           `json:"end_marker_before_toc"`
	PlainExtractSeesTOC      bool           `json:"plain_extract_sees_toc"`
	Landmark                 string         `json:"landmark"`
	LandmarkExists           bool           `json:"landmark_exists"`
	PlainExtractSeesLandmark bool           `json:"plain_extract_sees_landmark"`
	FilesCompared            int            `json:"files_compared_with_tar"`
	Warnings                 []string       `json:"warnings"`
	Errors                   []string       `json:"errors"`
	Seconds                  float64        `json:"seconds"`
}

func (r *verifyReport) ok() bool { return r.OK }

func (r *verifyReport) fail(format string, args ...interface{}) {
	r.Errors = appendCapped(r.Errors, fmt.Sprintf(format, args...))
}

func (r *verifyReport) warn(format string, args ...interface{}) {
	r.Warnings = appendCapped(r.Warnings, fmt.Sprintf(format, args...))
}

func appendCapped(list []string, line string) []string {
	switch {
	case len(list) < maxListed:
		return append(list, line)
	case len(list) == maxListed:
		return append(list, "(more not listed)")
	}
	return list
}

func (r *verifyReport) check() {
	var wantTOC digest.Digest
	if r.TOCDigestExpected != "" {
		d, err := digest.Parse(r.TOCDigestExpected)
		if err != nil {
			r.fail("--toc-digest %q: %v", r.TOCDigestExpected, err)
			return
		}
		wantTOC = d
	}
	file, err := os.Open(r.Blob)
	if err != nil {
		r.fail("%v", err)
		return
	}
	defer file.Close()
	info, err := file.Stat()
	if err != nil {
		r.fail("%v", err)
		return
	}
	r.BlobBytes = info.Size()
	blob := io.NewSectionReader(file, 0, info.Size())

	plain := readPlain(io.NewSectionReader(blob, 0, blob.Size()), r)
	if plain != nil {
		r.checkPlain(plain)
	}
	reader, verifier, toc := r.openReference(blob, plain, wantTOC)
	if toc == nil {
		return
	}
	r.checkTOC(toc, plain)
	if reader != nil {
		r.readEveryFile(toc, reader, verifier, plain)
	}
}

// checkPlain: the whole-stream facts (DiffID, digests, where the TOC is).
func (r *verifyReport) checkPlain(plain *plainView) {
	r.BlobDigest, r.DiffID, r.GzipMembers = plain.blobDigest, plain.diffID, plain.members
	r.UncompressedTarBytes, r.TarEntries = plain.streamSize, len(plain.order)
	if r.DiffIDExpected != "" && r.DiffIDExpected != r.DiffID {
		r.fail("DiffID is %s, expected %s", r.DiffID, r.DiffIDExpected)
	}
	toc, found := plain.entries[estargz.TOCTarName]
	if !found {
		r.fail("the tar stream has no %s entry", estargz.TOCTarName)
		return
	}
	r.TOCJSONBytes = toc.header.Size
	r.TOCIsLastTarEntry = plain.last() == estargz.TOCTarName
	if !r.TOCIsLastTarEntry {
		r.fail("the last tar entry is %q, not %s", plain.last(), estargz.TOCTarName)
	}
	r.EndMarkerBeforeTOC = toc.afterEndMark
	r.PlainExtractSeesTOC = plain.seenByPlainExtractor(estargz.TOCTarName)
}

// openReference opens the blob with the reference reader and parses its TOC
// with the reference decompressor (the reader does not expose the entries).
func (r *verifyReport) openReference(blob *io.SectionReader, plain *plainView, wantTOC digest.Digest) (*estargz.Reader, estargz.TOCEntryVerifier, *estargz.JTOC) {
	tocOffset, footerSize, err := estargz.OpenFooter(blob)
	if err != nil {
		r.fail("reference OpenFooter: %v", err)
		return nil, nil, nil
	}
	r.TOCOffset, r.FooterSize = tocOffset, footerSize
	if footerSize != estargz.FooterSize {
		r.warn("a legacy %d-byte stargz footer, not the %d-byte eStargz one", footerSize, estargz.FooterSize)
	}
	if plain != nil {
		if _, ok := plain.memberStarts[tocOffset]; !ok {
			r.fail("the footer's TOC offset %d is not where a gzip member starts", tocOffset)
		}
		if _, ok := plain.memberStarts[blob.Size()-footerSize]; !ok {
			r.fail("the footer (the last %d bytes) is not a gzip member of its own", footerSize)
		}
	}
	if tocOffset < 0 || tocOffset > blob.Size()-footerSize {
		r.fail("the footer's TOC offset %d is outside the blob", tocOffset)
		return nil, nil, nil
	}
	toc, parsedDigest, err := new(estargz.GzipDecompressor).ParseTOC(io.NewSectionReader(blob, tocOffset, blob.Size()-tocOffset-footerSize))
	if err != nil {
		r.fail("reference ParseTOC: %v", err)
		return nil, nil, nil
	}
	r.TOCVersion = toc.Version

	reader, err := estargz.Open(blob)
	if err != nil {
		r.fail("reference estargz.Open: %v", err)
		return nil, nil, toc
	}
	r.TOCDigest = reader.TOCDigest().String()
	if parsedDigest != reader.TOCDigest() {
		r.fail("ParseTOC gives TOC digest %s, the reader %s", parsedDigest, reader.TOCDigest())
	}
	// The reader digests the bytes its JSON decoder consumed, a writer the
	// whole entry: bytes after the JSON value would make them differ.
	if plain != nil {
		if e, ok := plain.entries[estargz.TOCTarName]; ok && e.sha256 != r.TOCDigest {
			r.fail("the %s entry's content has digest %s, but the reader's TOC digest is %s", estargz.TOCTarName, e.sha256, r.TOCDigest)
		}
	}
	var verifier estargz.TOCEntryVerifier
	if wantTOC != "" {
		if verifier, err = reader.VerifyTOC(wantTOC); err != nil {
			r.fail("reference VerifyTOC: %v", err)
		} else {
			r.TOCDigestVerified = true
		}
	}
	if verifier == nil {
		if verifier, err = reader.Verifiers(); err != nil {
			r.fail("reference Verifiers (every chunk needs a digest): %v", err)
			verifier = nil
		}
	}
	return reader, verifier, toc
}

// checkTOC: each TOC entry against the tar entry it describes, and each chunk
// against the gzip member it claims to start.
func (r *verifyReport) checkTOC(toc *estargz.JTOC, plain *plainView) {
	described := map[string]bool{}
	var file *estargz.TOCEntry // the reg entry that chunk entries continue
	for _, e := range toc.Entries {
		r.Entries++
		r.EntriesByType[e.Type]++
		name := cleanName(e.Name)
		switch e.Type {
		case "chunk":
			if file == nil {
				r.fail("a chunk entry (offset %d) before any reg entry", e.Offset)
				continue
			}
			name = cleanName(file.Name)
		case "reg":
			file = e
			r.noteLandmark(name, plain)
		}
		if e.Type != "chunk" {
			if described[name] {
				r.warn("%q is in the TOC more than once (readers keep the last)", name)
			}
			described[name] = true
		}
		if plain == nil {
			continue
		}
		tarEntry := plain.entries[name]
		if e.Type != "chunk" {
			r.compareWithTar(e, name, tarEntry)
		}
		if (e.Type == "reg" && e.Size > 0) || e.Type == "chunk" {
			at, isStart := plain.memberStarts[e.Offset]
			switch {
			case !isStart:
				r.fail("%q: its data at offset %d (chunkOffset %d) is not where a gzip member starts", name, e.Offset, e.ChunkOffset)
			case tarEntry != nil && tarEntry.dataStart+e.ChunkOffset != at:
				r.fail("%q: the gzip member at %d starts at uncompressed offset %d, but chunkOffset %d of the file is at %d",
					name, e.Offset, at, e.ChunkOffset, tarEntry.dataStart+e.ChunkOffset)
			}
		}
	}
	if !r.LandmarkExists {
		r.warn("no %s or %s entry (the reference writer always adds one)", estargz.PrefetchLandmark, estargz.NoPrefetchLandmark)
	}
	if plain == nil {
		return
	}
	for _, name := range plain.order {
		if name != estargz.TOCTarName && !described[name] {
			r.fail("tar entry %q (%s) is not in the TOC", name, tocType(plain.entries[name].header.Typeflag))
		}
	}
}

func (r *verifyReport) noteLandmark(name string, plain *plainView) {
	if name != estargz.PrefetchLandmark && name != estargz.NoPrefetchLandmark {
		return
	}
	if r.LandmarkExists {
		r.warn("two landmarks, %q and %q", r.Landmark, name)
	}
	r.Landmark, r.LandmarkExists = name, true
	r.PlainExtractSeesLandmark = plain != nil && plain.seenByPlainExtractor(name)
}

func (r *verifyReport) compareWithTar(e *estargz.TOCEntry, name string, t *tarEntry) {
	if t == nil {
		if !(name == "" && e.Type == "dir") { // the root may be implicit
			r.fail("TOC entry %q (%s) has no tar entry", name, e.Type)
		}
		return
	}
	h := t.header
	if want := tocType(h.Typeflag); want != e.Type {
		r.fail("%q: TOC type %q, tar type %q", name, e.Type, want)
		return
	}
	if e.Type == "reg" && e.Size != h.Size {
		r.fail("%q: TOC size %d, tar size %d", name, e.Size, h.Size)
	}
	if (e.Type == "symlink" && e.LinkName != h.Linkname) || (e.Type == "hardlink" && cleanName(e.LinkName) != cleanName(h.Linkname)) {
		r.fail("%q: TOC linkName %q, tar %q", name, e.LinkName, h.Linkname)
	}
	if e.Mode != h.Mode {
		r.fail("%q: TOC mode %o, tar mode %o", name, e.Mode, h.Mode)
	}
	if e.UID != h.Uid || e.GID != h.Gid {
		r.fail("%q: TOC uid/gid %d/%d, tar %d/%d", name, e.UID, e.GID, h.Uid, h.Gid)
	}
	if e.ModTime3339 == "" {
		if h.ModTime.Unix() != 0 {
			r.warn("%q: no modtime in the TOC, tar mtime %s", name, h.ModTime.UTC().Format(time.RFC3339))
		}
	} else if t, err := time.Parse(time.RFC3339, e.ModTime3339); err != nil {
		r.fail("%q: modtime %q: %v", name, e.ModTime3339, err)
	} else if !sameSecond(t, h.ModTime) {
		r.warn("%q: TOC modtime %s, tar mtime %s", name, e.ModTime3339, h.ModTime.UTC().Format(time.RFC3339))
	}
}

// readEveryFile reads each regular file chunk by chunk through the reference
// reader, as the snapshotter does, checking every chunk digest and the
// whole-file digest against the TOC and against the plain pass.
func (r *verifyReport) readEveryFile(toc *estargz.JTOC, reader *estargz.Reader, verifier estargz.TOCEntryVerifier, plain *plainView) {
	var buf []byte
	for _, e := range toc.Entries {
		if e.Type != "reg" {
			continue
		}
		name := cleanName(e.Name)
		r.RegularFiles++
		if found, ok := reader.Lookup(name); !ok || found.Type != "reg" || found.Size != e.Size {
			r.fail("%q: the reference reader does not find it as a %d-byte regular file", name, e.Size)
			continue
		}
		content, err := reader.OpenFile(name)
		if err != nil {
			r.fail("%q: reference OpenFile: %v", name, err)
			continue
		}
		whole := sha256.New()
		complete := true
		for offset := int64(0); offset < e.Size && complete; {
			chunk, ok := reader.ChunkEntryForOffset(name, offset)
			if !ok || chunk.ChunkOffset != offset || chunk.ChunkSize <= 0 || offset+chunk.ChunkSize > e.Size || chunk.ChunkSize > 1<<30 {
				r.fail("%q: no sound chunk entry at file offset %d (file size %d)", name, offset, e.Size)
				complete = false
				break
			}
			if int64(cap(buf)) < chunk.ChunkSize {
				buf = make([]byte, chunk.ChunkSize)
			}
			data := buf[:chunk.ChunkSize]
			if n, err := content.ReadAt(data, offset); int64(n) != chunk.ChunkSize || (err != nil && err != io.EOF) {
				r.fail("%q: reference ReadAt(%d, %d bytes) read %d: %v", name, offset, chunk.ChunkSize, n, err)
				complete = false
				break
			}
			complete = r.checkChunk(name, chunk, data, verifier)
			whole.Write(data)
			r.Chunks++
			offset += chunk.ChunkSize
		}
		if !complete {
			continue
		}
		got := fmt.Sprintf("sha256:%x", whole.Sum(nil))
		r.UncompressedBytes += e.Size
		switch {
		case e.Digest == "":
			r.fail("%q: its TOC entry has no digest", name)
		case e.Digest != got:
			r.fail("%q: TOC digest %s, content read %s", name, e.Digest, got)
		}
		if plain != nil {
			if t := plain.entries[name]; t != nil && t.sha256 != "" {
				r.FilesCompared++
				if t.sha256 != got {
					r.fail("%q: read through the reference reader %s, in the plain tar %s", name, got, t.sha256)
				}
			}
		}
	}
}

func (r *verifyReport) checkChunk(name string, chunk *estargz.TOCEntry, data []byte, verifier estargz.TOCEntryVerifier) bool {
	if verifier == nil {
		return true
	}
	v, err := verifier.Verifier(chunk)
	if err != nil {
		r.fail("%q: chunk at file offset %d: %v", name, chunk.ChunkOffset, err)
		return false
	}
	_, _ = v.Write(data)
	if !v.Verified() {
		r.fail("%q: chunk at file offset %d (blob offset %d, %d bytes) does not match its chunkDigest %s: it is sha256:%x",
			name, chunk.ChunkOffset, chunk.Offset, chunk.ChunkSize, chunk.ChunkDigest, sha256.Sum256(data))
		return false
	}
	return true
}
