// Package web owns the shared CRM app: its sources (src/, plain ES modules
// and one stylesheet, embedded in the binary) and its build. The build is
// one bundle made with esbuild's Go API, so no npm and no Node are needed:
// assets/app-<hash>.js, assets/app-<hash>.css and an index.html that names
// them. The hash is of the content, so the assets can be cached for ever
// and index.html is revalidated on every load.
//
// The gateway serves the build from memory under /app/ (gateway.Config's
// SPAFiles); `slicehub app-build -out DIR` writes the same files for the
// nginx edge in production (ops/nginx).
//
// The app talks only to /api/* and /socket.io/* on its own origin; the
// gateway routes both to the user's own slice by the session cookie.
package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/evanw/esbuild/pkg/api"
)

//go:embed src
var sources embed.FS

// Build is a finished build: path inside /app/ → content.
type Build map[string][]byte

var (
	once     sync.Once
	built    Build
	buildErr error
)

// Embedded returns the build of the embedded sources, made on first use
// (tens of milliseconds) and kept.
func Embedded() (Build, error) {
	once.Do(func() { built, buildErr = Make(sources) })
	return built, buildErr
}

// Make bundles the app from fsys, which holds src/index.html, src/main.js
// and src/app.css.
func Make(fsys fs.FS) (Build, error) {
	read := func(name string) (string, error) {
		b, err := fs.ReadFile(fsys, path.Join("src", name))
		return string(b), err
	}
	css, err := read("app.css")
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	index, err := read("index.html")
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	js := api.Build(api.BuildOptions{
		EntryPoints:       []string{"src/main.js"},
		Bundle:            true,
		Format:            api.FormatESModule,
		Target:            api.ES2020,
		MinifySyntax:      true,
		MinifyWhitespace:  true,
		MinifyIdentifiers: true,
		LegalComments:     api.LegalCommentsNone,
		Charset:           api.CharsetUTF8,
		Plugins:           []api.Plugin{embeddedModules(fsys)},
		Write:             false,
	})
	if err := firstError("app.js", js.Errors); err != nil {
		return nil, err
	}
	style := api.Transform(css, api.TransformOptions{Loader: api.LoaderCSS, MinifyWhitespace: true, MinifySyntax: true})
	if err := firstError("app.css", style.Errors); err != nil {
		return nil, err
	}
	b := Build{}
	jsName := hashed("assets/app", ".js", js.OutputFiles[0].Contents)
	cssName := hashed("assets/app", ".css", style.Code)
	b[jsName] = js.OutputFiles[0].Contents
	b[cssName] = style.Code
	index = strings.ReplaceAll(index, "{{app.js}}", jsName)
	index = strings.ReplaceAll(index, "{{app.css}}", cssName)
	b["index.html"] = []byte(index)
	return b, nil
}

// embeddedModules resolves the app's relative imports inside fsys, so that
// esbuild never looks at the file system.
func embeddedModules(fsys fs.FS) api.Plugin {
	return api.Plugin{Name: "embedded", Setup: func(pb api.PluginBuild) {
		pb.OnResolve(api.OnResolveOptions{Filter: `.*`}, func(a api.OnResolveArgs) (api.OnResolveResult, error) {
			if a.Kind == api.ResolveEntryPoint {
				return api.OnResolveResult{Path: path.Clean(a.Path), Namespace: "embedded"}, nil
			}
			if !strings.HasPrefix(a.Path, "./") && !strings.HasPrefix(a.Path, "../") {
				return api.OnResolveResult{}, fmt.Errorf("%s: only relative imports of the app's own modules", a.Path)
			}
			return api.OnResolveResult{Path: path.Join(path.Dir(a.Importer), a.Path), Namespace: "embedded"}, nil
		})
		pb.OnLoad(api.OnLoadOptions{Filter: `.*`, Namespace: "embedded"}, func(a api.OnLoadArgs) (api.OnLoadResult, error) {
			b, err := fs.ReadFile(fsys, a.Path)
			if err != nil {
				return api.OnLoadResult{}, err
			}
			s := string(b)
			return api.OnLoadResult{Contents: &s, Loader: api.LoaderJS}, nil
		})
	}}
}

func firstError(what string, msgs []api.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	m := msgs[0]
	if m.Location != nil {
		return fmt.Errorf("web: building %s: %s:%d:%d: %s", what, m.Location.File, m.Location.Line, m.Location.Column, m.Text)
	}
	return fmt.Errorf("web: building %s: %s", what, m.Text)
}

// hashed names an asset after its content: base-<12 hex digits>ext. The
// gateway and the nginx config cache such names for a year.
func hashed(base, ext string, content []byte) string {
	sum := sha256.Sum256(content)
	h := hex.EncodeToString(sum[:6])
	if !strings.ContainsAny(h, "0123456789") {
		h = h[:11] + "0" // the gateway's hashed-name rule wants a digit
	}
	return base + "-" + h + ext
}

// Write puts the build into dir for a static server: each file, plus a
// .gz copy of text files for nginx's gzip_static. Files of an older build
// are left, so that a page loaded before a deploy can still fetch its own
// assets.
func (b Build) Write(dir string) error {
	names := make([]string, 0, len(b))
	for name := range b {
		names = append(names, name)
	}
	sort.Strings(names) // index.html last: it names the assets
	for _, name := range names {
		if name == "index.html" {
			continue
		}
		if err := writeFile(filepath.Join(dir, filepath.FromSlash(name)), b[name]); err != nil {
			return err
		}
	}
	return writeFile(filepath.Join(dir, "index.html"), b["index.html"])
}

func writeFile(file string, content []byte) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	if err := atomicWrite(file, content); err != nil {
		return err
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zw.Write(content)
	zw.Close()
	return atomicWrite(file+".gz", gz.Bytes())
}

// atomicWrite replaces file at once, so nginx never serves half of one.
func atomicWrite(file string, content []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), ".tmp-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(content); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), file)
}
