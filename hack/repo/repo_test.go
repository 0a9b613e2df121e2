package repo

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRoot(t *testing.T) {
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("Root() = %s, which has no go.mod: %v", root, err)
	}
	if _, err := os.Stat(filepath.Join(root, "hack", "repo", "repo.go")); err != nil {
		t.Fatalf("Root() = %s, which is not this repository: %v", root, err)
	}
	t.Chdir(t.TempDir())
	if got, err := Root(); err == nil {
		t.Fatalf("Root() outside any module = %s, want an error", got)
	}
}
