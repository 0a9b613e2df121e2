// Command images builds ironlb's images without a container engine and
// without pulling anything from a registry:
//
//	go run ./hack/images [-out bin/images] [-release bin/release] [-repo ironlb] [-tag v0.1.0] [-arch amd64] [NAME...]
//
// (hack/images.sh runs it from the repository root.) NAME is controller,
// speaker, pause, backend or kubectl-ironlb; without names it builds all
// five. kubectl-ironlb is not an image but the kubectl plugin's release
// archive, RELEASE/kubectl-ironlb-linux-ARCH.tar.gz (release.go). Each is a
// static binary (CGO_ENABLED=0, so it runs with no libc; -trimpath and
// -ldflags "-s -w", so it holds no build paths and no symbol tables) in an
// image with no base: one layer with the binary at /NAME and an /etc/passwd
// and /etc/group that name root and nobody.
//
// go-containerregistry assembles the image (empty.Image, one layer, the
// config) and writes it with tarball.Write as a `docker save` archive:
// manifest.json, the config and the gzip layer. That format is the one that
// `ctr images import`, `kind load image-archive` and `docker load` all
// accept and name from manifest.json's RepoTags (REPO/NAME:TAG, which
// containerd completes to docker.io/REPO/NAME:TAG), with no annotations to
// get right. The importer writes the image manifest itself, so the config
// digest, which is the image ID crictl shows, is what identifies an image
// across machines.
//
// The archive depends only on the sources and the flags, so that building
// twice gives the same bytes: the config's and the history's created time
// and the time of every file, in the layer and in the archive, is
// SOURCE_DATE_EPOCH (default 0), and gzip records no name or time.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	ref "github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/ironlb/ironlb/hack/repo"
)

// component describes one image.
type component struct {
	Package string // Go package of the binary, relative to the module root
	// User is the image's default user; the manifests set it explicitly too.
	User  string
	Ports []string
	Title string
}

var components = map[string]component{
	// Non-root, as the restricted Pod Security Standard wants.
	"controller": {
		Package: "./controller/cmd/controller",
		User:    "65534:65534",
		Ports:   []string{"7472/tcp", "7473/tcp"},
		Title:   "ironlb controller",
	},
	// Root, with every capability but NET_RAW dropped by the DaemonSet:
	// Kubernetes gives added capabilities to a non-root process only in
	// its bounding set.
	"speaker": {
		Package: "./speaker/cmd/speaker",
		User:    "0:0",
		Ports:   []string{"7474/tcp", "7475/tcp", "7946/tcp", "7946/udp"},
		Title:   "ironlb speaker",
	},
	// The pod sandbox for a containerd without a registry (its
	// sandbox_image). 65535 is the user the upstream pause image runs as.
	"pause": {
		Package: "./hack/cluster/pause",
		User:    "65535:65535",
		Title:   "ironlb pause (pod sandbox)",
	},
	// The HTTP server behind the test and demo Services.
	"backend": {
		Package: "./hack/cluster/backend",
		User:    "65534:65534",
		Ports:   []string{"8080/tcp"},
		Title:   "ironlb test backend",
	},
}

// Names lists the components in build order.
func Names() []string {
	return []string{"controller", "speaker", "pause", "backend"}
}

// Options name and place the images.
type Options struct {
	Repo    string    // image repository prefix: Repo/NAME:Tag
	Tag     string    // image tag
	Arch    string    // GOARCH of the binary and the image platform
	Created time.Time // every timestamp in the image
}

