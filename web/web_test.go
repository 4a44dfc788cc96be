package web

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The embedded app builds: one script and one stylesheet named after
// their content, and an index.html that names exactly those.
func TestEmbeddedBuild(t *testing.T) {
	b, err := Embedded()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 3 {
		t.Fatalf("build has %d files; want index.html, a script and a stylesheet", len(b))
	}
	index := string(b["index.html"])
	named := regexp.MustCompile(`/app/(assets/app-[0-9a-f]{12}\.(js|css))`).FindAllStringSubmatch(index, -1)
	if len(named) != 2 {
		t.Fatalf("index.html names %d assets: %s", len(named), index)
	}
	for _, m := range named {
		if _, ok := b[m[1]]; !ok {
			t.Errorf("index.html names %s, which the build lacks", m[1])
		}
	}
	for name, content := range b {
		if name != "index.html" && hashed("assets/app", filepath.Ext(name), content) != name {
			t.Errorf("%s is not named after its content", name)
		}
	}
	// The socket.io client and the views are bundled in; the bundle
	// imports nothing at run time.
	var js string
	for name, c := range b {
		if strings.HasSuffix(name, ".js") {
			js = string(c)
		}
	}
	for _, want := range []string{"EIO=4", "/api/chats", "/socket.io/"} {
		if !strings.Contains(js, want) {
			t.Errorf("bundle lacks %q", want)
		}
	}
	if regexp.MustCompile(`\bimport\s*[{("']`).MatchString(js) {
		t.Error("bundle still imports modules")
	}
	again, err := Make(sources)
	if err != nil || string(again["index.html"]) != index {
		t.Errorf("a second build differs: %v", err)
	}
}

func TestWrite(t *testing.T) {
	b, err := Embedded()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := b.Write(dir); err != nil {
		t.Fatal(err)
	}
	for name, content := range b {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(got) != string(content) {
			t.Errorf("%s: %v", name, err)
		}
		if _, err := os.Stat(filepath.Join(dir, name+".gz")); err != nil {
			t.Errorf("%s.gz: %v", name, err)
		}
	}
}
