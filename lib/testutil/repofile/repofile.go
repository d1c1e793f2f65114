// Package repofile finds a file of this repository from a test: upward from
// the working directory (go test runs in the package's directory), else
// from this source file.
package repofile

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// Find returns the path of rel (a path relative to the repository root).
func Find(rel string) (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for {
			p := filepath.Join(dir, rel)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", fmt.Errorf("%s not found above %s", rel, strings.Join(starts, " or "))
}
