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
	p.draw(fmt.Sprintf("[%s%s] %d/%d %s (%s)", strings.Repeat("#", n*4), strings.Repeat("-", (total-n)*4), n, total, stage, state))
}

// draw shows line with the time elapsed: redrawn in place on a terminal,
// and otherwise written once each time it changes.
func (p *progress) draw(line string) {
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

// byteProgress counts the bytes of a backup or restore as they pass, and
// draws them on w at most every 200 ms: a bar when the total is known (a
// restore's file), bytes and rate otherwise (a dump's size is known only
// at its end).
type byteProgress struct {
	p     *progress
	what  string
	total int64
	n     int64
	drawn time.Time
}

func newByteProgress(w io.Writer, what string, total int64) *byteProgress {
	return &byteProgress{p: newProgress(w), what: what, total: total}
}

func (b *byteProgress) Write(p []byte) (int, error) {
	b.n += int64(len(p))
	if time.Since(b.drawn) >= 200*time.Millisecond {
		b.draw()
	}
	return len(p), nil
}

func (b *byteProgress) draw() {
	b.drawn = time.Now()
	line := fmt.Sprintf("%s %s", b.what, humanBytes(b.n))
	if b.total > 0 {
		n := int(20 * b.n / b.total)
		line = fmt.Sprintf("[%s%s] %s of %s %s", strings.Repeat("#", n), strings.Repeat("-", max(0, 20-n)),
			humanBytes(b.n), humanBytes(b.total), b.what)
	}
	if secs := time.Since(b.p.start).Seconds(); secs > 0 {
		line += fmt.Sprintf(" (%s/s)", humanBytes(int64(float64(b.n)/secs)))
	}
	if b.p.tty {
		fmt.Fprintf(b.p.w, "\r\033[K%s", line)
		return
	}
	fmt.Fprintln(b.p.w, line)
}

// done draws the final count and ends the line.
func (b *byteProgress) done(word string) {
	b.draw()
	b.p.done(word)
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
