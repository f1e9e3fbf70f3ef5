// Command oras-copy copies one reference between registries with oras-go's
// Copy (oras.land/oras-go/pkg/oras, as Debian packages it: the engine of the
// oras CLI's `oras copy` in its 0.x releases), over plain HTTP. It is
// modelyard's test harness for "oras copies every format with the same
// digests"; `./dev setup` builds it into .tools/bin.
//
//	oras-copy FROM TO    e.g. oras-copy 127.0.0.1:5000/org/m:latest-modelpack 127.0.0.1:5001/org/m:latest-modelpack
//
// It prints the copied root's digest on stdout; a failure prints one line on
// stderr and exits 1, a usage error exits 2.
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/containerd/containerd/log"
	"github.com/sirupsen/logrus"
	"oras.land/oras-go/pkg/content"
	"oras.land/oras-go/pkg/oras"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: oras-copy FROM TO")
		os.Exit(2)
	}
	// containerd's resolver logs every request at info level: keep stderr for the one failure line.
	log.L.Logger.SetOutput(io.Discard)
	log.L.Logger.SetLevel(logrus.ErrorLevel)
	registry, err := content.NewRegistry(content.RegistryOptions{PlainHTTP: true})
	if err != nil {
		fmt.Fprintf(os.Stderr, "oras-copy: %v\n", err)
		os.Exit(1)
	}
	// One descriptor at a time: the default dispatch pushes a blob that two manifests name (an image index's
	// platforms share their layer) twice at once, and containerd 1.6's pusher interleaves both into one upload.
	root, err := oras.Copy(context.Background(), registry, os.Args[1], registry, os.Args[2], oras.WithPullByBFS)
	if err != nil {
		fmt.Fprintf(os.Stderr, "oras-copy: %s -> %s: %v\n", os.Args[1], os.Args[2], err)
		os.Exit(1)
	}
	fmt.Println(root.Digest)
}
