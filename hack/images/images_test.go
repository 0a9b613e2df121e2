package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/ironlb/ironlb/hack/repo"
)

var testOpts = Options{Repo: "ironlb", Tag: "v0.1.0", Arch: runtime.GOARCH, Created: time.Unix(0, 0).UTC()}

// wantImage is what an archive of each component must hold; imageOf reads
// the same fields back from an archive.
func wantImage(name string, o Options) image {
	want := image{
		RepoTags: []string{"ironlb/" + name + ":v0.1.0"},
		OS:       "linux",
		Arch:     o.Arch,
		Created:  o.Created,
		Entry:    []string{"/" + name},
		Files: map[string]int64{
			"etc/":       0o755,
			"etc/group":  0o644,
			"etc/passwd": 0o644,
			name:         0o755,
		},
		Title: components[name].Title,
	}
	switch name {
	case "controller":
		want.User, want.Ports = "65534:65534", []string{"7472/tcp", "7473/tcp"}
	case "speaker":
		want.User, want.Ports = "0:0", []string{"7474/tcp", "7475/tcp", "7946/tcp", "7946/udp"}
	case "pause":
		want.User = "65535:65535"
	case "backend":
		want.User, want.Ports = "65534:65534", []string{"8080/tcp"}
	}
	return want
}

// TestArchive writes every image with a stand-in binary, which needs no
// compiler, reads it back with go-containerregistry as an importer would,
// and writes it again: the archive depends only on its inputs.
func TestArchive(t *testing.T) {
	// Not the default time, so that a timestamp left at zero shows.
	o := testOpts
	o.Created = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			binary := []byte("#!not a binary: " + name + "\n")
			var a, b bytes.Buffer
			idA, err := WriteArchive(&a, name, binary, o)
			if err != nil {
				t.Fatal(err)
			}
			idB, err := WriteArchive(&b, name, binary, o)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a.Bytes(), b.Bytes()) || idA != idB {
				t.Error("two archives of the same inputs differ")
			}
			path := filepath.Join(t.TempDir(), name+".tar")
			if err := os.WriteFile(path, a.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			got, files := imageOf(t, path)
			if diff := cmp.Diff(wantImage(name, o), got, ignoreID); diff != "" {
				t.Errorf("image (-want +got):\n%s", diff)
			}
			if got.ID != idA {
				t.Errorf("WriteArchive returned image ID %s, the archive's config is %s", idA, got.ID)
			}
			if !bytes.Equal(files[name], binary) {
				t.Errorf("/%s holds %q, want the binary %q", name, files[name], binary)
			}
			if !strings.Contains(string(files["etc/passwd"]), "nobody:x:65534:65534:") {
				t.Errorf("/etc/passwd has no nobody:\n%s", files["etc/passwd"])
			}
		})
	}
}

func TestUnknownImage(t *testing.T) {
	if _, err := WriteArchive(io.Discard, "nginx", nil, testOpts); err == nil {
		t.Error("WriteArchive of an unknown image succeeded")
	}
}

// TestManifestsUseTheseImages: the images this command names by default are
// the ones manifests/ironlb.yaml runs.
func TestManifestsUseTheseImages(t *testing.T) {
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "manifests", "ironlb.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"controller", "speaker"} {
		ref := RepoTag(name, testOpts)
		if !strings.Contains(string(b), "image: "+ref+"\n") {
			t.Errorf("manifests/ironlb.yaml does not run image %s", ref)
		}
	}
}

// image is what the tests check of an archive.
type image struct {
	RepoTags []string // manifest.json, which names the image for importers
	ID       v1.Hash  // not compared: it follows from the rest
	OS, Arch string
	Created  time.Time // of the config, its history, and every tar entry
	Entry    []string
	User     string
	Ports    []string
	Title    string
	Files    map[string]int64 // the layer's entries and their modes
}

