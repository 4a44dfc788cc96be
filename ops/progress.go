package ops

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/slicehub/slicehub"
)

// progress draws how far a slice has come on stderr while slicectl waits
// for it: a bar over the stages of slicehub.Stages. On a terminal it
// redraws one line; elsewhere (a log, a test) it writes a line per change,
// so that a captured run stays readable. Hand-rolled: five stages do not
// need a progress-bar library.
type progress struct {
	w     io.Writer
	tty   bool
	start time.Time
	last  string
}

func newProgress(w io.Writer) *progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil {
			tty = st.Mode()&os.ModeCharDevice != 0
		}
	}
	return &progress{w: w, tty: tty, start: time.Now()}
}

func stageIndex(s slicehub.Stage) int {
	for i, v := range slicehub.Stages {
		if v == s {
			return i + 1
		}
	}
	return 0
}

func (p *progress) show(stage slicehub.Stage, state string) {
	n, total := stageIndex(stage), len(slicehub.Stages)
	line := fmt.Sprintf("[%s%s] %d/%d %s (%s)", strings.Repeat("#", n*4), strings.Repeat("-", (total-n)*4), n, total, stage, state)
	elapsed := time.Since(p.start).Round(time.Second)
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s %s", line, elapsed)
		return
	}
	if line != p.last {
		fmt.Fprintf(p.w, "%s %s\n", line, elapsed)
	}
	p.last = line
}

// done ends the progress display with a final word.
func (p *progress) done(word string) {
	elapsed := time.Since(p.start).Round(time.Second)
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K")
	}
	if word != "" {
		fmt.Fprintf(p.w, "%s after %s\n", word, elapsed)
	}
}
