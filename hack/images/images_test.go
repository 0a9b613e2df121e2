package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

var testOpts = Options{Repo: "ironlb", Tag: "v0.1.0", Arch: runtime.GOARCH, Created: time.Unix(0, 0).UTC()}

// TestControllerImage builds the controller image as hack/images.sh does,
// checks the OCI layout from index.json down to the layer, and runs the
// binary from inside the layer.
func TestControllerImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the controller (minutes on a cold build cache)")
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "controller.tar")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	digest, err := Build(ctx, root, "controller", archive, testOpts)
	if err != nil {
		t.Fatal(err)
	}
	img := readLayout(t, archive)
	if img.manifestDigest != digest {
		t.Errorf("Build returned %s, index.json names %s", digest, img.manifestDigest)
	}
	if got := img.config.Config.Entrypoint; len(got) != 1 || got[0] != "/controller" {
		t.Errorf("entrypoint %q, want [/controller]", got)
	}
	if got := img.config.Config.User; got != "65534:65534" {
		t.Errorf("user %q, want 65534:65534", got)
	}
	if !strings.Contains(string(img.files["etc/passwd"].data), "nobody:x:65534:65534:") {
		t.Errorf("/etc/passwd has no nobody:\n%s", img.files["etc/passwd"].data)
	}

	// The entrypoint is in the layer, executable, and runs on an empty
	// root: static, no libc.
	bin, ok := img.files["controller"]
	if !ok {
		t.Fatalf("the layer has no /controller; it holds %v", keys(img.files))
	}
	if bin.mode&0o111 == 0 {
		t.Errorf("/controller has mode %o, not executable", bin.mode)
	}
	exe := filepath.Join(t.TempDir(), "controller")
	if err := os.WriteFile(exe, bin.data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, exe, "--check-config", filepath.Join(root, "manifests", "example-config.yaml"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("controller --check-config: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	if want := `pool "default": 11 addresses, IPv4`; !strings.Contains(stdout.String(), want) {
		t.Errorf("controller --check-config printed %q, want a line %q (stderr %q)", stdout.String(), want, stderr.String())
	}
	if strings.Contains(string(bin.data), root) {
		t.Errorf("the binary contains the build directory %s: not built with -trimpath", root)
	}
}

// TestArchiveReproducible writes the same image twice: the archive depends
// only on its inputs. It also checks the speaker's layout with a stand-in
// binary, without compiling anything.
func TestArchiveReproducible(t *testing.T) {
	var a, b bytes.Buffer
	if _, err := WriteArchive(&a, "speaker", []byte("#!not a binary\n"), testOpts); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteArchive(&b, "speaker", []byte("#!not a binary\n"), testOpts); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two archives of the same inputs differ")
	}
	path := filepath.Join(t.TempDir(), "speaker.tar")
	if err := os.WriteFile(path, a.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	img := readLayout(t, path)
	if got := img.config.Config.Entrypoint; len(got) != 1 || got[0] != "/speaker" {
		t.Errorf("entrypoint %q, want [/speaker]", got)
	}
	if _, ok := img.files["speaker"]; !ok {
		t.Errorf("the layer has no /speaker; it holds %v", keys(img.files))
	}
}

// TestManifestsUseTheseImages: the images this command names by default are
// the ones manifests/ironlb.yaml runs.
func TestManifestsUseTheseImages(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "manifests", "ironlb.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"controller", "speaker"} {
		ref := strings.TrimPrefix(ImageName(name, testOpts), "docker.io/")
		if !strings.Contains(string(b), "image: "+ref+"\n") {
			t.Errorf("manifests/ironlb.yaml does not run image %s", ref)
		}
	}
}

type file struct {
	data []byte
	mode int64
}

type layout struct {
	manifestDigest string
	config         imageConfig
	files          map[string]file // the layer's regular files
}