// imageOf reads an archive back with go-containerregistry and returns its
// parts and the contents of the layer's regular files. It fails the test if
// entries disagree on the time or the layer holds anything but clean,
// root-owned relative paths.
func imageOf(t *testing.T, path string) (image, map[string][]byte) {
	t.Helper()
	opener := func() (io.ReadCloser, error) { return os.Open(path) }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 {
		t.Fatalf("manifest.json has %d images, want 1", len(m))
	}
	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	id, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	got := image{
		RepoTags: m[0].RepoTags,
		ID:       id,
		OS:       cfg.OS,
		Arch:     cfg.Architecture,
		Created:  cfg.Created.UTC(),
		Entry:    cfg.Config.Entrypoint,
		User:     cfg.Config.User,
		Title:    cfg.Config.Labels["org.opencontainers.image.title"],
		Files:    map[string]int64{},
	}
	for p := range cfg.Config.ExposedPorts {
		got.Ports = append(got.Ports, p)
	}
	slices.Sort(got.Ports)
	if len(cfg.History) != 1 || !cfg.History[0].Created.Equal(got.Created) {
		t.Errorf("history %+v, want one entry created at %v", cfg.History, got.Created)
	}
	checkTimes := func(what string, r io.Reader, each func(*tar.Header, io.Reader)) {
		t.Helper()
		tr := tar.NewReader(r)
		for {
			hdr, err := tr.Next()
			if err == io.EOF {
				return
			}
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if !hdr.ModTime.Equal(got.Created) {
				t.Errorf("%s: %s has time %v, want %v", what, hdr.Name, hdr.ModTime.UTC(), got.Created)
			}
			each(hdr, tr)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	checkTimes(path, f, func(*tar.Header, io.Reader) {})

	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	layer, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	// containerd checks the unpacked layer against the config's diff_id.
	diffID, _, err := v1.SHA256(bytes.NewReader(layer))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RootFS.Type != "layers" || !slices.Equal(cfg.RootFS.DiffIDs, []v1.Hash{diffID}) {
		t.Errorf("config rootfs %+v, want the one diff_id %s", cfg.RootFS, diffID)
	}
	files := map[string][]byte{}
	checkTimes("layer", bytes.NewReader(layer), func(hdr *tar.Header, r io.Reader) {
		if strings.HasPrefix(hdr.Name, "/") || strings.Contains(hdr.Name, "..") {
			t.Errorf("layer entry %q is not a clean relative path", hdr.Name)
		}
		if hdr.Uid != 0 || hdr.Gid != 0 {
			t.Errorf("layer entry %s is owned by %d:%d, want 0:0", hdr.Name, hdr.Uid, hdr.Gid)
		}
		got.Files[hdr.Name] = hdr.Mode
		if hdr.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			files[hdr.Name] = b
		}
	})
	return got, files
}

var ignoreID = cmpopts.IgnoreFields(image{}, "ID")

// TestRelease writes the plugin's archive from stand-in bytes twice: the
// archive holds the binary (executable) and the LICENSE at the build time,
// and depends only on its inputs.
func TestRelease(t *testing.T) {
	o := testOpts
	o.Created = time.Unix(1700000000, 0).UTC()
	var a, b bytes.Buffer
	if err := WriteRelease(&a, []byte("binary"), []byte("license"), o); err != nil {
		t.Fatal(err)
	}
	if err := WriteRelease(&b, []byte("binary"), []byte("license"), o); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two writes of the same release archive differ")
	}
	zr, err := gzip.NewReader(&a)
	if err != nil {
		t.Fatal(err)
	}
	if !zr.ModTime.IsZero() || zr.Name != "" {
		t.Errorf("gzip header records name %q, time %v", zr.Name, zr.ModTime)
	}
	type entry struct {
		Mode int64
		Data string
		Time time.Time
	}
	got := map[string]entry{}
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		got[hdr.Name] = entry{hdr.Mode, string(data), hdr.ModTime.UTC()}
	}
	want := map[string]entry{
		"kubectl-ironlb": {0o755, "binary", o.Created},
		"LICENSE":        {0o644, "license", o.Created},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("archive (-want +got):\n%s", diff)
	}
	if ReleaseName("arm64") != "kubectl-ironlb-linux-arm64.tar.gz" {
		t.Errorf("ReleaseName(arm64) = %q", ReleaseName("arm64"))
	}
}
