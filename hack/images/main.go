// Command images builds the controller and speaker as static binaries and
// writes each as an OCI image archive, without a container engine and
// without pulling anything from a registry:
//
//	go run ./hack/images [-out bin/images] [-tag v0.1.0] [-arch amd64] [controller speaker]
//
// (hack/images.sh runs it from the repository root.) Each archive is an OCI
// image layout in a tar: oci-layout, index.json, and under blobs/sha256/ the
// manifest, the config and one gzip layer holding the binary at /NAME plus a
// minimal /etc/passwd and /etc/group. There is no base image. index.json
// names the image for containerd (io.containerd.image.name, read by
// `ctr images import` and so by `kind load image-archive`) and by the OCI
// annotation org.opencontainers.image.ref.name (the tag, as BuildKit and
// containerd write it). A Docker-style manifest.json is written too, so
// `docker load` also names the image.
//
// The archive depends only on the binary and the flags: every timestamp is
// SOURCE_DATE_EPOCH (default 0) and gzip records no name or time.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// OCI media types and annotations.
const (
	mediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	mediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	mediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"

	annotationRefName   = "org.opencontainers.image.ref.name"
	annotationImageName = "io.containerd.image.name" // containerd's full image name
	annotationCreated   = "org.opencontainers.image.created"
)

// component describes one image.
type component struct {
	// User is the image's default user; the manifests set it explicitly too.
	User  string
	Ports []string
	Title string
}

