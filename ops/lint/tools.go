//go:build tools

// Module lint pins the analyzers `make lint` runs, apart from the main
// module so that their dependencies (golang.org/x/tools) never enter the
// platform's go.mod. `make lint` builds them from here into ./bin.
package lint

import _ "github.com/nishanths/exhaustive/cmd/exhaustive"
