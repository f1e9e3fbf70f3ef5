// Command stargz-grpc is a minimal stargz snapshotter daemon: the lazy-pulling
// filesystem and snapshotter of github.com/containerd/stargz-snapshotter (as
// Debian packages it) served on a gRPC socket, which containerd uses as a
// proxy plugin. It stands in for upstream's containerd-stargz-grpc, which
// Debian does not ship. Upstream's service package cannot be built from
// Debian's packages (its CRI keychain needs k8s.io/cri-api), so this wires
// the same parts itself: registry hosts with mirrors and Docker-config
// credentials, the FUSE filesystem, the overlay-based snapshotter.
//
//	stargz-grpc --root DIR --address SOCKET [--config config.toml] [--log-level debug]
//
// containerd's config then names it:
//
//	[proxy_plugins.stargz]
//	  type = "snapshot"
//	  address = "SOCKET"
//
// The config file takes the upstream daemon's options: prefetch_size,
// noprefetch, no_background_fetch, [blob] chunk_size, [directory_cache],
// [[resolver.host."HOST".mirrors]] host/insecure/request_timeout_sec, ...
// Logs are JSON lines on stderr; at --log-level debug each layer it prepares
// says "remote-snapshot-prepared": "true" (lazily mounted) or "false" (the
// layer falls back to a plain pull). SIGINT or SIGTERM unmounts every layer
// and exits.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/log"
	"github.com/containerd/containerd/reference"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/overlay/overlayutils"
	stargzfs "github.com/containerd/stargz-snapshotter/fs"
	fsconfig "github.com/containerd/stargz-snapshotter/fs/config"
	"github.com/containerd/stargz-snapshotter/fs/layer"
	"github.com/containerd/stargz-snapshotter/fs/source"
	"github.com/containerd/stargz-snapshotter/snapshot"
	dockerconfig "github.com/docker/cli/cli/config"
	rhttp "github.com/hashicorp/go-retryablehttp"
	toml "github.com/pelletier/go-toml"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
)

// Config is the upstream daemon's config file, less its Kubernetes and CRI keychains.
type Config struct {
	fsconfig.Config
	Resolver struct {
		Host map[string]struct {
			Mirrors []Mirror `toml:"mirrors"`
		} `toml:"host"`
	} `toml:"resolver"`
}

// Mirror is one registry to try for a host, before the host itself.
type Mirror struct {
	Host              string `toml:"host"`
	Insecure          bool   `toml:"insecure"`            // plain HTTP
	RequestTimeoutSec int    `toml:"request_timeout_sec"` // 0: 30 s; below 0: none
}

func main() {
	root := flag.String("root", "/var/lib/containerd-stargz-grpc", "directory for layers, caches and snapshots")
	address := flag.String("address", "/run/containerd-stargz-grpc/containerd-stargz-grpc.sock", "gRPC socket to serve on")
	configPath := flag.String("config", "", "TOML config in the upstream daemon's format (none: the library's defaults)")
	level := flag.String("log-level", "info", "debug, info, warn or error")
	flag.Parse()
	if err := run(*root, *address, *configPath, *level); err != nil {
		fmt.Fprintf(os.Stderr, "stargz-grpc: %v\n", err)
		os.Exit(1)
	}
}

func run(root, address, configPath, level string) error {
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return fmt.Errorf("--log-level %q: %v", level, err)
	}
	logrus.SetLevel(lvl)
	logrus.SetFormatter(&logrus.JSONFormatter{TimestampFormat: log.RFC3339NanoFixed})
	ctx := log.WithLogger(context.Background(), log.L)

	config, err := loadConfig(configPath)
	if err != nil {
		return err
	}
	snapshotter, err := newSnapshotter(ctx, root, config)
	if err != nil {
		return err
	}
	defer func() {
		if err := snapshotter.Close(); err != nil {
			log.G(ctx).WithError(err).Warn("closing the snapshotter")
		}
	}()

	listener, err := listen(address)
	if err != nil {
		return err
	}
	server := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(server, snapshotservice.FromSnapshotter(snapshotter))
	served := make(chan error, 1)
	go func() { served <- server.Serve(listener) }()
	log.G(ctx).WithField("address", address).WithField("root", root).Info("serving the stargz snapshotter")

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	select {
	case sig := <-stop:
		log.G(ctx).WithField("signal", sig.String()).Info("stopping: unmounting every layer")
		server.Stop()
		return nil
	case err := <-served:
		return fmt.Errorf("serving %s: %v", address, err)
	}
}

