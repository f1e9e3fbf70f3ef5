package main

// lazyread: one file of a blob read over HTTP Range requests through the
// reference reader, the way a lazy-pulling snapshotter reads it, counting
// every byte fetched.

import (
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	digest "github.com/opencontainers/go-digest"
)

var lazyReadCommand = command{
	positional: []string{"URL", "FILE"},
	flags: func(fs *flag.FlagSet) {
		fs.String("toc-digest", "", "check the TOC against this digest (as the snapshotter does)")
		fs.Var(&multiFlag{}, "header", "an extra request header, 'Name: value' (repeatable)")
	},
	run: func(fs *flag.FlagSet, args []string) (report, error) {
		headers := http.Header{}
		for _, line := range *fs.Lookup("header").Value.(*multiFlag) {
			name, value, found := strings.Cut(line, ":")
			if !found || strings.TrimSpace(name) == "" {
				return nil, fmt.Errorf("--header %q: expected 'Name: value'", line)
			}
			headers.Add(strings.TrimSpace(name), strings.TrimSpace(value))
		}
		res := &lazyReadReport{URL: args[0], File: cleanName(args[1]), Ranges: []string{}}
		started := time.Now()
		if err := res.read(headers, fs.Lookup("toc-digest").Value.String()); err != nil {
			res.Error = err.Error()
		}
		res.Seconds = time.Since(started).Seconds()
		res.OK = res.Error == ""
		return res, nil
	},
}

type lazyReadReport struct {
	OK                bool     `json:"ok"`
	URL               string   `json:"url"`
	File              string   `json:"file"`
	BlobSize          int64    `json:"blob_size"`
	FileSize          int64    `json:"file_size"`
	FileChunks        int      `json:"file_chunks"`
	SHA256            string   `json:"sha256"`
	TOCFileDigest     string   `json:"toc_file_digest"`
	DigestMatches     bool     `json:"digest_matches_toc"`
	ChunksVerified    bool     `json:"chunks_verified"`
	TOCDigest         string   `json:"toc_digest"`
	TOCDigestVerified bool     `json:"toc_digest_verified"`
	BytesFetched      int64    `json:"bytes_fetched"`
	FetchedFraction   float64  `json:"fetched_fraction_of_blob"`
	RangeRequests     int      `json:"range_requests"`
	HTTPRequests      int      `json:"http_requests"`
	HTTPRoundTrips    int      `json:"http_round_trips"`
	Ranges            []string `json:"ranges"`
	Seconds           float64  `json:"seconds"`
	Error             string   `json:"error,omitempty"`
}

func (r *lazyReadReport) ok() bool { return r.OK }

// rangeBlob is an io.ReaderAt over a URL: one "Range: bytes=a-b" GET per
// ReadAt, nothing cached, so that every byte the reader needs is counted.
type rangeBlob struct {
	client  *http.Client
	url     string
	headers http.Header
	size    int64

	mu      sync.Mutex
	fetched int64
	ranges  []string
}

func (b *rangeBlob) ReadAt(p []byte, offset int64) (int, error) {
	if offset < 0 || offset >= b.size {
		return 0, io.EOF
	}
	want, atEnd := int64(len(p)), error(nil)
	if offset+want > b.size {
		want, atEnd = b.size-offset, io.EOF
	}
	if want == 0 {
		return 0, atEnd
	}
	span := fmt.Sprintf("bytes=%d-%d", offset, offset+want-1)
	req, err := http.NewRequest(http.MethodGet, b.url, nil)
	if err != nil {
		return 0, err
	}
	req.Header = b.headers.Clone()
	req.Header.Set("Range", span)
	b.mu.Lock()
	b.ranges = append(b.ranges, span)
	b.mu.Unlock()
	resp, err := b.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent {
		return 0, fmt.Errorf("GET %s with Range %s answered %s, not 206 Partial Content", b.url, span, resp.Status)
	}
	n, err := io.ReadFull(resp.Body, p[:want])
	b.mu.Lock()
	b.fetched += int64(n)
	b.mu.Unlock()
	if err != nil {
		return n, fmt.Errorf("GET %s with Range %s: %d of %d bytes: %v", b.url, span, n, want, err)
	}
	return n, atEnd
}

// tripCounter counts every HTTP round trip, redirect hops included.
type tripCounter struct {
	next  http.RoundTripper
	mu    sync.Mutex
	trips int
}

func (t *tripCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	t.mu.Lock()
	t.trips++
	t.mu.Unlock()
	return t.next.RoundTrip(req)
}