// readLayout checks an image archive against the OCI image layout spec, as
// far as this command's images go, and returns its parts.
func readLayout(t *testing.T, path string) layout {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	entries := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		entries[hdr.Name] = b
	}

	if got := string(entries["oci-layout"]); got != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %q", got)
	}
	// Every blob is named by its digest.
	for name, b := range entries {
		if hex, ok := strings.CutPrefix(name, "blobs/sha256/"); ok && digestOf(b) != "sha256:"+hex {
			t.Errorf("%s has digest %s", name, digestOf(b))
		}
	}
	blob := func(d descriptor, mediaType string) []byte {
		t.Helper()
		if d.MediaType != mediaType {
			t.Errorf("descriptor %s has media type %q, want %q", d.Digest, d.MediaType, mediaType)
		}
		b, ok := entries[blobPath(d.Digest)]
		if !ok {
			t.Fatalf("no blob %s", d.Digest)
		}
		if int64(len(b)) != d.Size || digestOf(b) != d.Digest {
			t.Fatalf("blob %s: %d bytes, digest %s; the descriptor says %d bytes", d.Digest, len(b), digestOf(b), d.Size)
		}
		return b
	}
	decode := func(b []byte, v any) {
		t.Helper()
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			t.Fatalf("%v in %s", err, b)
		}
	}

	var idx index
	decode(entries["index.json"], &idx)
	if idx.SchemaVersion != 2 || idx.MediaType != mediaTypeIndex || len(idx.Manifests) != 1 {
		t.Fatalf("index.json: %s", entries["index.json"])
	}
	md := idx.Manifests[0]
	name := strings.TrimSuffix(filepath.Base(path), ".tar")
	for k, want := range map[string]string{
		annotationImageName: "docker.io/ironlb/" + name + ":v0.1.0",
		annotationRefName:   "v0.1.0",
	} {
		if got := md.Annotations[k]; got != want {
			t.Errorf("index.json annotation %s = %q, want %q", k, got, want)
		}
	}
	if md.Platform == nil || md.Platform.OS != "linux" || md.Platform.Architecture != runtime.GOARCH {
		t.Errorf("index.json platform %+v, want linux/%s", md.Platform, runtime.GOARCH)
	}

	var man manifest
	decode(blob(md, mediaTypeManifest), &man)
	if man.SchemaVersion != 2 || man.MediaType != mediaTypeManifest || len(man.Layers) != 1 {
		t.Fatalf("manifest: %+v", man)
	}
	var cfg imageConfig
	decode(blob(man.Config, mediaTypeConfig), &cfg)
	if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH {
		t.Errorf("config platform %s/%s", cfg.OS, cfg.Architecture)
	}

	zr, err := gzip.NewReader(bytes.NewReader(blob(man.Layers[0], mediaTypeLayer)))
	if err != nil {
		t.Fatal(err)
	}
	layerTar, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RootFS.Type != "layers" || len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != digestOf(layerTar) {
		t.Errorf("rootfs %+v, want the one diff_id %s", cfg.RootFS, digestOf(layerTar))
	}
	files := map[string]file{}
	lr := tar.NewReader(bytes.NewReader(layerTar))
	for {
		hdr, err := lr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(hdr.Name, "/") || strings.Contains(hdr.Name, "..") {
			t.Errorf("layer entry %q is not a clean relative path", hdr.Name)
		}
		if hdr.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(lr)
			if err != nil {
				t.Fatal(err)
			}
			files[hdr.Name] = file{b, hdr.Mode}
		}
	}

	// docker load reads manifest.json.
	var dm []dockerManifest
	decode(entries["manifest.json"], &dm)
	if len(dm) != 1 || dm[0].Config != blobPath(man.Config.Digest) || len(dm[0].Layers) != 1 || dm[0].Layers[0] != blobPath(man.Layers[0].Digest) ||
		len(dm[0].RepoTags) != 1 || dm[0].RepoTags[0] != "ironlb/"+name+":v0.1.0" {
		t.Errorf("manifest.json: %s", entries["manifest.json"])
	}
	return layout{manifestDigest: md.Digest, config: cfg, files: files}
}

func keys(m map[string]file) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
