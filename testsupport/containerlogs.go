package testsupport

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ContainerLogs is what a slice container has logged so far. Under Nomad
// the slice writes its stdout and stderr itself to rotated files in the
// allocation's log directory (slice/logrotate.go; the job has `logs {
// disabled = true }`), so `docker logs` shows only what came before the
// entrypoint took over: read the files through the container's /alloc
// mount, stdout's files then stderr's, each in rotation order. A container
// without such files (not under Nomad) falls back to `docker logs`.
func ContainerLogs(container string) ([]byte, error) {
	out, err := exec.Command("docker", "inspect", "-f", `{{range .Mounts}}{{if eq .Destination "/alloc"}}{{.Source}}{{end}}{{end}}`, container).Output()
	if err != nil {
		return nil, fmt.Errorf("docker inspect %s: %v", container, err)
	}
	if dir := strings.TrimSpace(string(out)); dir != "" {
		var buf bytes.Buffer
		found := false
		for _, stream := range []string{"stdout", "stderr"} {
			files, _ := filepath.Glob(filepath.Join(dir, "logs", "*."+stream+".*"))
			index := func(f string) int { n, _ := strconv.Atoi(f[strings.LastIndexByte(f, '.')+1:]); return n }
			sort.Slice(files, func(i, j int) bool { return index(files[i]) < index(files[j]) })
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err != nil {
					return nil, err
				}
				buf.Write(b)
				found = true
			}
		}
		if found {
			return buf.Bytes(), nil
		}
	}
	out, err = exec.Command("docker", "logs", container).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("docker logs %s: %v", container, err)
	}
	return out, nil
}

// ContainerLogTail is the last n lines of ContainerLogs, for a failure's
// message; an error reads as the log.
func ContainerLogTail(container string, n int) string {
	b, err := ContainerLogs(container)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