func (r *lazyReadReport) read(headers http.Header, tocDigest string) error {
	trips := &tripCounter{next: http.DefaultTransport}
	client := &http.Client{Transport: trips, Timeout: 5 * time.Minute}
	defer func() { r.HTTPRoundTrips = trips.trips }()

	size, err := contentLength(client, r.URL, headers)
	r.HTTPRequests = 1
	if err != nil {
		return err
	}
	r.BlobSize = size
	blob := &rangeBlob{client: client, url: r.URL, headers: headers, size: size}
	defer func() {
		r.BytesFetched, r.Ranges = blob.fetched, blob.ranges
		r.RangeRequests = len(blob.ranges)
		r.HTTPRequests += r.RangeRequests
		if size > 0 {
			r.FetchedFraction = float64(blob.fetched) / float64(size)
		}
	}()

	reader, err := estargz.Open(io.NewSectionReader(blob, 0, size))
	if err != nil {
		return fmt.Errorf("reference estargz.Open: %v", err)
	}
	r.TOCDigest = reader.TOCDigest().String()
	verifier, err := r.verifier(reader, tocDigest)
	if err != nil {
		return err
	}
	entry, found := reader.Lookup(r.File)
	if !found {
		return fmt.Errorf("%q is not in the TOC", r.File)
	}
	if entry.Type != "reg" {
		return fmt.Errorf("%q is a %s, not a regular file", r.File, entry.Type)
	}
	r.FileSize, r.TOCFileDigest = entry.Size, entry.Digest
	content, err := reader.OpenFile(r.File)
	if err != nil {
		return fmt.Errorf("reference OpenFile: %v", err)
	}
	whole := sha256.New()
	var buf []byte
	for offset := int64(0); offset < entry.Size; {
		chunk, ok := reader.ChunkEntryForOffset(r.File, offset)
		if !ok || chunk.ChunkOffset != offset || chunk.ChunkSize <= 0 || chunk.ChunkSize > 1<<30 {
			return fmt.Errorf("%q: no sound chunk entry at file offset %d", r.File, offset)
		}
		if int64(cap(buf)) < chunk.ChunkSize {
			buf = make([]byte, chunk.ChunkSize)
		}
		data := buf[:chunk.ChunkSize]
		if n, err := content.ReadAt(data, offset); int64(n) != chunk.ChunkSize || (err != nil && err != io.EOF) {
			return fmt.Errorf("%q: ReadAt(%d, %d bytes) read %d: %v", r.File, offset, chunk.ChunkSize, n, err)
		}
		v, err := verifier.Verifier(chunk)
		if err != nil {
			return fmt.Errorf("%q: %v", r.File, err)
		}
		_, _ = v.Write(data)
		if !v.Verified() {
			return fmt.Errorf("%q: the chunk at file offset %d does not match its chunkDigest", r.File, offset)
		}
		whole.Write(data)
		r.FileChunks++
		offset += chunk.ChunkSize
	}
	r.ChunksVerified = true
	r.SHA256 = fmt.Sprintf("sha256:%x", whole.Sum(nil))
	r.DigestMatches = r.SHA256 == entry.Digest
	if !r.DigestMatches {
		return fmt.Errorf("%q: read %s, the TOC says %s", r.File, r.SHA256, entry.Digest)
	}
	return nil
}

func (r *lazyReadReport) verifier(reader *estargz.Reader, tocDigest string) (estargz.TOCEntryVerifier, error) {
	if tocDigest == "" {
		v, err := reader.Verifiers()
		if err != nil {
			return nil, fmt.Errorf("reference Verifiers: %v", err)
		}
		return v, nil
	}
	want, err := digest.Parse(tocDigest)
	if err != nil {
		return nil, fmt.Errorf("--toc-digest %q: %v", tocDigest, err)
	}
	v, err := reader.VerifyTOC(want)
	if err != nil {
		return nil, fmt.Errorf("reference VerifyTOC: %v", err)
	}
	r.TOCDigestVerified = true
	return v, nil
}

// contentLength asks HEAD (following redirects) for the blob's size.
func contentLength(client *http.Client, url string, headers http.Header) (int64, error) {
	req, err := http.NewRequest(http.MethodHead, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header = headers.Clone()
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("HEAD %s: %v", url, err)
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode != http.StatusOK:
		return 0, fmt.Errorf("HEAD %s answered %s", url, resp.Status)
	case resp.ContentLength < 0:
		return 0, errors.New("HEAD " + url + " gave no Content-Length")
	}
	return resp.ContentLength, nil
}