var components = map[string]component{
	// Non-root, as the restricted Pod Security Standard wants.
	"controller": {User: "65534:65534", Ports: []string{"7472/tcp", "7473/tcp"}, Title: "ironlb controller"},
	// Root, with every capability but NET_RAW dropped by the DaemonSet:
	// Kubernetes gives added capabilities to a non-root process only in
	// its bounding set.
	"speaker": {User: "0:0", Ports: []string{"7474/tcp", "7475/tcp", "7946/tcp", "7946/udp"}, Title: "ironlb speaker"},
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
	repo := flag.String("repo", "ironlb", "image repository prefix: REPO/NAME:TAG (docker.io is implied, as in the manifests)")
	arch := flag.String("arch", runtime.GOARCH, "target architecture (GOARCH)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: images [flags] [controller] [speaker]\n\nBuilds static binaries and writes OCI image archives OUT/NAME.tar.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	names := flag.Args()
	if len(names) == 0 {
		names = []string{"controller", "speaker"}
	}
	created, err := sourceDateEpoch()
	if err != nil {
		fail(err)
	}
	root, err := repoRoot()
	if err != nil {
		fail(err)
	}
	opts := Options{Repo: *repo, Tag: *tag, Arch: *arch, Created: created}
	ctx := context.Background()
	for _, name := range names {
		path := filepath.Join(*out, name+".tar")
		digest, err := Build(ctx, root, name, path, opts)
		if err != nil {
			fail(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			fail(err)
		}
		fmt.Printf("%s: %s (linux/%s) manifest %s, %.1f MiB\n", path, ImageName(name, opts), opts.Arch, digest, float64(fi.Size())/(1<<20))
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

// Build compiles ./NAME/cmd/NAME of the module at root and writes its image
// archive to path. It returns the manifest digest.
func Build(ctx context.Context, root, name, path string, o Options) (string, error) {
	if _, ok := components[name]; !ok {
		return "", fmt.Errorf("unknown component %q (want controller or speaker)", name)
	}
	tmp, err := os.MkdirTemp("", "ironlb-images-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./"+name+"/cmd/"+name)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+o.Arch)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building %s: %w", name, err)
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+name+".tar.*")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	digest, err := WriteArchive(f, name, binary, o)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return "", err
	}
	return digest, os.Rename(f.Name(), path)
}

// descriptor is an OCI content descriptor.
type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

type manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	Config        descriptor        `json:"config"`
	Layers        []descriptor      `json:"layers"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

type imageConfig struct {
	Created      string    `json:"created"`
	Architecture string    `json:"architecture"`
	Variant      string    `json:"variant,omitempty"`
	OS           string    `json:"os"`
	Config       execCfg   `json:"config"`
	RootFS       rootFS    `json:"rootfs"`
	History      []history `json:"history"`
}

type execCfg struct {
	User         string              `json:"User,omitempty"`
	ExposedPorts map[string]struct{} `json:"ExposedPorts,omitempty"`
	Env          []string            `json:"Env,omitempty"`
	Entrypoint   []string            `json:"Entrypoint"`
	WorkingDir   string              `json:"WorkingDir,omitempty"`
	Labels       map[string]string   `json:"Labels,omitempty"`
}

type rootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

type history struct {
	Created   string `json:"created"`
	CreatedBy string `json:"created_by"`
}

// dockerManifest is one entry of the manifest.json `docker load` reads.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// WriteArchive writes the image of component name, with binary at /name,
// as an OCI layout tar to w, and returns the manifest digest.
func WriteArchive(w io.Writer, name string, binary []byte, o Options) (string, error) {
	comp, ok := components[name]
	if !ok {
		return "", fmt.Errorf("unknown component %q", name)
	}
	created := o.Created.UTC().Format(time.RFC3339)

	layerTar, err := rootfs(name, binary, o.Created)
	if err != nil {
		return "", err
	}
	var layer bytes.Buffer
	zw, err := gzip.NewWriterLevel(&layer, gzip.BestCompression)
	if err != nil {
		return "", err
	}
	if _, err := zw.Write(layerTar); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}

	ports := map[string]struct{}{}
	for _, p := range comp.Ports {
		ports[p] = struct{}{}
	}
	variant := ""
	if o.Arch == "arm64" {
		variant = "v8"
	}
	cfg, err := json.Marshal(imageConfig{
		Created:      created,
		Architecture: o.Arch,
		Variant:      variant,
		OS:           "linux",
		Config: execCfg{
			User:         comp.User,
			ExposedPorts: ports,
			Entrypoint:   []string{"/" + name},
			WorkingDir:   "/",
			Labels: map[string]string{
				"org.opencontainers.image.title":    comp.Title,
				"org.opencontainers.image.version":  o.Tag,
				"org.opencontainers.image.source":   "https://github.com/ironlb/ironlb",
				"org.opencontainers.image.licenses": "Apache-2.0",
			},
		},
		RootFS:  rootFS{Type: "layers", DiffIDs: []string{digestOf(layerTar)}},
		History: []history{{Created: created, CreatedBy: "hack/images: /" + name + " (go build -trimpath, CGO_ENABLED=0), /etc/passwd, /etc/group"}},
	})
	if err != nil {
		return "", err
	}
	cfgDesc := descriptor{MediaType: mediaTypeConfig, Digest: digestOf(cfg), Size: int64(len(cfg))}
	layerDesc := descriptor{MediaType: mediaTypeLayer, Digest: digestOf(layer.Bytes()), Size: int64(layer.Len())}
	man, err := json.Marshal(manifest{
		SchemaVersion: 2,
		MediaType:     mediaTypeManifest,
		Config:        cfgDesc,
		Layers:        []descriptor{layerDesc},
		Annotations:   map[string]string{annotationCreated: created},
	})
	if err != nil {
		return "", err
	}
	manDesc := descriptor{
		MediaType: mediaTypeManifest, Digest: digestOf(man), Size: int64(len(man)),
		Platform: &platform{Architecture: o.Arch, OS: "linux", Variant: variant},
		Annotations: map[string]string{
			annotationImageName: ImageName(name, o),
			annotationRefName:   o.Tag,
		},
	}
	idx, err := json.Marshal(index{SchemaVersion: 2, MediaType: mediaTypeIndex, Manifests: []descriptor{manDesc}})
	if err != nil {
		return "", err
	}
	dockerTag := strings.TrimPrefix(ImageName(name, o), "docker.io/")
	dm, err := json.Marshal([]dockerManifest{{
		Config:   blobPath(cfgDesc.Digest),
		RepoTags: []string{dockerTag},
		Layers:   []string{blobPath(layerDesc.Digest)},
	}})
	if err != nil {
		return "", err
	}

	tw := tar.NewWriter(w)
	files := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", idx},
		{"manifest.json", dm},
		{"blobs/", nil},
		{"blobs/sha256/", nil},
		{blobPath(manDesc.Digest), man},
		{blobPath(cfgDesc.Digest), cfg},
		{blobPath(layerDesc.Digest), layer.Bytes()},
	}
	for _, f := range files {
		if err := writeEntry(tw, f.name, f.data, 0o644, o.Created); err != nil {
			return "", err
		}
	}
	return manDesc.Digest, tw.Close()
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

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func blobPath(digest string) string {
	return "blobs/sha256/" + strings.TrimPrefix(digest, "sha256:")
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

// repoRoot walks up from the working directory to the directory with go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod in the working directory or above it")
		}
		dir = parent
	}
}
