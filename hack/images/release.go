package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

// Plugin is the name hack/images takes for the kubectl plugin's release
// archive, which is not an image: an operator puts the binary on the PATH
// of the machine they run kubectl on.
const Plugin = "kubectl-ironlb"

// PluginPackage is the plugin's Go package.
const PluginPackage = "./controller/cmd/kubectl-ironlb"

// ReleaseName is the archive's file name for an architecture.
func ReleaseName(arch string) string {
	return fmt.Sprintf("%s-linux-%s.tar.gz", Plugin, arch)
}

// BuildRelease compiles the plugin statically, as the images' binaries
// are, and writes OUT/kubectl-ironlb-linux-ARCH.tar.gz holding the binary
// and the LICENSE.
func BuildRelease(ctx context.Context, root, out string, o Options) (string, error) {
	tmp, err := os.MkdirTemp("", "ironlb-release-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, Plugin)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, PluginPackage)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+o.Arch)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s: %w", PluginPackage, err)
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	license, err := os.ReadFile(filepath.Join(root, "LICENSE"))
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(out, ReleaseName(o.Arch))
	f, err := os.CreateTemp(out, "."+Plugin+".*")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	err = WriteRelease(f, binary, license, o)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return "", err
	}
	return path, os.Rename(f.Name(), path)
}

// WriteRelease writes the plugin's tar.gz: kubectl-ironlb (mode 0755) and
// LICENSE, every time SOURCE_DATE_EPOCH and no name or time in the gzip
// header, so the same inputs give the same bytes.
func WriteRelease(w io.Writer, binary, license []byte, o Options) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	if err := writeEntry(tw, Plugin, binary, 0o755, o.Created); err != nil {
		return err
	}
	if err := writeEntry(tw, "LICENSE", license, 0o644, o.Created); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}
