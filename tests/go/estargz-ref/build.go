package main

// build: the reference writer, estargz.Build, timed; the speed and size
// anchor of bench/layer.py and the "same files, reference layout" image of
// the lazy-pull test.

import (
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
)

var buildCommand = command{
	positional: []string{"TAR", "OUT"},
	flags: func(fs *flag.FlagSet) {
		fs.String("level", strconv.Itoa(gzip.BestCompression), "gzip level, -2..9 (9 is the library's default)")
		fs.String("chunk-size", "0", "chunk size in bytes (0: the library's default, 4 MiB)")
	},
	run: func(fs *flag.FlagSet, args []string) (report, error) {
		level, err := strconv.Atoi(fs.Lookup("level").Value.String())
		if err != nil || level < gzip.HuffmanOnly || level > gzip.BestCompression {
			return nil, fmt.Errorf("--level %q: expected -2..9", fs.Lookup("level").Value.String())
		}
		chunkSize, err := strconv.Atoi(fs.Lookup("chunk-size").Value.String())
		if err != nil || chunkSize < 0 {
			return nil, fmt.Errorf("--chunk-size %q: expected a number of bytes", fs.Lookup("chunk-size").Value.String())
		}
		res := &buildReport{Input: args[0], Output: args[1], Level: level, ChunkSize: chunkSize, GOMAXPROCS: runtime.GOMAXPROCS(0)}
		if err := res.build(); err != nil {
			res.Error = err.Error()
		}
		res.OK = res.Error == ""
		return res, nil
	},
}

type buildReport struct {
	OK            bool    `json:"ok"`
	Input         string  `json:"input"`
	Output        string  `json:"output"`
	Level         int     `json:"level"`
	ChunkSize     int     `json:"chunk_size"`
	GOMAXPROCS    int     `json:"gomaxprocs"`
	InputBytes    int64   `json:"input_bytes"`
	OutputBytes   int64   `json:"output_bytes"`
	Ratio         float64 `json:"compression_ratio"`
	WallSeconds   float64 `json:"wall_seconds"`
	BuildSeconds  float64 `json:"build_call_seconds"`
	StreamSeconds float64 `json:"stream_out_seconds"`
	MBPerSec      float64 `json:"mb_per_s"`
	MiBPerSec     float64 `json:"mib_per_s"`
	TOCDigest     string  `json:"toc_digest"`
	DiffID        string  `json:"diff_id"`
	BlobDigest    string  `json:"blob_digest"`
	Error         string  `json:"error,omitempty"`
}

func (r *buildReport) ok() bool { return r.OK }

func (r *buildReport) build() error {
	in, err := os.Open(r.Input)
	if err != nil {
		return err
	}
	defer in.Close()
	info, err := in.Stat()
	if err != nil {
		return err
	}
	r.InputBytes = info.Size()

	options := []estargz.Option{estargz.WithCompressionLevel(r.Level)}
	if r.ChunkSize > 0 {
		options = append(options, estargz.WithChunkSize(r.ChunkSize))
	}
	started := time.Now()
	blob, err := estargz.Build(io.NewSectionReader(in, 0, info.Size()), options...)
	if err != nil {
		return fmt.Errorf("estargz.Build: %v", err)
	}
	defer blob.Close()
	built := time.Now()
	// Build compresses into temp files; reading the blob out also computes
	// the DiffID, so the copy is part of the writer's cost.
	written, blobDigest, err := writeOut(blob, r.Output)
	if err != nil {
		return err
	}
	done := time.Now()

	r.OutputBytes, r.BlobDigest = written, blobDigest
	r.BuildSeconds, r.StreamSeconds = built.Sub(started).Seconds(), done.Sub(built).Seconds()
	r.WallSeconds = done.Sub(started).Seconds()
	if r.WallSeconds > 0 {
		r.MBPerSec = float64(r.InputBytes) / 1e6 / r.WallSeconds
		r.MiBPerSec = float64(r.InputBytes) / (1 << 20) / r.WallSeconds
	}
	if r.InputBytes > 0 {
		r.Ratio = float64(r.OutputBytes) / float64(r.InputBytes)
	}
	r.TOCDigest, r.DiffID = blob.TOCDigest().String(), blob.DiffID().String()
	return nil
}

func writeOut(blob io.Reader, path string) (int64, string, error) {
	out, err := os.Create(path)
	if err != nil {
		return 0, "", err
	}
	digest := sha256.New()
	buffered := bufio.NewWriterSize(io.MultiWriter(out, digest), 1<<20)
	n, err := io.Copy(buffered, blob)
	if err == nil {
		err = buffered.Flush()
	}
	if closeErr := out.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return n, "", fmt.Errorf("writing %s: %v", path, err)
	}
	return n, fmt.Sprintf("sha256:%x", digest.Sum(nil)), nil
}