// newSnapshotter: the FUSE filesystem that mounts eStargz layers from the
// registry, under the snapshotter that containerd asks for snapshots.
func newSnapshotter(ctx context.Context, root string, config *Config) (snapshots.Snapshotter, error) {
	snapshotRoot := filepath.Join(root, "snapshotter")
	if err := os.MkdirAll(snapshotRoot, 0o700); err != nil {
		return nil, err
	}
	// Overlay opaque directories are marked with trusted.* xattrs, or user.*
	// where the kernel wants those (rootless).
	opaque := layer.OverlayOpaqueTrusted
	if user, err := overlayutils.NeedsUserXAttr(snapshotRoot); err != nil {
		log.G(ctx).WithError(err).Warn("cannot tell whether overlay needs userxattr; assuming not")
	} else if user {
		opaque = layer.OverlayOpaqueUser
	}
	fs, err := stargzfs.NewFilesystem(filepath.Join(root, "stargz"), config.Config,
		stargzfs.WithGetSources(source.FromDefaultLabels(config.hosts)),
		stargzfs.WithOverlayOpaqueType(opaque))
	if err != nil {
		return nil, fmt.Errorf("the stargz filesystem: %v", err)
	}
	sn, err := snapshot.NewSnapshotter(ctx, snapshotRoot, fs, snapshot.AsynchronousRemove)
	if err != nil {
		return nil, fmt.Errorf("the snapshotter: %v", err)
	}
	return sn, nil
}

// hosts lists where to fetch an image's layers from: the configured mirrors,
// then the image's own host. Localhost and insecure mirrors speak plain HTTP.
func (c *Config) hosts(ref reference.Spec) ([]docker.RegistryHost, error) {
	name := ref.Hostname()
	var result []docker.RegistryHost
	for _, m := range append(c.Resolver.Host[name].Mirrors, Mirror{Host: name}) {
		client := rhttp.NewClient()
		client.Logger = nil // one line per request would drown the log
		httpClient := client.StandardClient()
		switch {
		case m.RequestTimeoutSec == 0:
			httpClient.Timeout = 30 * time.Second
		case m.RequestTimeoutSec > 0:
			httpClient.Timeout = time.Duration(m.RequestTimeoutSec) * time.Second
		}
		host := docker.RegistryHost{
			Client:       httpClient,
			Host:         m.Host,
			Scheme:       "https",
			Path:         "/v2",
			Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve,
			Authorizer:   docker.NewDockerAuthorizer(docker.WithAuthClient(httpClient), docker.WithAuthCreds(dockerConfigCredentials)),
		}
		if local, _ := docker.MatchLocalhost(m.Host); local || m.Insecure {
			host.Scheme = "http"
		}
		if host.Host == "docker.io" {
			host.Host = "registry-1.docker.io"
		}
		result = append(result, host)
	}
	return result, nil
}

// dockerConfigCredentials reads ~/.docker/config.json (or $DOCKER_CONFIG) at
// each authentication, so a `docker login` takes effect without a restart.
func dockerConfigCredentials(host string) (string, string, error) {
	file, err := dockerconfig.Load("")
	if err != nil {
		return "", "", nil // no usable config: anonymous
	}
	if host == "registry-1.docker.io" {
		host = "https://index.docker.io/v1/"
	}
	auth, err := file.GetAuthConfig(host)
	if err != nil {
		return "", "", err
	}
	if auth.IdentityToken != "" {
		return "", auth.IdentityToken, nil
	}
	return auth.Username, auth.Password, nil
}

func loadConfig(path string) (*Config, error) {
	config := &Config{}
	if path == "" {
		return config, nil
	}
	tree, err := toml.LoadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config %s: %v", path, err)
	}
	if err := tree.Unmarshal(config); err != nil {
		return nil, fmt.Errorf("config %s: %v", path, err)
	}
	return config, nil
}

// listen opens the unix socket, replacing a stale one a killed run left.
func listen(address string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(address), 0o700); err != nil {
		return nil, err
	}
	if err := os.Remove(address); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("removing the stale socket %s: %v", address, err)
	}
	listener, err := net.Listen("unix", address)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %v", address, err)
	}
	return listener, nil
}