func main() {
	out := flag.String("out", "bin/images", "directory for NAME.tar")
	tag := flag.String("tag", "v0.1.0", "image tag")
	imageRepo := flag.String("repo", "ironlb", "image repository prefix: REPO/NAME:TAG (docker.io is implied, as in the manifests)")
	arch := flag.String("arch", runtime.GOARCH, "target architecture (GOARCH)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: images [flags] [%s|%s]...\n\nBuilds static binaries and writes image archives OUT/NAME.tar, and the kubectl plugin's archive RELEASE/%s (all of them without names).\n\n", strings.Join(Names(), "|"), Plugin, ReleaseName("ARCH"))
		flag.PrintDefaults()
	}
	release := flag.String("release", "bin/release", "directory for the kubectl plugin's archive "+Plugin+"-linux-ARCH.tar.gz")
	flag.Parse()
	names := flag.Args()
	plugin := len(names) == 0
	if len(names) == 0 {
		names = Names()
	}
	if i := slices.Index(names, Plugin); i >= 0 {
		plugin = true
		names = slices.Delete(names, i, i+1)
	}
	created, err := sourceDateEpoch()
	if err != nil {
		fail(err)
	}
	root, err := repo.Root()
	if err != nil {
		fail(err)
	}
	opts := Options{Repo: *imageRepo, Tag: *tag, Arch: *arch, Created: created}
	if plugin {
		path, err := BuildRelease(context.Background(), root, *release, opts)
		if err != nil {
			fail(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			fail(err)
		}
		fmt.Printf("%s: kubectl plugin (linux/%s), %.1f MiB\n", path, opts.Arch, float64(fi.Size())/(1<<20))
	}
	if len(names) == 0 {
		return
	}
	built, err := Build(context.Background(), root, *out, names, opts)
	if err != nil {
		fail(err)
	}
	for _, b := range built {
		fi, err := os.Stat(b.Path)
		if err != nil {
			fail(err)
		}
		fmt.Printf("%s: %s (linux/%s) image ID %s, %.1f MiB\n", b.Path, ImageName(b.Name, opts), opts.Arch, b.ID, float64(fi.Size())/(1<<20))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "images:", err)
	os.Exit(1)
}

// ImageName is the full reference of an image, as containerd names it.
func ImageName(name string, o Options) string {
	repo := o.Repo + "/" + name
	if first, _, ok := strings.Cut(repo, "/"); !ok || !strings.ContainsAny(first, ".:") && first != "localhost" {
		repo = "docker.io/" + repo
	}
	return repo + ":" + o.Tag
}

// RepoTag is the image's name in the archive's manifest.json, as `docker
// save` writes it: without docker.io/, which every importer adds back.
func RepoTag(name string, o Options) string {
	return o.Repo + "/" + name + ":" + o.Tag
}

// Built is one image archive Build wrote.
type Built struct {
	Name string
	Path string
	ID   v1.Hash // the config digest, which containerd and Docker call the image ID
}

// Build compiles the named components of the module at root in one go build
// and writes OUT/NAME.tar for each.
func Build(ctx context.Context, root, out string, names []string, o Options) ([]Built, error) {
	pkgs := make([]string, 0, len(names))
	for _, n := range names {
		c, ok := components[n]
		if !ok {
			return nil, fmt.Errorf("unknown image %q (want one of %s)", n, strings.Join(Names(), ", "))
		}
		pkgs = append(pkgs, c.Package)
	}
	tmp, err := os.MkdirTemp("", "ironlb-images-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	// With -o DIR/ go build names each binary after its package's last
	// path element, which is the image name for every component.
	args := append([]string{"build", "-trimpath", "-ldflags", "-s -w", "-o", tmp + "/"}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+o.Arch)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go build %s: %w", strings.Join(pkgs, " "), err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	var built []Built
	for _, n := range names {
		binary, err := os.ReadFile(filepath.Join(tmp, n))
		if err != nil {
			return nil, err
		}
		path := filepath.Join(out, n+".tar")
		id, err := writeFile(path, n, binary, o)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		built = append(built, Built{Name: n, Path: path, ID: id})
	}
	return built, nil
}

// writeFile writes the archive next to path and renames it into place, so
// that an interrupted build never leaves a truncated archive behind.
func writeFile(path, name string, binary []byte, o Options) (v1.Hash, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+name+".tar.*")
	if err != nil {
		return v1.Hash{}, err
	}
	defer os.Remove(f.Name())
	id, err := WriteArchive(f, name, binary, o)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return v1.Hash{}, err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return v1.Hash{}, err
	}
	return id, os.Rename(f.Name(), path)
}

