// Command estargz-ref checks eStargz blobs with the reference eStargz reader
// (github.com/containerd/stargz-snapshotter/estargz, as Debian packages it)
// and times the reference writer. It is modelyard's test harness: the tests
// and benchmarks run it, `./dev setup` builds it into .tools/bin.
//
//	estargz-ref verify BLOB [--toc-digest sha256:HEX] [--diff-id sha256:HEX]
//	estargz-ref lazyread URL FILE [--toc-digest sha256:HEX] [--header 'Name: value']...
//	estargz-ref build TAR OUT [--level N] [--chunk-size BYTES]
//	estargz-ref version
//
// Each command prints one JSON object on stdout; "ok" says whether it
// succeeded. A failure also prints one line on stderr and exits 1; a usage
// error exits 2.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
)

// libraryVersion is the Debian version of the estargz library, set at build
// time (-ldflags "-X main.libraryVersion=...").
var libraryVersion = "unknown"

const usageText = `usage:
  estargz-ref verify BLOB [--toc-digest sha256:HEX] [--diff-id sha256:HEX]
      thorough check: plain gzip+tar pass, then every chunk and file through the reference reader
  estargz-ref lazyread URL FILE [--toc-digest sha256:HEX] [--header 'Name: value']...
      read one file over HTTP Range requests, as a lazy-pulling snapshotter does; report bytes fetched
  estargz-ref build TAR OUT [--level N] [--chunk-size BYTES]
      the reference writer (estargz.Build), timed
  estargz-ref version
`

type command struct {
	positional []string // names of the positional arguments, for the usage error
	flags      func(*flag.FlagSet)
	run        func(fs *flag.FlagSet, args []string) (report, error)
}

// report is what a command prints; ok() says whether it passed.
type report interface{ ok() bool }

func main() {
	os.Exit(dispatch(os.Args[1:]))
}

func dispatch(args []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(os.Stdout, usageText)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	name, rest := args[0], args[1:]
	if name == "version" || name == "--version" {
		printJSON(map[string]interface{}{
			"tool":            "estargz-ref (modelyard tests/go/estargz-ref)",
			"estargz_library": libraryVersion,
			"go":              runtime.Version(),
			"footer_size":     estargz.FooterSize,
			"toc_name":        estargz.TOCTarName,
		})
		return 0
	}
	commands := map[string]command{"verify": verifyCommand, "lazyread": lazyReadCommand, "build": buildCommand}
	cmd, known := commands[name]
	if !known {
		fmt.Fprintf(os.Stderr, "estargz-ref: unknown command %q\n%s", name, usageText)
		return 2
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cmd.flags(fs)
	if err := fs.Parse(flagsFirst(rest)); err != nil {
		return usageError(name, err)
	}
	if fs.NArg() != len(cmd.positional) {
		return usageError(name, fmt.Errorf("expected %s, got %d argument(s)", strings.Join(cmd.positional, " "), fs.NArg()))
	}
	result, err := cmd.run(fs, fs.Args())
	if err != nil {
		return usageError(name, err)
	}
	printJSON(result)
	if !result.ok() {
		fmt.Fprintf(os.Stderr, "estargz-ref %s: FAILED: %s\n", name, summary(result))
		return 1
	}
	return 0
}

// flagsFirst moves "--name value" and "--name=value" pairs before the
// positional arguments, so that flags may follow them as the callers write
// them (every flag of this tool takes a value).
func flagsFirst(args []string) []string {
	var flags, positional []string
	for i := 0; i < len(args); i++ {
		switch arg := args[i]; {
		case arg == "--":
			positional = append(positional, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(arg, "-") && arg != "-":
			flags = append(flags, arg)
			if !strings.Contains(arg, "=") && i+1 < len(args) {
				flags = append(flags, args[i+1])
				i++
			}
		default:
			positional = append(positional, arg)
		}
	}
	return append(append(flags, "--"), positional...)
}

func usageError(name string, err error) int {
	fmt.Fprintf(os.Stderr, "estargz-ref %s: %v\n%s", name, err, usageText)
	return 2
}

func printJSON(v interface{}) {
	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", "  ")
	out.SetEscapeHTML(false)
	if err := out.Encode(v); err != nil {
		fmt.Fprintf(os.Stderr, "estargz-ref: writing the report: %v\n", err)
	}
}

// summary is the one line a failed command prints on stderr.
func summary(r report) string {
	switch r := r.(type) {
	case *verifyReport:
		return fmt.Sprintf("%s: %d error(s), the first: %s", r.Blob, len(r.Errors), r.Errors[0])
	case *lazyReadReport:
		return r.Error
	case *buildReport:
		return r.Error
	}
	return "failed"
}

// multiFlag collects a repeatable flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ", ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