// Image is the image of component name with binary at /name.
func Image(name string, binary []byte, o Options) (v1.Image, error) {
	comp, ok := components[name]
	if !ok {
		return nil, fmt.Errorf("unknown image %q", name)
	}
	layerTar, err := rootfs(name, binary, o.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(
		func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerTar)), nil },
		// An image is built once and copied to every node: spend the
		// CPU on a smaller layer.
		tarball.WithCompressionLevel(gzip.BestCompression),
		// The digest and the archive need the same compressed bytes:
		// compress once.
		tarball.WithCompressedCaching,
	)
	if err != nil {
		return nil, err
	}

	var ports map[string]struct{}
	if len(comp.Ports) > 0 {
		ports = map[string]struct{}{}
		for _, p := range comp.Ports {
			ports[p] = struct{}{}
		}
	}
	variant := ""
	if o.Arch == "arm64" {
		variant = "v8"
	}
	created := v1.Time{Time: o.Created.UTC()}
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Created:      created,
		Architecture: o.Arch,
		Variant:      variant,
		OS:           "linux",
		Config: v1.Config{
			User:         comp.User,
			ExposedPorts: ports,
			Entrypoint:   []string{"/" + name},
			WorkingDir:   "/",
			Labels: map[string]string{
				"org.opencontainers.image.title":    comp.Title,
				"org.opencontainers.image.version":  o.Tag,
				"org.opencontainers.image.created":  o.Created.UTC().Format(time.RFC3339),
				"org.opencontainers.image.source":   "https://github.com/ironlb/ironlb",
				"org.opencontainers.image.licenses": "Apache-2.0",
			},
		},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	// Append records the layer's diff_id in the config's rootfs.
	return mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   created,
			CreatedBy: "hack/images: /" + name + " (go build -trimpath, CGO_ENABLED=0), /etc/passwd, /etc/group",
		},
	})
}

// WriteArchive writes the image of component name, with binary at /name,
// as a `docker save` archive to w and returns its image ID.
func WriteArchive(w io.Writer, name string, binary []byte, o Options) (v1.Hash, error) {
	img, err := Image(name, binary, o)
	if err != nil {
		return v1.Hash{}, err
	}
	tag, err := ref.NewTag(RepoTag(name, o))
	if err != nil {
		return v1.Hash{}, err
	}
	// tarball.Write leaves the archive's own entries (manifest.json, the
	// config, the layer) at the zero time, which tar writes as 1970; stamp
	// them with the build time too, streaming through a pipe rather than
	// holding a second copy of the archive in memory.
	pr, pw := io.Pipe()
	werr := make(chan error, 1)
	go func() {
		err := tarball.Write(tag, img, pw)
		pw.CloseWithError(err)
		werr <- err
	}()
	err = restamp(w, pr, o.Created)
	if err == nil {
		// Read past the end-of-archive marker so the writer can finish.
		_, err = io.Copy(io.Discard, pr)
	}
	pr.CloseWithError(err) // unblocks the writer if restamp failed
	if werr := <-werr; werr != nil {
		return v1.Hash{}, werr
	}
	if err != nil {
		return v1.Hash{}, err
	}
	return img.ConfigName()
}

// restamp copies the tar archive r to w with every entry's time set to
// mtime.
func restamp(w io.Writer, r io.Reader, mtime time.Time) error {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		hdr.ModTime = mtime
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
	return tw.Close()
}

// rootfs is the image's only layer: the binary and enough of /etc for a
// user name lookup of root and nobody.
func rootfs(name string, binary []byte, mtime time.Time) ([]byte, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	entries := []struct {
		name string
		data []byte
		mode int64
	}{
		{"etc/", nil, 0o755},
		{"etc/group", []byte("root:x:0:\nnogroup:x:65534:\n"), 0o644},
		{"etc/passwd", []byte("root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"), 0o644},
		{name, binary, 0o755},
	}
	for _, e := range entries {
		if err := writeEntry(tw, e.name, e.data, e.mode, mtime); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// writeEntry writes a file, or a directory when name ends in a slash.
func writeEntry(tw *tar.Writer, name string, data []byte, mode int64, mtime time.Time) error {
	hdr := &tar.Header{
		Name: name, Mode: mode, Size: int64(len(data)), ModTime: mtime,
		Uname: "root", Gname: "root", Typeflag: tar.TypeReg, Format: tar.FormatPAX,
	}
	if strings.HasSuffix(name, "/") {
		hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeDir, 0o755, 0
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

// sourceDateEpoch is the time stamped on every file and in the config.
func sourceDateEpoch() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", s, err)
	}
	return time.Unix(n, 0).UTC(), nil
}
